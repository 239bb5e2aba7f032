"""CIFAR-100 as 20 five-way tasks, one per superclass, 10 of them targets: PTL, ConvNet-4 encoder
(seed 004 Sec. 5.3 and Table 2, "CIFAR-100" column).

    python -m apps.cifar100_tasks [--method=ptl] [--data_dir=...] [--helpfull]

Dataset "cifar100_tasks" (pipelines.cifar.load_cifar100_tasks): each image is labelled for its own
superclass's task only; the 10 targets are a fixed random half (np.random.default_rng(0)). Encoder:
four 3x3 conv layers of 32 filters with batch norm and ReLU (tfaux.models.convnet4), one head per
task. Seed 004 gives no epochs, batch size or learning rate for CIFAR-100, so those keep the
defaults of apps.flags (15 epochs, batch 64, Adam 1e-3). --data_dir: the raw `cifar-100-python/`
or `cifar-100-binary/` folder; unset: a prepared TFDS `cifar100`. Same flags and outputs as
apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="ptl", dataset="cifar100_tasks", rotation=False, encoder="convnet4",
             output_dir="runs/cifar100_tasks")

if __name__ == "__main__":
    app.run(experiment.main)
