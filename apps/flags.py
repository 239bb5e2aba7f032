"""Flags shared by every experiment binary (absl). `--helpfull` lists them all."""

from absl import flags

import tfaux.strategies

FLAGS = flags.FLAGS


def define_flags(default_dataset="digits", default_method="jtds", default_epochs=15):
    flags.DEFINE_enum("method", default_method, sorted(tfaux.strategies.BY_NAME),
                      "How tasks and examples are weighted: stl, equal, jtds (and its ablations "
                      "jtds_only_task / jtds_no_loss / jtds_no_feature), njtds, auxilearn, gcs.")
    flags.DEFINE_string("dataset", default_dataset, "Dataset name, as accepted by pipelines.load.")
    flags.DEFINE_string("data_dir", None, "Directory with the dataset's own raw files (e.g. the MNIST idx "
                        "files); unset: a bundled dataset or a prepared TFDS copy, never a download.")
    flags.DEFINE_integer("epochs", default_epochs, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 64, "Global training batch size.", lower_bound=1)
    flags.DEFINE_integer("dev_batch_size", 32, "Global batch size of the dev stream (upper level).",
                         lower_bound=1)
    flags.DEFINE_float("lr", 1e-3, "Learning rate of the task model (Adam).", lower_bound=0.0)
    flags.DEFINE_float("upper_lr", 1e-2, "Learning rate of the scheduler / combiner (Adam).",
                       lower_bound=0.0)
    flags.DEFINE_integer("upper_interval", 20, "M: lower steps per upper (scheduler) step.", lower_bound=1)
    flags.DEFINE_enum("solver", "neumann", ["neumann", "cg"],
                      "Inverse-Hessian-vector product: truncated Neumann series or conjugate gradient.")
    flags.DEFINE_integer("neumann_terms", 3, "K: terms of the Neumann series.", lower_bound=0)
    flags.DEFINE_float("neumann_alpha", None, "Neumann step size alpha (default: --lr).", lower_bound=0.0)
    flags.DEFINE_integer("cg_iterations", 10, "Conjugate-gradient iterations (--solver=cg).", lower_bound=1)
    flags.DEFINE_enum("hessian_scope", "all", ["all", "shared", "no_aux_heads"],
                      "Parameters the Hessian is taken over.")
    flags.DEFINE_float("upper_clipnorm", 10.0, "Global-norm clip of the hypergradient (0: none).",
                       lower_bound=0.0)
    flags.DEFINE_integer("dev_size", None, "Clean primary examples in the dev set, stratified, taken out of "
                         "validation (default: min(200, 35% of the validation part)).", lower_bound=1)
    flags.DEFINE_float("label_fraction", 1.0, "Fraction of training examples that keep their primary "
                       "label (semi-supervised below 1).", lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("noise_rate", 0.0, "Fraction of training primary labels corrupted.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_enum("noise_kind", "uniform", ["uniform", "pair_flip"], "How corrupted labels are drawn.")
    flags.DEFINE_boolean("rotation", True, "Add the 4-way rotation auxiliary task (image datasets).")
    flags.DEFINE_string("aux_weights", "", "Equal: fixed task weights as name=value,... (default 1 each).")
    flags.DEFINE_enum("encoder", "auto", ["auto", "convnet4", "mlp", "tabular"],
                      "Shared encoder (backbone); auto: ConvNet-4 for images, tabular (feature "
                      "embeddings + MLP) for recommendation data, MLP for vectors.")
    flags.DEFINE_enum("distribute", "none", ["none", "mirrored"],
                      "none: one device; mirrored: MirroredStrategy over all visible GPUs (or CPUs).")
    flags.DEFINE_integer("seed", 0, "Random seed for data splits, noise, initialisation and shuffling.")
    flags.DEFINE_string("output_dir", "runs/default", "Where metrics.json, saved_model/, schedule.npz, "
                        "TensorBoard logs and checkpoints go.")
    flags.DEFINE_integer("verbose", 1, "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.")
