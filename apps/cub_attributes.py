"""CUB-200-2011 species with its 312 binary attributes as auxiliary tasks (seed 000, Table 2).

    python -m apps.cub_attributes --method=jtds [--data_dir=...] [--helpfull]

Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(dataset="cub", rotation=False, epochs=100, batch_size=32,
             encoder="resnet18", output_dir="runs/cub_attributes")

if __name__ == "__main__":
    app.run(experiment.main)
