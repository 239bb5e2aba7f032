"""Multi-Fashion: top-left Fashion-MNIST icon primary, bottom-right icon auxiliary, LeNet encoder
(seed 004 Table 1, "Fashion" column).

    python -m apps.multi_fashion [--method=ptl] [--data_dir=...] [--helpfull]

--data_dir: the Fashion-MNIST idx files (or a folder with a fashion_mnist/ subfolder of them);
unset: a prepared TFDS `fashion_mnist`. Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="ptl", dataset="multi_fashion", rotation=False, epochs=30, batch_size=256,
             encoder="lenet", output_dir="runs/multi_fashion")

if __name__ == "__main__":
    app.run(experiment.main)
