"""Image classification with a rotation (or coarse-label) auxiliary task (seed 000, Table 2: CIFAR-10/100, Oxford Pet).

    python -m apps.image_classification --method=jtds [--data_dir=...] [--helpfull]

Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(dataset="cifar10", epochs=200, batch_size=128,
             encoder="resnet18", output_dir="runs/image_classification")

if __name__ == "__main__":
    app.run(experiment.main)
