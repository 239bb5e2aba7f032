"""CelebA's 40 attributes as binary tasks, the 23 hardest as targets: PTL, ResNet-18 encoder
(seed 004 Sec. 5.3 and Table 2, "CelebA" column).

    python -m apps.celeb_a_tasks [--method=ptl] [--data_dir=...] [--helpfull]

Dataset "celeb_a_tasks" (pipelines.celeb_a.load_celeb_a_tasks): 64x64 images as in Sener & Koltun
(2018), whom seed 004 follows; targets pipelines.celeb_a.HARDEST_23 (the 23 attributes with the most
balanced training labels; the paper does not name its 23). Encoder: ResNet-18 without its final
layer (tfaux.models.resnet18, CIFAR stem at 64x64), one head per attribute. Seed 004 gives no
optimisation settings; these are Sener & Koltun's released CelebA configuration (isl-org/
MultiObjectiveOptimization, sample.json and train_multi_task.py): Adam, learning rate 5e-4,
batch 256, 100 epochs (their extra x0.85 learning-rate step every 10 epochs is not reproduced).
--data_dir: the raw `img_align_celeba/` folder and `list_attr_celeba.txt` (plus
`list_eval_partition.txt`); unset: a prepared TFDS `celeb_a`. Same flags and outputs as apps.train;
only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="ptl", dataset="celeb_a_tasks", rotation=False, encoder="resnet18", epochs=100,
             batch_size=256, lr=5e-4, output_dir="runs/celeb_a_tasks")

if __name__ == "__main__":
    app.run(experiment.main)
