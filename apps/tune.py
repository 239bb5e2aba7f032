"""Grid-search the Equal / NAL task weights and the learning rate with keras-tuner.

    python -m apps.tune --dataset=digits --epochs=5 [--weight_grid=0.1,1,10] [--lr_grid=3e-4,1e-3,3e-3]
        [--max_trials=N] --output_dir=runs/tune
    python -m apps.train --flagfile=runs/tune/best_flags.txt --dataset=digits ...

Every auxiliary task's weight lambda_k (the primary's stays 1) takes a value of --weight_grid
(seed 000's NAL grid {0.1, 1, 10}) and the learning rate one of --lr_grid; keras-tuner's
GridSearch trains each combination (at most --max_trials of them; the grid has
|weight_grid|^(tasks-1) * |lr_grid| points, so many auxiliary tasks need a cap) for --epochs
and scores it by the best epoch's validation primary metric (the model's
`selection_metric`: max accuracy, min RMSE). Every other flag of apps.train (dataset, data
and setting flags, batch size, encoder, seed) is used as in apps.train.

--method=uniform searches S4L's fixed auxiliary weights instead, the targets' loss coming from a
stream of labelled target examples (seed 003's "GridSearch" row for K = 2: e.g. `--dataset=cifar10
--exemplar --num_labelled=4000 --weight_grid=0.1,0.5,1,2`); --method_args passes the method's
other arguments.

Writes in --output_dir: `best_flags.txt` (absl flag file: `--method=equal|uniform`, `--aux_weights=...`,
`--lr=...`; use it with `--flagfile=`), `trials.json` (every trial's values and score) and
`tuner/` (keras-tuner's state: rerunning the same command resumes the search; --overwrite
starts it afresh).
"""

import json
import os

import keras
import keras_tuner as kt
from absl import app, logging

import tfaux
from apps import experiment
from pipelines.errors import DataError

WEIGHT_GRID = (0.1, 1.0, 10.0)
LR_GRID = (3e-4, 1e-3, 3e-3)


class EqualWeights(kt.HyperModel):
    """AuxiliaryModel with Equal(task_weights=...) whose auxiliary weights and learning rate
    are hyperparameters; everything else comes from the experiment flags."""

    def __init__(self, flags, data, weight_grid=WEIGHT_GRID, lr_grid=LR_GRID):
        super().__init__(name="equal_weights")
        self.flags, self.data = flags, data
        self.weight_grid = [float(w) for w in weight_grid]
        self.lr_grid = [float(v) for v in lr_grid]
        try:  # the method's other arguments (e.g. --method=equal --method_args=labelled_stream=True)
            self.method_args = tfaux.strategies.method_args(flags.method, flags.method_args)
        except tfaux.strategies.MethodError as e:
            raise experiment.ConfigError(str(e)) from None
        if "task_weights" in self.method_args:
            raise experiment.ConfigError("--method_args must not set task_weights: apps.tune searches them.")

    def build(self, hp):
        flags, data = self.flags, self.data
        weights = {t.name: hp.Choice(weight_name(t.name), self.weight_grid) for t in data.tasks[1:]}
        lr = hp.Choice("lr", self.lr_grid)
        keras.utils.set_random_seed(flags.seed)  # every trial starts from the same initialisation
        strategy = tfaux.strategies.get(flags.method, **self.method_args, task_weights=weights)
        model = tfaux.AuxiliaryModel(experiment.build_encoder(flags, data), data.tasks, strategy,
                                     input_spec=data.input_spec, num_examples=data.num_train)
        model.compile(optimizer=keras.optimizers.Adam(lr))
        return model


def weight_name(task):
    return f"weight_{task}"


def _number(x):
    return f"{float(x):g}"


def flag_lines(values, tasks, method="equal"):
    """best_flags.txt lines for hyperparameter values {name: value}."""
    weights = ",".join(f"{t.name}={_number(values[weight_name(t.name)])}" for t in tasks[1:])
    lines = [f"--method={method}"]
    if weights:
        lines.append(f"--aux_weights={weights}")
    lines.append(f"--lr={_number(values['lr'])}")
    return lines


def search(flags, weight_grid=WEIGHT_GRID, lr_grid=LR_GRID, max_trials=None, overwrite=False):
    """Run the grid search under flags.output_dir; returns (best values, best score, trials)."""
    if flags.distribute == "multi_worker":
        raise experiment.ConfigError("--distribute=multi_worker is for training runs (apps.train and the other "
                                     "experiment binaries), not for apps.tune; use none or mirrored.")
    out = os.path.abspath(flags.output_dir)
    os.makedirs(out, exist_ok=True)
    data = experiment.load_data(flags)
    hypermodel = EqualWeights(flags, data, weight_grid, lr_grid)
    monitor, mode = hypermodel.build(kt.HyperParameters()).selection_metric
    tuner = kt.GridSearch(hypermodel, objective=kt.Objective(monitor, direction=mode), max_trials=max_trials,
                          seed=flags.seed, directory=os.path.join(out, "tuner"), project_name="equal_weights",
                          overwrite=overwrite,
                          distribution_strategy=(experiment.distribution(flags.distribute)
                                                 if flags.distribute != "none" else None))
    if hypermodel.build(kt.HyperParameters()).method.second_stream == "train":  # S4L's labelled stream
        train = data.train_with_reordered(flags.batch_size, flags.dev_batch_size)
    else:
        train = data.train(flags.batch_size)
    tuner.search(train, validation_data=data.val(flags.eval_batch_size), epochs=flags.epochs,
                 verbose=flags.verbose, shuffle=False)
    trials = [{"trial": t.trial_id, "values": dict(t.hyperparameters.values), "score": t.score,
               "status": str(t.status)} for t in tuner.oracle.trials.values()]
    finished = [t for t in tuner.oracle.get_best_trials(len(trials) or 1) if t.score is not None]
    if not finished:
        raise experiment.ConfigError("no keras-tuner trial finished with a score.")
    best = finished[0]
    values, score = dict(best.hyperparameters.values), float(best.score)
    header = (f"# apps.tune: best of {len(finished)} trial(s) by {monitor} ({mode}) = {score:.6g}; "
              f"dataset {flags.dataset}, seed {flags.seed}, {flags.epochs} epoch(s)")
    with open(os.path.join(out, "best_flags.txt"), "w") as f:
        f.write("\n".join([header, *flag_lines(values, data.tasks, flags.method)]) + "\n")
    with open(os.path.join(out, "trials.json"), "w") as f:
        json.dump({"objective": monitor, "direction": mode, "best": {"values": values, "score": score},
                   "trials": trials}, f, indent=2)
    return values, score, trials


# ---------------------------------------------------------------- binary
def define_flags():
    from absl import flags
    from apps.flags import define_flags as define_experiment_flags
    define_experiment_flags(method="equal", output_dir="runs/tune")
    flags.DEFINE_list("weight_grid", [_number(w) for w in WEIGHT_GRID], "Values of each auxiliary task's weight.")
    flags.DEFINE_list("lr_grid", [_number(v) for v in LR_GRID], "Learning rates to try.")
    flags.DEFINE_integer("max_trials", None, "At most this many grid points (default: the whole grid).",
                         lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from absl import flags
    FLAGS = flags.FLAGS
    try:
        weight_grid = [float(w) for w in FLAGS.weight_grid]
        lr_grid = [float(v) for v in FLAGS.lr_grid]
    except ValueError as e:
        raise SystemExit(f"error: --weight_grid and --lr_grid must be lists of numbers ({e}).") from None
    try:
        if FLAGS.method not in ("equal", "uniform"):
            raise experiment.ConfigError(f"apps.tune searches the fixed weights of --method=equal (NAL) or "
                                         f"--method=uniform (S4L), got --method={FLAGS.method}.")
        values, score, trials = search(FLAGS, weight_grid, lr_grid, FLAGS.max_trials, FLAGS.overwrite)
    except (DataError, experiment.ConfigError) as e:
        raise SystemExit(f"error: {e}") from None
    path = os.path.join(os.path.abspath(FLAGS.output_dir), "best_flags.txt")
    print(f"best of {len(trials)} trial(s): score {score:.4f}; {' '.join(_read_flags(path))}\nwritten to {path}")


def _read_flags(path):
    with open(path) as f:
        return [line.strip() for line in f if line.startswith("--")]


if __name__ == "__main__":
    define_flags()
    app.run(main)
