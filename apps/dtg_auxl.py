"""DTG-AuxL, joint data-task generation for auxiliary learning: the experiments of seed 001 (the
NeurIPS 2023 paper's appendix, Sec. 4.1-4.5) with its settings as defaults, per --dataset.

    python -m apps.dtg_auxl --dataset=DATASET --data_dir=DIR [--aux_data_dir=DIR] [--method=...]

--method=dtg_auxl (default) is "ours": a joint generator makes one new auxiliary sample per
example (a generated feature from the example and a partner, a generated soft label on the
primary classes), learned by the implicit hypergradient (Neumann K = 3) of the primary loss on a
reordered copy of the training set (tfaux.strategies.dtg). The same command with another
--method is a baseline or an ablation; every row below takes the dataset's defaults.

Experiments (one command each; add --data_dir, and --aux_data_dir for the different-input ones):

  CUB (4.1, shared input)        --dataset=cub                           (the default dataset)
  CUB 10-shot / 5-shot (4.1)     --dataset=cub --shots_per_class=10  /  --shots_per_class=5
  CIFAR-100 (4.2, shared input)  --dataset=cifar100
  Amazon Toys (4.3)              --dataset=amazon --dataset_args='category="Toys_and_Games"'
  Amazon Movies (4.3)            --dataset=amazon --dataset_args='category="Movies_and_TV"'
  CIFAR10-100 (4.4, diff. input) --dataset=cifar10 --aux_data_dir=DIR    (--aux_dataset=cifar100 implied)
  Pet-CUB (4.5, diff. input)     --dataset=oxford_iiit_pet --aux_data_dir=CUB_DIR   (--aux_dataset=cub implied)

Amazon: the 2014 5-core files reviews_Toys_and_Games_5.json / reviews_Movies_and_TV_5.json (the
appendix's counts, 167,597 and 1,697,533 reviews, are theirs), optionally .gz, with
meta_<category>.json for the item category feature (pipelines.amazon; with one reviews file in
--data_dir the category option may be left out). CIFAR10-100: --data_dir and --aux_data_dir may
be the same folder holding cifar-10-batches-py/ and cifar-100-python/.

Methods (main tables; Table A1's columns): STL --method=stl, Equal --method=equal, Uncert
--method=uncertainty, GCS --method=gcs, AuxL --method=auxilearn, JTDS --method=jtds, MAXL
--method=maxl (its generator gets --encoder's backbone unless --method_args sets `backbone`),
ours --method=dtg_auxl. As the appendix says, JTDS fits only the shared-input experiments and
MAXL only classification primaries (not Amazon). Ablations:
  Table A3 (CUB, Movies): w/o aux --method=dtg_auxl_no_aux (STL and complete as above);
  Table A4 (CUB, CUB-10shot, CUB-5shot): w/o data --method=dtg_auxl_no_data;
  Table A6 (CUB, CUB 5-shot, Toys): w/o linear --method=dtg_auxl_no_linear, two nonlinear
            --method=dtg_auxl_two_nonlinear;
  w/o instance regularisation (Table A5, main paper Table 4): --method=dtg_auxl_no_reg.
The generator's constructor arguments go in --method_args (e.g. width=32,depth=2: the appendix's
grid {32, 64} x {2, 3, 4}; the method's default is 64 / 3).

Paper defaults, per --dataset (a flag given on the command line wins; App. = appendix section):
  cub (4.1):  primary "species" (200-way), ONE auxiliary, the binary attribute "has white belly":
              CUB attribute 210, has_belly_color::white (--privileged_tasks=attr_210: the loader
              reads all 312 attributes, the model trains only that one); ResNet-18 (224 x 224,
              ImageNet stem); Adam, lr 1e-4 (the middle of {1e-3, 1e-4, 1e-5}), cosine annealing
              (--lr_decay=cosine), 100 epochs, batch 32 (first of {32, 64}); upper Adam 1e-2, a
              generator step every 20 lower steps (first of {20, 30}).
  cub, K-shot (4.1): --shots_per_class=10 or 5: K images per species drawn from the training
              images, the others dropped (--drop_unlabelled, the cub default; a no-op without
              K-shot), and the generator step every 4 lower steps (first of {4, 5}); an explicit
              --upper_interval wins. (The per-dataset defaults are keyed by --dataset only, so this
              binary sets the K-shot interval itself, after them: `apply_defaults`.)
  cifar100 (4.2): primary fine 100-way "label", auxiliary the 20 coarse classes "coarse"
              (--dataset_args=coarse=True); ConvNet-4 (the appendix also runs ResNet-18 from
              scratch: --encoder=resnet18); SGD lr 0.1 (first of {0.1, 0.01}), decay 0.1 at epochs
              60 / 120 / 160 (--lr_decay=60=0.1,120=0.01,160=0.001), 200 epochs, batch 256 (first of
              {256, 512}); upper Adam 1e-3, every 20 steps; 25,000 train / 25,000 validation /
              10,000 test (--val_fraction=0.5 of the official 50,000 training images).
  amazon (4.3): primary "rating" regression, auxiliary "click" = rating > 3 (pipelines.amazon);
              AutoInt over user, item and item category; Adam lr 1e-3 (the middle of {1e-2, 1e-3,
              1e-4}), constant, 20 epochs, batch 256; upper Adam 1e-2, every 50 steps (the middle
              of {30, 50, 100}); split by review time, 0.8 / 0.1 / 0.1 (--chronological,
              --test_fraction=0.1, --val_fraction=0.1/0.9 of the rest).
  cifar10 (4.4): primary CIFAR-10 (10-way), auxiliary dataset CIFAR-100's 100 fine classes
              (--aux_dataset=cifar100, task "aux_label", input task_x["aux"]); ConvNet-4; SGD 0.1,
              the same decay, 200 epochs, batch 256; upper SGD 1e-2 (no momentum: the method's),
              every 20 steps; --val_fraction=0.5 (25,000 / 25,000 / 10,000).
  oxford_iiit_pet (4.5): primary the 37 breeds (--dataset_args=species=False), auxiliary dataset
              CUB's 200 species (--aux_dataset=cub; its images resized to the primary's 224 x
              224); ResNet-18 from scratch; Adam 1e-4, cosine, 200 epochs, batch 32; upper Adam
              1e-3, every 20 steps.
  Every experiment: --norotation, Neumann K = 3 (--neumann_terms, "fixed to 3"), the upper
  (reordered training) batch as large as the lower one (--dev_batch_size = --batch_size), no
  weight decay (the appendix gives none). --aux_dataset= (empty) drops the implied auxiliary
  dataset of cifar10 / oxford_iiit_pet. The --upper_* defaults apply to every bi-level method
  (the appendix lists one upper setting per experiment); pass them to use a baseline's own.

Where we differ from the appendix:
- No pretrained weights are downloaded, and there is no ResNet-50 (apps.experiment.build_encoder
  has convnet4, resnet18, wrn28_2, vgg16, lenet, mlp, tabular, autoint, segnet): CUB's
  "pretrained ResNet18" is ResNet-18 from scratch unless --encoder_weights names a Keras
  .weights.h5 file of an ImageNet ResNet-18 (ImageNet stem) you already have; the ResNet-50 rows
  (Tables A1-A4, A6) cannot be run.
- Splits. CUB: the appendix validates on half of the official test set (2,897 / 2,897);
  pipelines.cub keeps the official 5,794 test images whole and this binary holds out 10% of the
  5,994 training images (stratified) for validation. Pet: the appendix's 3,680 / 1,835 / 1,834
  also halves the official test set; here 10% of the 3,680 trainval images validate and the 3,669
  test images all test. Amazon, CIFAR: as the appendix. In every experiment the dev set (--dev_size, default min(200, 35% of validation))
  comes out of validation; DTG-AuxL does not use it (its upper batches are reordered training
  batches, Alg. 1), the dev-based baselines (AuxL, JTDS) do.
- Grid values are fixed as listed above; the task heads are one Dense layer (the appendix
  searches 1 or 2 MLP layers; the loaders give the heads no hidden width); the generator's
  non-linear interaction is the MLP (Table A2's Transformer variant is not implemented).
- SGD is Keras' SGD with momentum 0.9 (--optimizer=sgd; the appendix does not name a momentum).
- The hypergradient is not clipped (the method's default; the appendix names no clipping). With
  the CIFAR10-100 upper SGD step an unclipped hypergradient can be large (in tests on tiny random
  data it blew the losses up); --upper_clipnorm=10 (JTDS' reference clip) bounds it.
- CIFAR augmentation is the pipelines' pad-4 crop and flip (the appendix: crop only), images are
  z-scored by the pipelines as in the appendix.
Same flags and outputs as apps.train; only the defaults differ.
"""

from absl import app, logging

from apps import experiment
from apps.flags import FLAGS, apply_dataset_defaults, define_flags

HAS_WHITE_BELLY = "attr_210"  # CUB attributes.txt: 210 has_belly_color::white
MULTISTEP = "60=0.1,120=0.01,160=0.001"  # multistep lr, factor 0.1 at epochs 60 / 120 / 160
KSHOT_UPPER_INTERVAL = 4  # CUB 10- / 5-shot: N from {4, 5}

# Every entry sets every key, so no setting of one dataset leaks into another.
_FINE_GRAINED = dict(encoder="resnet18", optimizer="adam", lr=1e-4, lr_decay="cosine", batch_size=32,
                     dev_batch_size=32, weight_decay=0.0, val_fraction=0.1, shots_per_class=0)
_CIFAR = dict(encoder="convnet4", optimizer="sgd", lr=0.1, lr_decay=MULTISTEP, epochs=200, batch_size=256,
              dev_batch_size=256, weight_decay=0.0, val_fraction=0.5, drop_unlabelled=False, shots_per_class=0,
              upper_interval=20, privileged_tasks=None)
PAPER = {
    "cub": dict(_FINE_GRAINED, epochs=100, upper_optimizer="adam", upper_lr=1e-2, upper_interval=20,
                drop_unlabelled=True, dataset_args="", privileged_tasks=[HAS_WHITE_BELLY]),
    "cifar100": dict(_CIFAR, upper_optimizer="adam", upper_lr=1e-3, dataset_args="coarse=True"),
    "amazon": dict(encoder="autoint", optimizer="adam", lr=1e-3, lr_decay="", epochs=20, batch_size=256,
                   dev_batch_size=256, weight_decay=0.0, chronological=True, test_fraction=0.1,
                   val_fraction=0.1 / 0.9, drop_unlabelled=False,
                   shots_per_class=0, upper_optimizer="adam", upper_lr=1e-2, upper_interval=50, dataset_args="",
                   privileged_tasks=None),
    "cifar10": dict(_CIFAR, upper_optimizer="sgd", upper_lr=1e-2, dataset_args=""),
    "oxford_iiit_pet": dict(_FINE_GRAINED, epochs=200, upper_optimizer="adam", upper_lr=1e-3, upper_interval=20,
                            drop_unlabelled=False, dataset_args="species=False", privileged_tasks=None),
}
# The different-input experiments' auxiliary datasets (4.4, 4.5). --aux_dataset is not among
# apps.flags.DEFAULTS, so define_flags' per-dataset table cannot hold it: apply_defaults sets it.
AUX_DATASET = {"cifar10": "cifar100", "oxford_iiit_pet": "cub"}
# MAXL's label generator: the task model's backbone (tfaux.strategies.label_generation.BACKBONES).
MAXL_BACKBONES = ("convnet4", "lenet", "mlp", "resnet18", "vgg16")


def method_defaults(flag_values):
    """--method_args defaults: MAXL's generator on --encoder's backbone (the DTG-AuxL generator's
    own defaults, width 64 and depth 3, are the method's)."""
    if flag_values.method == "maxl" and flag_values.encoder in MAXL_BACKBONES:
        return {"backbone": flag_values.encoder}
    return {}


def apply_defaults(flag_values):
    """Every default of this binary, for the flags not given on the command line: the --dataset's
    (PAPER, apps.flags.apply_dataset_defaults, with --method_args), then its auxiliary dataset
    (AUX_DATASET; --aux_dataset= with no value drops it) and, for CUB K-shot, the upper interval."""
    apply_dataset_defaults(flag_values)
    aux = flag_values["aux_dataset"]
    if not aux.present:
        aux.value = AUX_DATASET.get(flag_values.dataset)
    elif not aux.value:
        aux.value = None
    if (flag_values.dataset == "cub" and flag_values.shots_per_class > 0
            and not flag_values["upper_interval"].present):
        flag_values["upper_interval"].value = KSHOT_UPPER_INTERVAL


def main(argv):
    """apps.experiment.main with this binary's defaults (apply_defaults)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    apply_defaults(FLAGS)
    experiment.main_with_errors(FLAGS)


_GLOBAL = {k: v for k, v in PAPER["cub"].items() if k != "privileged_tasks"}  # attr_210 is CUB's only
define_flags(method="dtg_auxl", dataset="cub", rotation=False, output_dir="runs/dtg_auxl", **_GLOBAL,
             dataset_defaults=PAPER, method_defaults=method_defaults)

if __name__ == "__main__":
    app.run(main)
