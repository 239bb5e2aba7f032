"""`compile(loss=, metrics=, weighted_metrics=, loss_weights=)` read per task, the Keras way.

Keras' own forms: one value for every task, a list in task order, or a dict {task: value}
(metrics: a list applied to every target task, or a dict {task: metric or list}). A loss
replaces the task kind's default per-example loss; metrics are logged as `<task>_<metric>`.
Losses and metrics see what a Keras model with softmax / sigmoid outputs gives: the labels
and the task's prediction (`Task.prediction`: probabilities, or the value of a regression),
shaped [B, 1] for binary and regression tasks and [B, C] for classes.
"""

import keras
import tensorflow as tf

ACCURACY = ("accuracy", "acc")


def _per_task(value, tasks, what, default_tasks):
    """{task name: value} from one value (for `default_tasks`), a list in task order or a dict."""
    names = [t.name for t in tasks]
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"compile({what}=...) names tasks the model does not have: {unknown}; "
                             f"its tasks are {names}.")
        return dict(value)
    if isinstance(value, (list, tuple)) and what == "loss":
        if len(value) != len(names):
            raise ValueError(f"compile(loss=[...]) lists {len(value)} losses for {len(names)} tasks {names}.")
        return dict(zip(names, value))
    return {t.name: value for t in default_tasks}


def keras_shapes(task, labels, prediction):
    """(labels, prediction) shaped as a Keras model's: [B, 1] for binary and regression."""
    if task.kind in ("binary", "regression"):
        return tf.reshape(tf.cast(labels, tf.float32), [-1, 1]), tf.reshape(prediction, [-1, 1])
    return labels, prediction


def per_example_loss(loss, task):
    """A function (labels, head outputs) -> [B] losses from a Keras loss, its name or a callable."""
    if task.is_dense or task.kind in ("soft", "consistency"):
        raise ValueError(f"compile(loss=...) cannot replace the loss of task '{task.name}' ({task.kind}); "
                         "only classification, binary and regression tasks take a Keras loss.")
    fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
    if isinstance(fn, keras.losses.Loss):
        fn = fn.call  # unreduced: one value per example
    if not callable(fn):
        raise ValueError(f"compile(loss=...) for task '{task.name}' must be a Keras loss, its name or a callable; "
                         f"got {loss!r}.")

    def losses(labels, outputs):
        value = tf.cast(fn(*keras_shapes(task, labels, task.prediction(outputs))), tf.float32)
        if value.shape.rank == 0:
            raise ValueError(f"The loss of task '{task.name}' returned one number for the batch; it must return "
                             "one value per example (a Keras loss or a function without reduction).")
        return tf.reduce_mean(tf.reshape(value, [tf.shape(value)[0], -1]), axis=1)

    return losses


def _metric_name(metric):
    if isinstance(metric, str):
        return metric
    return getattr(metric, "name", None) or getattr(metric, "__name__", type(metric).__name__)


def make_metric(metric, task, prefix=""):
    """A fresh Keras metric named `<task>_<prefix><name>` for `task` (strings resolved as Keras
    does: 'accuracy' by the task's kind)."""
    name = f"{task.name}_{prefix}{_metric_name(metric)}"
    if isinstance(metric, str) and metric in ACCURACY:
        if task.kind == "regression":
            raise ValueError(f"compile(metrics=...): 'accuracy' does not apply to regression task '{task.name}'.")
        cls = keras.metrics.BinaryAccuracy if task.kind == "binary" else keras.metrics.SparseCategoricalAccuracy
        return cls(name=name)
    if isinstance(metric, keras.metrics.Metric):
        config = metric.get_config()
        return type(metric).from_config({**config, "name": name})
    resolved = keras.metrics.get(metric)
    if isinstance(resolved, keras.metrics.Metric):
        return type(resolved).from_config({**resolved.get_config(), "name": name})
    if callable(resolved):
        return keras.metrics.MeanMetricWrapper(resolved, name=name)
    raise ValueError(f"compile(metrics=...) for task '{task.name}': {metric!r} is not a Keras metric.")


def task_metrics(metrics, weighted_metrics, tasks):
    """[(task index, metric, weighted)] for compile's `metrics` and `weighted_metrics`: a list
    applies to every target task, a dict {task: metric or list} to the tasks it names. A weighted
    metric whose name an unweighted one has is called `<task>_weighted_<name>`, as in Keras."""
    targets = [t for t in tasks if t.is_primary]
    found, names = [], set()
    for weighted, value in ((False, metrics), (True, weighted_metrics)):
        by_task = _per_task(value, tasks, "weighted_metrics" if weighted else "metrics", targets)
        for k, task in enumerate(tasks):
            listed = by_task.get(task.name)
            for metric in [] if listed is None else listed if isinstance(listed, (list, tuple)) else [listed]:
                made = make_metric(metric, task)
                if made.name in names:
                    if not weighted:
                        raise ValueError(f"compile(metrics=...) lists two metrics named '{made.name}'.")
                    made = make_metric(metric, task, prefix="weighted_")
                names.add(made.name)
                found.append((k, made, weighted))
    return found


def task_losses(loss, tasks):
    """{task name: per-example loss function} for compile's `loss` (one loss: every task)."""
    return {name: per_example_loss(value, next(t for t in tasks if t.name == name))
            for name, value in _per_task(loss, tasks, "loss", tasks).items() if value is not None}


def loss_weights_by_task(loss_weights, tasks):
    """{task name: float} for compile's `loss_weights` (a dict or a list in task order)."""
    if loss_weights is None:
        return None
    if isinstance(loss_weights, (list, tuple)):
        if len(loss_weights) != len(tasks):
            raise ValueError(f"compile(loss_weights=[...]) lists {len(loss_weights)} weights for {len(tasks)} "
                             f"tasks {[t.name for t in tasks]}.")
        loss_weights = dict(zip([t.name for t in tasks], loss_weights))
    by_task = _per_task(loss_weights, tasks, "loss_weights", tasks)
    return {k: float(v) for k, v in by_task.items()}
