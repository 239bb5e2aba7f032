"""flags -> data -> model -> fit -> metrics.json, history.csv, saved_model/, schedule.npz.

Shared by every experiment binary; the binaries only choose defaults.
"""

import csv
import dataclasses
import json
import math
import os
import resource
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, logging

import pipelines
import tfaux
from apps import run_dir
from apps.flags import FIXED_WEIGHT_METHODS, inapplicable
from pipelines.errors import DataError
from tfaux import distribute, hypergrad, models, schedule
from tfaux.backup import (BackupError, BestWeights, EpochBackup, finished_epochs, replace_atomically,
                          write_json_atomically, write_text_atomically)
from tfaux.callbacks import DivergenceMonitor, ScheduleRecorder
from tfaux.strategies import label_generation
from tfaux.tasks import with_roles


class ConfigError(ValueError):
    """A flag combination that cannot run; the message is one sentence."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; metrics.json says so ("status": "diverged")."""


def parse_aux_weights(text):
    weights = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if sep and not (math.isfinite(weights[name.strip()]) and weights[name.strip()] >= 0):
            raise ConfigError(f"--aux_weights: the weight of '{name.strip()}' must be a finite number >= 0, "
                              f"got {value.strip()}.")
        if not sep:
            raise ConfigError(f"--aux_weights must look like 'rotation=0.5,coarse=1', got '{text}'.")
    return weights


TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


@dataclasses.dataclass(frozen=True)
class Worker:
    """This process's place among the workers of a run: `index` 0 is the chief, the only one
    that writes results (--distribute=none and mirrored: one worker, the chief)."""
    index: int = 0
    count: int = 1

    @property
    def is_chief(self):
        return self.index == 0


def tf_config(text):
    """The Worker that the TF_CONFIG text (JSON) makes of this process; ConfigError (one
    sentence) when it is missing, not JSON, or lacks cluster.worker, task.type or task.index, or
    the index is out of range. A "chief" task (TensorFlow's optional extra worker) counts as
    worker 0 and the "worker" tasks follow it."""
    if text is None or not text.strip():
        raise ConfigError("--distribute=multi_worker needs the TF_CONFIG environment variable, JSON naming every "
                          f"worker and this one's index, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'.")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({str(e).splitlines()[0]}); it should look like "
                          f"'{TF_CONFIG_EXAMPLE}'.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not (isinstance(workers, list) and workers and all(isinstance(w, str) and ":" in w for w in workers)):
        raise ConfigError("TF_CONFIG has no cluster.worker, the list of every worker's \"host:port\" address "
                          f"(e.g. '{TF_CONFIG_EXAMPLE}').")
    chief = cluster.get("chief", [])
    if not (isinstance(chief, list) and len(chief) <= 1 and all(isinstance(w, str) and ":" in w for w in chief)):
        raise ConfigError("TF_CONFIG's cluster.chief, when given, must list one \"host:port\" address.")
    task = config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    if kind not in ("worker", "chief") or (kind == "chief" and not chief):
        raise ConfigError(f"TF_CONFIG has no usable task.type (got {kind!r}): it must be \"worker\" (or \"chief\" "
                          "when cluster.chief is given) for --distribute=multi_worker.")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(f"TF_CONFIG has no task.index, this process's position in cluster.{kind} (an integer, "
                          f"got {index!r}).")
    size = len(workers if kind == "worker" else chief)
    if not 0 <= index < size:
        raise ConfigError(f"TF_CONFIG's task.index {index} is out of range: cluster.{kind} lists {size} "
                          f"address{'es' if size > 1 else ''} (index 0 to {size - 1}).")
    return Worker(index=index + (len(chief) if kind == "worker" else 0), count=len(chief) + len(workers))


def this_worker(flags):
    """This process's Worker under --distribute."""
    return tf_config(os.environ.get("TF_CONFIG")) if flags.distribute == "multi_worker" else Worker()


def distribution(name):
    """The tf.distribute strategy of --distribute. multi_worker reads TF_CONFIG (tf_config) and
    must come before TensorFlow runs any op in this process (collective ops are configured at
    startup)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        tf_config(os.environ.get("TF_CONFIG"))
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"--distribute=multi_worker could not start ({str(e).splitlines()[0]}).") from None
    return tf.distribute.get_strategy()


def check_batch_sizes(flags, strategy):
    """Every replica takes an equal share of each global batch (the losses divide by the global
    batch size), so the training batch sizes must be multiples of the replicas."""
    replicas = strategy.num_replicas_in_sync
    for name in ("batch_size", "dev_batch_size"):
        if flags[name].value % replicas:
            raise ConfigError(f"--{name}={flags[name].value} is not a multiple of the {replicas} replicas of "
                              f"--distribute={flags.distribute}; each replica takes an equal share of a global "
                              "batch.")
    chunks = flags.hvp_chunks
    if chunks > 1 and (flags.batch_size // replicas) % chunks:
        raise ConfigError(f"--hvp_chunks={chunks} does not divide each replica's {flags.batch_size // replicas} "
                          "examples of --batch_size; the upper step's sub-batches must be equal.")


def for_workers(dataset):
    """`dataset` sharded by data between the workers of a multi-worker run: each worker builds
    the same stream of global batches and keeps its own part of every one (tf.data's DATA
    auto-shard policy after tf.distribute splits each batch between the replicas), so a step
    sees exactly the global batch one process would, and epoch-keyed order survives resume."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_strategy(flags, tasks):
    """--method with --method_args (and, for equal and uniform, --aux_weights)."""
    try:
        args = tfaux.strategies.method_args(flags.method, flags.method_args)
    except tfaux.strategies.MethodError as e:
        raise ConfigError(str(e)) from None
    if flags.aux_weights and flags.method not in FIXED_WEIGHT_METHODS:
        raise ConfigError(f"--aux_weights sets the fixed task weights of --method=equal or uniform; "
                          f"--method={flags.method} does not use them.")
    if flags.method in FIXED_WEIGHT_METHODS and flags.aux_weights:
        names = {t.name for t in tasks}
        weights = parse_aux_weights(flags.aux_weights)
        unknown = sorted(set(weights) - names)
        if unknown:
            raise ConfigError(f"--aux_weights names unknown tasks {unknown}; tasks are {sorted(names)}.")
        args["task_weights"] = weights
    try:
        return tfaux.strategies.get(flags.method, **args)
    except ValueError as e:
        raise ConfigError(f"--method_args: {e}") from None


IMAGE_ENCODERS = ("convnet4", "resnet18", "wrn28_2", "vgg16", "lenet", "segnet")
DICT_ENCODERS = ("tabular", "autoint")


def preprocessed(data, network):
    """`network` behind the dataset's preprocessing layer (pipelines yield raw inputs: e.g. image
    normalisation is part of the model, so the exported model takes raw inputs); itself when the
    dataset has none."""
    layer = data.preprocessing()
    return network if layer is None else keras.Sequential([layer, network], name=f"preprocessed_{network.name}")


def preprocess_generator(strategy, data):
    """A label generator's own network g(x; phi) (tfaux.strategies.label_generation) reads the raw
    inputs too: its backbone goes behind the dataset's preprocessing, like the encoder."""
    if not isinstance(strategy, label_generation.LabelGenerator) or data.preprocessing() is None:
        return strategy
    backbone = strategy.backbone
    make = (backbone if callable(backbone) else label_generation.BACKBONES[backbone] if backbone
            else models.for_input)
    strategy.backbone = lambda spec: preprocessed(data, make(spec))
    return strategy


def build_encoder(flags, data):
    """The --encoder backbone, checked against the dataset's input kind, behind the dataset's
    preprocessing (`preprocessed`)."""
    return preprocessed(data, _backbone(flags, data))


def _backbone(flags, data):
    spec = data.input_spec
    dense = [t.name for t in data.tasks if t.is_dense]
    if flags.encoder_weights and flags.encoder != "resnet18":
        raise ConfigError(f"--encoder_weights is for --encoder=resnet18 only, not --encoder={flags.encoder}.")
    if flags.encoder == "auto" and not dense:
        return models.for_input(spec)
    is_image = isinstance(spec, tf.TensorSpec) and len(spec.shape) == 3
    if dense or flags.encoder == "segnet":
        return _segnet(flags, data, dense, is_image)
    if flags.encoder in IMAGE_ENCODERS and not is_image:
        raise ConfigError(f"--encoder={flags.encoder} needs image inputs; dataset '{flags.dataset}' has none "
                          "(use --encoder=auto).")
    if flags.encoder in DICT_ENCODERS and not isinstance(spec, dict):
        raise ConfigError(f"--encoder={flags.encoder} needs a dict of features; dataset '{flags.dataset}' has "
                          "none (use --encoder=auto).")
    if flags.encoder in DICT_ENCODERS:
        return getattr(models, f"{flags.encoder}_encoder" if flags.encoder == "tabular" else flags.encoder)(spec)
    if flags.encoder == "resnet18":
        stem = "cifar" if spec.shape[0] <= 64 else "imagenet"
        try:
            return models.resnet18(stem=stem, weights=flags.encoder_weights)
        except ValueError as e:
            raise ConfigError(f"--encoder_weights: {e}") from None
    if flags.encoder == "wrn28_2":
        return models.wide_resnet(28, 2)
    if flags.encoder == "vgg16":
        return models.vgg16()
    return {"convnet4": models.convnet4, "lenet": models.lenet, "mlp": models.mlp_encoder}[flags.encoder]()


def _segnet(flags, data, dense, is_image):
    """SegNet for a dataset whose tasks are all per-pixel (seed 002's NYUv2)."""
    if dense and flags.encoder not in ("auto", "segnet"):
        raise ConfigError(f"Dataset '{flags.dataset}' has per-pixel tasks {dense}; use --encoder=segnet (or auto).")
    other = [t.name for t in data.tasks if not t.is_dense]
    if not is_image or not dense or other:
        raise ConfigError(f"--encoder=segnet needs image inputs and every task per-pixel; tasks {other or 'all'} "
                          "are not (pass --norotation / --noexemplar).")
    try:
        return models.segnet(tuple(data.input_spec.shape))
    except ValueError as e:
        raise ConfigError(f"--encoder=segnet: {e}") from None


def load_data(flags):
    setting = pipelines.Setting(dev_size=flags.dev_size, dev_per_class=flags.dev_per_class,
                                label_fraction=flags.label_fraction, shots_per_class=flags.shots_per_class,
                                num_labelled=flags.num_labelled, val_fraction=flags.val_fraction,
                                test_fraction=flags.test_fraction, chronological=flags.chronological,
                                drop_unlabelled=flags.drop_unlabelled,
                                noise_rate=flags.noise_rate, noise_kind=flags.noise_kind,
                                rotation=flags.rotation, exemplar=flags.exemplar, aux_dataset=flags.aux_dataset,
                                random_auxiliary=flags.random_auxiliary, seed=flags.seed)
    return pipelines.load(flags.dataset, data_dir=flags.data_dir, setting=setting, aux_data_dir=flags.aux_data_dir,
                          options=pipelines.options(flags.dataset, flags.dataset_args))


def upper_settings(flags, strategy):
    """The method's reference upper update (tfaux.upper) with the --upper_* flags that are set
    (`check_numbers` has refused non-finite ones)."""
    return strategy.upper_defaults.override(optimizer=flags.upper_optimizer, learning_rate=flags.upper_lr,
                                            weight_decay=flags.upper_weight_decay, clipnorm=flags.upper_clipnorm)


def build_model(flags, data):
    solver = (hypergrad.ConjugateGradient(iterations=flags.cg_iterations) if flags.solver == "cg"
              else hypergrad.Neumann(terms=flags.neumann_terms, alpha=flags.neumann_alpha))
    keras.utils.set_random_seed(flags.seed)
    try:
        tasks = with_roles(data.tasks, flags.target_tasks, flags.privileged_tasks)
    except ValueError as e:
        raise ConfigError(f"--target_tasks / --privileged_tasks: {e}") from None
    strategy = preprocess_generator(build_strategy(flags, tasks), data)
    upper = upper_settings(flags, strategy)
    encoder = build_encoder(flags, data)
    try:
        model = tfaux.AuxiliaryModel(encoder, tasks, strategy,
                                     input_spec=data.input_spec, num_examples=data.num_train,
                                     upper_interval=flags.upper_interval, solver=solver,
                                     hessian_scope=flags.hessian_scope, upper=upper,
                                     hvp_chunks=flags.hvp_chunks)
    except ValueError as e:  # a strategy refusing these tasks or arguments
        raise ConfigError(f"--method={flags.method}: {e}") from None
    model.compile(optimizer=task_optimizer(flags, data.steps_per_epoch(flags.batch_size)))
    return model


def lr_decay_steps(text):
    """[(epoch, factor)] of `--lr_decay=epoch=factor,...`, epochs increasing ("cosine": []);
    ConfigError otherwise."""
    if text.strip() == "cosine":
        return []
    steps = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        epoch, sep, factor = item.partition("=")
        try:
            epoch, factor = int(epoch), float(factor)
        except ValueError:
            sep = ""
        if not sep or epoch < 1 or not (math.isfinite(factor) and factor > 0) or (steps and epoch <= steps[-1][0]):
            raise ConfigError(f"--lr_decay must look like '80=0.1', '30=0.1,60=0.01' (increasing epochs >= 1, "
                              f"factors > 0) or 'cosine', got '{text}'.")
        steps.append((epoch, factor))
    return steps


def task_optimizer(flags, steps_per_epoch):
    """--optimizer at --lr with --weight_decay, times each --lr_decay factor from its epoch on or
    cosine-annealed (a function of the optimizer's step count, so exact on resume)."""
    lr = flags.lr
    decay = lr_decay_steps(flags.lr_decay)
    if flags.lr_decay.strip() == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(flags.lr, decay_steps=flags.epochs * steps_per_epoch)
    elif decay:
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            [epoch * steps_per_epoch - 1 for epoch, _ in decay],  # (a boundary's own step keeps the earlier rate)
            [flags.lr] + [flags.lr * f for _, f in decay])
    decay_weights = flags.weight_decay or None
    if flags.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=decay_weights)
    return keras.optimizers.Adam(lr, weight_decay=decay_weights)


def _json_value(v):
    """A JSON-safe value: numpy scalars as Python numbers, non-finite floats as None."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def check_numbers(flags):
    """Every float flag finite (absl's bounds let NaN through): one sentence naming the flag."""
    for name in flags_used(flags):
        value = flags[name].value
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{name} must be a finite number, got {value}.")


def write_metrics(out, metrics):
    """metrics.json, strictly valid JSON (NaN and infinity are refused, not written), replaced
    atomically: a kill while writing leaves the previous state, never a partial file."""
    write_json_atomically(os.path.join(out, "metrics.json"), metrics)


def _complete(row):
    try:
        return None not in row and all(v not in (None, "") for v in row.values()) and int(row["epoch"]) >= 0
    except ValueError:
        return False


def earlier_history(path, epochs):
    """The first `epochs` epochs of the CSVLogger file `path` as {key: [values]}; the file is
    cut to them (so the resumed run appends after them), or removed when epochs is 0."""
    if epochs == 0 or not os.path.exists(path):
        if os.path.exists(path):
            os.remove(path)
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if _complete(r) and int(r["epoch"]) < epochs]  # (a kill may cut the last row)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return {k: [float(r[k]) for r in rows] for k in fields if k != "epoch"}


def run(flags, extra_callbacks=()):
    """Train, select by validation (seed 000, Eq. 1), test, export. Returns the metrics dict.

    An interrupted run started again with the same flags resumes after its last finished
    epoch (tfaux.backup: weights, both optimizers, the scheduler, written atomically) and
    finishes as the uninterrupted run would: every epoch's batches are a function of
    (seed, epoch), the history so far comes back from history.csv and selection continues
    from its best. The folder is locked while the run uses it (apps.run_dir)."""
    check_numbers(flags)
    lr_decay_steps(flags.lr_decay)  # a malformed schedule is refused before any data is read
    out = run_dir.checked_path(flags.output_dir)
    worker = this_worker(flags)
    strategy = distribution(flags.distribute)  # first: before any TF op (multi_worker's collectives)
    check_batch_sizes(flags, strategy)
    data = load_data(flags)
    with strategy.scope():
        model = build_model(flags, data)
    skipped = inapplicable(flags.method)  # shared by design (apps.compare, flag files): not part of this run
    used = {name: _json_value(flags[name].value) for name in flags_used(flags) if name not in skipped}
    if worker.is_chief:
        with run_dir.Claim(out, used, overwrite=flags.overwrite):
            _synchronise(worker, strategy)  # the folder is decided before another worker reads it
            return _train_and_report(flags, used, out, data, model, extra_callbacks, worker)
    with run_dir.WorkerScratch(out, worker.index) as scratch:  # another worker: writes in its own temp folder
        _synchronise(worker, strategy)
        run_dir.copy_resume_state(out, scratch)  # before the chief moves on (_agree_on_first_epoch)
        return _train_and_report(flags, used, scratch, data, model, extra_callbacks, worker)


def _synchronise(worker, strategy):
    """Wait until every worker gets here (a collective op; only with several workers)."""
    if worker.count > 1:
        distribute.from_every_replica(strategy, 0.0)


def _agree_on_first_epoch(worker, strategy, first_epoch, output_dir):
    """Every worker resumes after the same epoch (the chief's backup), or none starts."""
    if worker.count == 1:
        return
    seen = distribute.from_every_replica(strategy, first_epoch)
    if (seen != seen[0]).any():
        raise ConfigError(f"the workers found backups of different epochs ({', '.join(str(int(e)) for e in seen)} "
                          f"finished, one per replica) under --output_dir={output_dir}; give every worker the "
                          "same --output_dir, one folder that all of them can read (the chief's).")


def _train_and_report(flags, used, out, data, model, extra_callbacks, worker=Worker()):
    start = time.time()
    monitor, mode = model.selection_metric
    backup = EpochBackup(os.path.join(out, "backup"))
    first_epoch = finished_epochs(backup.backup_dir)
    _agree_on_first_epoch(worker, model.distribute_strategy, first_epoch, flags.output_dir)
    if first_epoch > flags.epochs:
        raise ConfigError(f"--epochs={flags.epochs} but the interrupted run in {out} already finished "
                          f"{first_epoch} epochs; raise --epochs or pass --overwrite.")
    earlier = earlier_history(os.path.join(out, "history.csv"), first_epoch)
    best_path = os.path.join(out, "best.weights.h5")
    best_so_far = ((max if mode == "max" else min)(earlier[monitor]) if earlier.get(monitor) else None)
    divergence = DivergenceMonitor()
    callbacks = [
        divergence,
        BestWeights(best_path, monitor=monitor, mode=mode, best=best_so_far),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
        backup,  # last of ours: an epoch counts as finished once everything above is written
        keras.callbacks.TensorBoard(os.path.join(out, "logs"), write_graph=False),
        *extra_callbacks,
    ]
    recorder = None
    if model.method.bilevel:  # sampled examples' weights and JTDS loss filter, every epoch
        recorder = ScheduleRecorder(data.train_eval(flags.eval_batch_size), data.num_train, seed=flags.seed,
                                    corrupted=data.corrupted, labelled=data.labelled,
                                    log_dir=os.path.join(out, "logs", "schedule"),
                                    path=os.path.join(out, "schedule_history.npz"))
        recorder.resume(first_epoch)
        callbacks.insert(1, recorder)  # saved before the backup marks the epoch finished
    epochs = dict(epochs=flags.epochs, initial_epoch=first_epoch)
    if first_epoch == flags.epochs:  # killed after its last epoch: only the results are missing
        backup.set_model(model)
        backup.restore()
        history = {}
    elif model.method.second_stream is None:
        train = data.train(flags.batch_size, **epochs)
    elif model.method.second_stream == "train":  # a reordered copy of the training set
        train = data.train_with_reordered(flags.batch_size, flags.dev_batch_size, **epochs)
    else:
        train = data.train_with_dev(flags.batch_size, flags.dev_batch_size, **epochs)
    if first_epoch < flags.epochs:
        history = model.fit(for_workers(train), validation_data=for_workers(data.val(flags.eval_batch_size)),
                            epochs=flags.epochs, initial_epoch=first_epoch,
                            callbacks=callbacks, steps_per_epoch=data.steps_per_epoch(flags.batch_size),
                            verbose=flags.verbose, shuffle=False).history  # (the pipeline shuffles)
    history = {k: earlier.get(k, []) + list(history.get(k, [])) for k in dict.fromkeys([*history, *earlier])}
    metric = monitor[len("val_"):]
    common = {
        "method": flags.method, "dataset": flags.dataset, "primary_metric": metric,
        "targets": [t.name for t in model.targets], "epochs": flags.epochs, "resumed_at_epoch": first_epoch,
        "flags": used,
        "history": {k: [_json_value(x) for x in v] for k, v in history.items()},
    }
    if divergence.diverged is not None:  # nothing is exported; the run is not a result
        where = divergence.diverged
        write_metrics(out, {"status": "diverged", "diverged": where, **common,
                            "wall_seconds": round(time.time() - start, 2)})
        backup.remove()
        raise DivergedError(f"training diverged at epoch {where['epoch']}, step {where['step']} (loss "
                            f"{where['loss']}); nothing was exported and {out}/metrics.json records "
                            "status 'diverged' (lower --lr or check the data).")
    values = history.get(monitor, [])
    if os.path.exists(best_path):
        model.load_weights(best_path)
    test = model.evaluate(for_workers(data.test(flags.eval_batch_size)), return_dict=True, verbose=0)
    export_atomically(model, os.path.join(out, "saved_model"), data)
    if model.method.bilevel:
        weights = schedule.example_weights(model, data.train_eval(flags.eval_batch_size), data.num_train)
        arrays = dict(weights=weights, tasks=np.array([t.name for t in model.tasks]), corrupted=data.corrupted,
                      labelled=data.labelled)
        replace_atomically(os.path.join(out, "schedule.npz"), lambda partial: np.savez_compressed(partial, **arrays),
                           partial=os.path.join(out, "schedule.partial.npz"))
    best = (max if mode == "max" else min)(values) if values else None
    metrics = {
        "status": "ok", **common,
        "selection": (f"validation {metric} of target '{model.primary.name}'" if model.num_targets == 1 else
                      f"validation {metric}: the mean of the {model.num_targets} targets' "
                      + ", ".join(f"{t.name}_{t.metric_name}" for t in model.targets)),
        "best_val": _json_value(best), "best_epoch": (values.index(best) + 1) if values else None,
        "test": _json_value(test[metric]), "test_metrics": {k: _json_value(v) for k, v in test.items()},
        "wall_seconds": round(time.time() - start, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "num_train": data.num_train, "num_dev": data.num_dev, "num_val": data.num_val, "num_test": data.num_test,
    }
    weights = {t.name: history[f"{t.name}_weight"][-1] for t in model.tasks if history.get(f"{t.name}_weight")}
    if weights:  # methods that log task weights: each task's mean weight over the last epoch
        metrics["task_weights"] = {k: _json_value(v) for k, v in weights.items()}
        table = task_weight_table(metrics)
        write_text_atomically(os.path.join(out, "task_weights.md"), table)
    write_metrics(out, metrics)
    backup.remove()  # only now: a kill before this resumes without retraining
    return metrics


def task_weight_table(metrics, top=5):
    """Markdown: the auxiliary tasks by learned weight, highest first (seed 003, Table 3: with more
    than 2 * top of them, the `top` most and least related first)."""
    targets = set(metrics["targets"])
    ranked = sorted(((w, name) for name, w in metrics["task_weights"].items() if name not in targets and w is not None),
                    key=lambda p: (-p[0], p[1]))
    lines = [f"# Auxiliary tasks by learned weight: {metrics['method']}, target {', '.join(metrics['targets'])} "
             "(each task's mean weight over the last epoch)", ""]
    if len(ranked) > 2 * top:
        lines += ["| most related | weight | least related | weight |", "|---|---|---|---|"]
        lines += [f"| {hi[1]} | {hi[0]:.4g} | {lo[1]} | {lo[0]:.4g} |" for hi, lo in zip(ranked[:top], ranked[::-1][:top])]
        lines.append("")
    lines += ["| task | weight |", "|---|---|"] + [f"| {name} | {w:.4g} |" for w, name in ranked]
    return "\n".join(lines) + "\n"


def export_atomically(model, path, data):
    """The primary-task SavedModel at `path`, written next to it and renamed into place."""
    partial = f"{path}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    tfaux.export_primary(model, partial, vocabularies=data.vocabularies, dtype=data.raw_dtype)
    shutil.rmtree(path, ignore_errors=True)
    os.rename(partial, path)


def worker_lost(error):
    """One sentence for a collective op that failed because another worker stopped."""
    reason = " ".join(str(getattr(error, "message", error)).split())
    reason = reason.split("Collective ops is aborted by: ")[-1][:160]
    return (f"another worker of this --distribute=multi_worker run stopped or cannot be reached ({reason}); start "
            "every worker again with its command and the run resumes after its last finished epoch.")


def flags_used(flags):
    """The names of the flags defined by apps.flags (not absl's own)."""
    return [n for n in flags if flags.find_module_defining_flag(n, "") == "apps.flags"]


def main_with_errors(flags):
    """Run; a data or configuration problem ends the program with one sentence."""
    try:
        metrics = run(flags)
    except (DataError, ConfigError, DivergedError, run_dir.OutputDirError, BackupError) as e:
        raise SystemExit(f"error: {e}") from None
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as e:
        if flags.distribute != "multi_worker":
            raise
        raise SystemExit(f"error: {worker_lost(e)}") from None
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume after the last finished epoch.", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"{metrics['method']} on {metrics['dataset']}: best val {metrics['primary_metric']} "
          f"{metrics['best_val']:.4f}, test {metrics['test']:.4f} ({metrics['wall_seconds']:.0f} s); "
          f"outputs in {os.path.abspath(flags.output_dir)}")
    return metrics


def main(argv):
    """absl entry point shared by every experiment binary."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from apps.flags import FLAGS, apply_dataset_defaults
    apply_dataset_defaults(FLAGS)
    main_with_errors(FLAGS)
