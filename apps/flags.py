"""Flags shared by every experiment binary (absl). `--helpfull` lists them all."""

from absl import flags

import tfaux.strategies

FLAGS = flags.FLAGS

DEFAULTS = dict(method="jtds", dataset="digits", epochs=15, batch_size=64, lr=1e-3, upper_optimizer=None,
                upper_lr=None, upper_interval=20, dev_size=None, label_fraction=1.0, noise_rate=0.0, rotation=True,
                encoder="auto", output_dir="runs/default", shots_per_class=0, exemplar=False, method_args="",
                target_tasks=(), privileged_tasks=None, num_labelled=0, dataset_args="", optimizer="adam",
                lr_decay="", val_fraction=0.2,
                dev_batch_size=32, eval_batch_size=256, drop_unlabelled=False, weight_decay=0.0,
                random_auxiliary=0, chronological=False, test_fraction=0.2)


# {dataset: {flag: value}}: a binary's per-dataset defaults (define_flags(dataset_defaults=...)).
DATASET_DEFAULTS = {}
# [fn(flag_values) -> {argument: value}]: a binary's --method_args defaults (define_flags(method_defaults=...)).
METHOD_DEFAULTS = []


def define_flags(dataset_defaults=None, method_defaults=None, **defaults):
    """Define every flag; `defaults` overrides the default of any of them by name
    (an experiment binary is this call with its paper's settings); `dataset_defaults`
    {dataset: {flag: value}} gives the paper's settings of each dataset, used for the flags
    not given on the command line; `method_defaults(flag_values)` -> {argument: value} gives
    the --method_args the paper uses with those flags, for the arguments not given
    (apply_dataset_defaults, run by apps.experiment.main)."""
    unknown = sorted(set(defaults).union(*(dataset_defaults or {}).values()) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"define_flags got unknown flag names {unknown}.")
    DATASET_DEFAULTS.update(dataset_defaults or {})
    METHOD_DEFAULTS[:] = [method_defaults] if method_defaults else []
    d = {**DEFAULTS, **defaults}
    flags.DEFINE_enum("method", d["method"], list(tfaux.strategies.METHODS),
                      "How tasks and examples are weighted. " + tfaux.strategies.help_text() + ".")
    flags.DEFINE_string("method_args", d["method_args"], "Constructor arguments of the method as name=value,... (Python "
                        "literals, e.g. 'temperature=2.0' or 'hidden=(10,10)'); unset: the paper's defaults.")
    flags.DEFINE_string("dataset", d["dataset"], "Dataset name, as accepted by pipelines.load.")
    flags.DEFINE_string("dataset_args", d["dataset_args"], "Options of the dataset's loader as name=value,... "
                        "(Python literals, e.g. 'primary=\"Male\"' for celeb_a or 'target_domain=\"photo\",shots=1' "
                        "for pacs); unset: the loader's defaults.")
    flags.DEFINE_string("data_dir", None, "Directory with the dataset's own raw files (e.g. the MNIST idx "
                        "files); unset: a bundled dataset or a prepared TFDS copy, never a download.")
    flags.DEFINE_integer("epochs", d["epochs"], "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", d["batch_size"], "Global training batch size.", lower_bound=1)
    flags.DEFINE_integer("dev_batch_size", d["dev_batch_size"], "Global batch size of the dev stream (upper level).",
                         lower_bound=1)
    flags.DEFINE_integer("eval_batch_size", d["eval_batch_size"], "Batch size of the validation, test and "
                         "schedule passes.", lower_bound=1)
    flags.DEFINE_float("lr", d["lr"], "Learning rate of the task model.", lower_bound=0.0)
    flags.DEFINE_enum("optimizer", d["optimizer"], ["adam", "sgd"], "Optimizer of the task model (sgd: "
                      "momentum 0.9).")
    flags.DEFINE_string("lr_decay", d["lr_decay"], "Step decay of --lr as epoch=factor,...: from that epoch on "
                        "the rate is --lr times the factor (e.g. '160=0.2' or '30=0.1,60=0.01'); 'cosine': cosine "
                        "annealing to 0 over --epochs; unset: constant.")
    flags.DEFINE_float("weight_decay", d["weight_decay"], "Decoupled weight decay of the task model's optimizer "
                       "(Keras' weight_decay: theta -= lr * decay * theta each step; 0: none).", lower_bound=0.0)
    flags.DEFINE_enum("upper_optimizer", d["upper_optimizer"], ["sgd", "adam"],
                      "Optimizer of the scheduler / combiner; unset: the method's reference one (SGD, "
                      "momentum 0.9).")
    flags.DEFINE_float("upper_lr", d["upper_lr"], "Learning rate of the scheduler / combiner, on the hypergradient in "
                       "the papers' scale (divided by the Neumann alpha); unset: the method's (JTDS 0.01, "
                       "AuxiLearn 0.001).", lower_bound=0.0)
    flags.DEFINE_float("upper_weight_decay", None, "L2 weight decay of the scheduler / combiner, added to its "
                       "clipped gradient; unset: the method's (JTDS 5e-5, AuxiLearn 1e-4).", lower_bound=0.0)
    flags.DEFINE_integer("upper_interval", d["upper_interval"], "M: lower steps per upper (scheduler) step.", lower_bound=1)
    flags.DEFINE_enum("solver", "neumann", ["neumann", "cg"],
                      "Inverse-Hessian-vector product: truncated Neumann series or conjugate gradient.")
    flags.DEFINE_integer("neumann_terms", 3, "K: terms of the Neumann series.", lower_bound=0)
    flags.DEFINE_float("neumann_alpha", None, "Neumann step size alpha (default: --lr).", lower_bound=0.0)
    flags.DEFINE_integer("cg_iterations", 10, "Conjugate-gradient iterations (--solver=cg).", lower_bound=1)
    flags.DEFINE_enum("hessian_scope", "all", ["all", "shared", "no_aux_heads"],
                      "Parameters the Hessian is taken over.")
    flags.DEFINE_integer("hvp_chunks", 1, "N > 1: each Hessian-vector product of the upper step is the mean over N "
                         "interleaved sub-batches, computed one at a time (about 1/N of the upper step's tensors, "
                         "one more gradient per product; BatchNorm sees sub-batches). 1: the whole batch, exactly.",
                         lower_bound=1)
    flags.DEFINE_float("upper_clipnorm", None, "Global-norm clip of the hypergradient in the papers' scale "
                       "(0: none); unset: the method's (JTDS 10, AuxiLearn 25).", lower_bound=0.0)
    flags.DEFINE_integer("dev_size", d["dev_size"], "Clean primary examples in the dev set, stratified, taken out of "
                         "validation (default: min(200, 35% of the validation part)).", lower_bound=1)
    flags.DEFINE_float("val_fraction", d["val_fraction"], "Share of the training examples held out for "
                       "validation (dev included) when the dataset has no official validation split.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("test_fraction", d["test_fraction"], "Share of all examples held out for test when the "
                       "dataset has no official test split.", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_boolean("chronological", d["chronological"], "Split by the dataset's timestamps (oldest for "
                         "training, newest for test) with --val_fraction and --test_fraction, ignoring any official "
                         "split (datasets with timestamps: movielens_100k, amazon).")
    flags.DEFINE_float("label_fraction", d["label_fraction"], "Fraction of training examples that keep their primary "
                       "label (semi-supervised below 1).", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("noise_rate", d["noise_rate"], "Fraction of training primary labels corrupted.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_integer("num_labelled", d["num_labelled"], "Keep exactly this many labelled primary training "
                         "examples, stratified (S4L's 4,000 CIFAR-10 / 1,000 SVHN labels; 0: off).", lower_bound=0)
    flags.DEFINE_boolean("drop_unlabelled", d["drop_unlabelled"], "Remove the training examples whose primary "
                         "label is not kept: --label_fraction / --num_labelled / --shots_per_class then shrink the "
                         "training set (seed 002's 5% / 30-shot settings) instead of leaving it semi-supervised.")
    flags.DEFINE_integer("shots_per_class", d["shots_per_class"], "K-shot: keep only K labelled primary "
                         "examples per class (0: off).", lower_bound=0)
    flags.DEFINE_integer("dev_per_class", 0, "If > 0, the dev set is K clean examples per class taken out of "
                         "train (as the JTDS code does) instead of --dev_size from validation.", lower_bound=0)
    flags.DEFINE_string("aux_dataset", None, "A second (image) dataset whose training examples become one "
                        "extra auxiliary task with its own inputs (DTG-AuxL: cifar10 + cifar100, pet + cub).")
    flags.DEFINE_integer("random_auxiliary", d["random_auxiliary"], "Add an auxiliary task of N-class labels "
                         "drawn uniformly at random per example (a deliberately harmful auxiliary, seed 001's "
                         "setting); 0: none.", lower_bound=0)
    flags.DEFINE_string("aux_data_dir", None, "Raw files of --aux_dataset (unset: a prepared TFDS copy).")
    flags.DEFINE_enum("noise_kind", "uniform", ["uniform", "pair_flip"], "How corrupted labels are drawn.")
    flags.DEFINE_boolean("rotation", d["rotation"], "Add the 4-way rotation auxiliary task (image datasets).")
    flags.DEFINE_boolean("exemplar", d["exemplar"], "Add the Exemplar-MT auxiliary task (S4L; image datasets): "
                         "features of an image and of its flipped, noised, Cutout copy pulled together.")
    flags.DEFINE_list("target_tasks", list(d["target_tasks"]), "Target tasks by name (seed 004; the first is exported; selection uses "
                      "their mean metric); unset: the dataset's primary task.")
    flags.DEFINE_list("privileged_tasks", d["privileged_tasks"], "Auxiliary (privileged) tasks to train with, by name; unset: every "
                      "task that is not a target.")
    flags.DEFINE_string("aux_weights", "", "Equal: fixed task weights as name=value,... (default 1 each).")
    flags.DEFINE_enum("encoder", d["encoder"], ["auto", "convnet4", "resnet18", "wrn28_2", "vgg16", "lenet", "mlp",
                                                   "tabular", "autoint", "segnet"],
                      "Shared encoder (backbone); auto: ConvNet-4 for images, tabular (feature "
                      "embeddings + MLP) for recommendation data, MLP for vectors; wrn28_2: WRN-28-2 "
                      "(seed 003's S4L backbone); vgg16: MAXL's CIFAR VGG-16 with BatchNorm (seed "
                      "002's CIFAR backbone, 32x32 or larger images); segnet: SegNet encoder-decoder for "
                      "per-pixel tasks (seed 002's NYUv2 backbone; auto picks it when every task is per-pixel).")
    flags.DEFINE_string("encoder_weights", None, "Keras weights file (.weights.h5) to start ResNet-18 from "
                        "(pretrained weights you already have; nothing is downloaded).")
    flags.DEFINE_enum("distribute", "none", ["none", "mirrored", "multi_worker"],
                      "none: one device; mirrored: MirroredStrategy over all visible GPUs (or CPUs); "
                      "multi_worker: MultiWorkerMirroredStrategy over the workers named by the TF_CONFIG "
                      "environment variable (start the same command on each; only worker 0 writes results).")
    flags.DEFINE_integer("seed", 0, "Random seed for data splits, noise, initialisation and shuffling.",
                         lower_bound=0, upper_bound=2**32 - 1)
    flags.DEFINE_string("output_dir", d["output_dir"], "Where metrics.json, saved_model/, schedule.npz, "
                        "TensorBoard logs and checkpoints go.")
    flags.DEFINE_boolean("overwrite", False, "Replace the run in --output_dir even when it was made with other "
                         "flags (without it, such a folder is refused; the same flags resume or rerun it).")
    flags.DEFINE_integer("verbose", 1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.")


def apply_dataset_defaults(flag_values, table=None):
    """Set the --dataset's own defaults (`table`, default DATASET_DEFAULTS) on every flag not given
    on the command line, then complete --method_args with the binary's method defaults."""
    table = DATASET_DEFAULTS if table is None else table
    for name, value in table.get(flag_values.dataset, {}).items():
        if not flag_values[name].present:
            flag_values[name].value = value
    for defaults in METHOD_DEFAULTS:
        flag_values.method_args = with_method_defaults(flag_values, defaults(flag_values))


def with_method_defaults(flag_values, defaults):
    """--method_args completed with `defaults` ({argument: value}, for the run's --method) for the
    arguments it does not set itself; a malformed --method_args is left for the run to report."""
    if not defaults:
        return flag_values.method_args
    try:
        given = tfaux.strategies.method_args(flag_values.method, flag_values.method_args)
    except tfaux.strategies.MethodError:
        return flag_values.method_args
    extra = [f"{name}={value!r}" for name, value in defaults.items() if name not in given]
    return ",".join(filter(None, [flag_values.method_args.strip(), *extra]))


# Flags of the bi-level upper step, and the flags only some methods read.
UPPER_FLAGS = ("upper_optimizer", "upper_lr", "upper_weight_decay", "upper_clipnorm", "upper_interval", "solver",
               "neumann_terms", "neumann_alpha", "cg_iterations", "hessian_scope", "hvp_chunks")
FIXED_WEIGHT_METHODS = ("equal", "uniform")


def inapplicable(method):
    """Flags that --method `method` does not read: the upper step's for a single-level method,
    --dev_batch_size without a second stream, --aux_weights but for equal and uniform."""
    strategy = tfaux.strategies.get(method)
    unused = () if strategy.bilevel else UPPER_FLAGS
    unused += () if strategy.second_stream else ("dev_batch_size",)
    return unused + (() if method in FIXED_WEIGHT_METHODS else ("aux_weights",))
