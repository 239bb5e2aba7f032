"""S4L semi-supervised learning with reweighted self-supervised auxiliaries: CIFAR-10 with 4,000
labels and SVHN with 1,000 labels (seed 003, ARML, Sec. 3.1 "Semi-supervised Learning", Table 1,
App. B.1).

    python -m apps.s4l --data_dir=DIR/cifar-10-batches-py/.. [--method=arml]
    python -m apps.s4l --dataset=svhn --data_dir=DIR [--method=arml]

Main task: the class, on --num_labelled stratified labelled training images; auxiliary tasks on
every training image: rotation (4-way) and Exemplar-MT (pipelines.exemplar: features of the image
and of its flipped, noised, Cutout copy pulled together, loss 1 - cos). --method=arml (default) is
S4L + ARML; the Table 1 rows are --method=uniform (S4L Uniform: weights 1, the main loss from the
labelled stream as ARML's), adaloss, gradnorm, cosinesim, ol_aux, and `python -m apps.tune
--method=uniform --dataset=... --exemplar --num_labelled=...` for the grid search over the two
auxiliary weights (K = 2). (--method=equal is tfaux's mixed-batch sum, where 4,000 labels out of
45,000 make the main loss a tenth of the update.)

Defaults after App. B.1, per dataset (a flag given on the command line wins):
  cifar10: 4,000 labels of 45,000 training images (--val_fraction=0.1: 5,000 for validation);
  svhn:    1,000 labels of 65,932 (7,325 for validation);
WRN-28-2 (leaky ReLU, batch normalisation), Adam, batch 256, 200,000 iterations with the learning
rate 0.005, then 0.001 for the last 40,000: in epochs of the training set, 1,137 epochs with the
drop at 910 for CIFAR-10 and 776 with the drop at 621 for SVHN. Not reproduced: S4L's
time-averaged (mean-teacher) parameters for the original image's Exemplar feature (the paper's
change (i)); both features come from the current parameters. Same flags and outputs as
apps.train; only the defaults differ.
"""

from absl import app

from apps import experiment
from apps.flags import define_flags

define_flags(method="arml", dataset="cifar10", rotation=True, exemplar=True, encoder="wrn28_2", batch_size=256,
             lr=0.005, epochs=1137, num_labelled=4000, lr_decay="910=0.2", val_fraction=0.1, output_dir="runs/s4l",
             dataset_defaults={"svhn": dict(num_labelled=1000, epochs=776, lr_decay="621=0.2")})

if __name__ == "__main__":
    app.run(experiment.main)
