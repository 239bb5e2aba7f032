"""Multi-(MNIST+Fashion): top-left MNIST digit primary, bottom-right Fashion-MNIST icon auxiliary,
LeNet encoder (seed 004 Table 1, "FashionMNIST" column).

    python -m apps.multi_mnist_fashion [--method=ptl] [--data_dir=...] [--helpfull]

--data_dir: a folder with two subfolders, mnist/ and fashion_mnist/, each holding its idx files;
unset: prepared TFDS `mnist` and `fashion_mnist`. Same flags and outputs as apps.train; only the
defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="ptl", dataset="multi_mnist_fashion", rotation=False, epochs=30, batch_size=256,
             encoder="lenet", output_dir="runs/multi_mnist_fashion")

if __name__ == "__main__":
    app.run(experiment.main)
