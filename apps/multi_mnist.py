"""Multi-MNIST: top-left digit primary, bottom-right digit auxiliary, LeNet encoder (seed 004).

    python -m apps.multi_mnist [--method=ptl] [--data_dir=...] [--helpfull]

Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="ptl", dataset="multi_mnist", rotation=False, epochs=30, batch_size=256,
             encoder="lenet", output_dir="runs/multi_mnist")

if __name__ == "__main__":
    app.run(experiment.main)
