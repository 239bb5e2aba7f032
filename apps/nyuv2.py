"""NYUv2 pixel-wise losses: 13-class semantic segmentation as the main task, depth and surface
normals as auxiliaries (seed 002, AuxiLearn, Sec. 5.3, Table 2, App. B.2).

    python -m apps.nyuv2 --data_dir=/path/to/nyuv2 [--method=auxilearn|equal|stl|uncertainty|dwa|gradnorm|mgda]

Dataset (pipelines.nyuv2): MTAN's preprocessed NYUv2, folders train/ and val/ of image, label,
depth and normal '<index>.npy' files at 288 x 384; the val folder is the test set. Tasks:
"segmentation" (primary, per-pixel softmax cross-entropy, -1 unlabelled; metric mIoU, with pixel
accuracy), "depth" (per-pixel L1 where depth is non-zero) and "normal" (per-pixel 1 - cos where the
normal is non-zero); each head is a linear 3x3 convolution of width 64 then a 1x1 one, on a shared
SegNet (--encoder=segnet, widths 64-128-256-512-1024 as the reference code).

Defaults after App. B.2 and the reference code: 200 epochs, batch 8, Adam at 1e-4 halved after 100
epochs; model selection on validation mIoU. Validation is 12 % of train (95 images), with the dev
(auxiliary) set of 17 taken out of it (78 left); the reference keeps 10 % of train for validation and
2.5 % of the rest (17) as its auxiliary set. Bi-level methods: a hypergradient step every 50 lower
steps on dev batches of 2, Neumann series of 3 terms with alpha = --lr, and AuxiLearn's combiner
updated by SGD (momentum 0.9) at 1e-3, weight decay 1e-4, clip 25 (the reference's linear/nonlinear
NYUv2 runs; the paper grid-searches {1e-3, 5e-4, 1e-4} x {1e-5, 1e-4}). The reference's
nonlinear combiner has hidden width 3: --method_args='hidden=(3,)'; --method_args=combiner=linear
is the paper's linear combiner. No rotation task (the images are not square) and no augmentation.
Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="auxilearn", dataset="nyuv2", rotation=False, epochs=200, batch_size=8, lr=1e-4,
             optimizer="adam", lr_decay="100=0.5", encoder="segnet", val_fraction=0.12, dev_size=17,
             upper_interval=50, dev_batch_size=2, eval_batch_size=8, output_dir="runs/nyuv2")

if __name__ == "__main__":
    app.run(experiment.main)
