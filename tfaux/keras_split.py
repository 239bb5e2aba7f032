"""A functional multi-output Keras model taken apart into a shared trunk and one head per output
(`AuxiliaryModel.from_keras`): the trunk ends at the last tensor every output depends on."""

import keras
import tensorflow as tf

from tfaux.tasks import Task


def _ancestors(tensor):
    """{id: tensor} of `tensor` and every tensor it is computed from."""
    seen, stack = {}, [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen[id(t)] = t
        operation, node_index, _ = t._keras_history
        stack.extend(operation._inbound_nodes[node_index].input_tensors)
    return seen


def shared_tensor(model, shared=None):
    """The trunk's output: layer `shared`'s output, or the last tensor every output depends on."""
    if shared is not None:
        try:
            return model.get_layer(shared).output
        except ValueError:
            raise ValueError(f"shared='{shared}' is not a layer of model '{model.name}'.") from None
    history = [_ancestors(t) for t in model.outputs]
    common = set(history[0]).intersection(*history[1:])
    inputs = {id(t) for t in tf.nest.flatten(model.inputs)}
    candidates = [history[0][i] for i in common if i not in inputs]
    if not candidates:
        raise ValueError(f"The outputs of model '{model.name}' share no layer; from_keras needs a shared trunk.")
    last = max(candidates, key=lambda t: len(_ancestors(t)))
    if not common <= set(_ancestors(last)):
        raise ValueError(f"The outputs of model '{model.name}' do not meet in one shared tensor; name the trunk's "
                         "last layer with shared=.")
    return last


def _model_input(model):
    inputs = model.inputs
    return inputs[0] if len(inputs) == 1 else {t.name: t for t in inputs}


def input_spec(model):
    """tf.TensorSpec of one example (a dict by input name when the model has several inputs)."""
    spec = {t.name: tf.TensorSpec(t.shape[1:], t.dtype) for t in model.inputs}
    return next(iter(spec.values())) if len(spec) == 1 else spec


def _output_layer(head_output):
    return head_output._keras_history[0]


def infer_task(name, output, role, kind=None):
    """The Task of one output, its kind read off the output layer when not given: softmax
    (units > 1) -> classification of probabilities, sigmoid (1 unit) -> binary of probabilities,
    linear with units > 1 -> classification of logits, linear with 1 unit -> regression."""
    if isinstance(kind, Task):
        return kind
    units = int(output.shape[-1])
    activation = getattr(getattr(_output_layer(output), "activation", None), "__name__", "linear")
    probabilities = activation in ("softmax", "sigmoid")
    if kind is None:
        if activation == "softmax" or (activation == "linear" and units > 1):
            kind = "classification"
        elif activation == "sigmoid" and units == 1:
            kind = "binary"
        elif activation == "linear" and units == 1:
            kind = "regression"
        else:
            raise ValueError(f"Cannot tell the kind of output '{name}' ({units} units, {activation}); give it in "
                             "tasks={name: 'classification' | 'binary' | 'regression'}.")
    return Task(name, role=role, kind=kind, num_classes=max(units, 2), from_logits=not probabilities)


def split(model, primary, tasks=None, shared=None):
    """(encoder, [Task], {task name: head model}) of a functional multi-output model.
    primary: the target output's name (or a list of names, the first exported); tasks: optional
    {output name: kind or Task}."""
    try:
        functional = isinstance(model, keras.Model) and bool(model.outputs)
    except (AttributeError, ValueError):
        functional = False
    if not functional:
        raise ValueError("from_keras needs a functional (or Sequential) Keras model with named outputs.")
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):  # dict outputs: y is keyed as the dict is
        names, outputs = list(struct), list(struct.values())
    else:
        names, outputs = list(model.output_names), list(model.outputs)
    if len(names) < 2:
        raise ValueError(f"Model '{model.name}' has one output; from_keras needs one output per task.")
    targets = [primary] if isinstance(primary, str) else list(primary)
    tasks = dict(tasks or {})
    unknown = sorted((set(targets) | set(tasks)) - set(names))
    if unknown:
        raise ValueError(f"{unknown} are not outputs of model '{model.name}'; its outputs are {names}.")
    trunk = shared_tensor(model, shared)
    encoder = keras.Model(_model_input(model), trunk, name=f"{model.name}_trunk")
    made, heads = [], {}
    for name, output in zip(names, outputs):
        role = "primary" if name in targets else "auxiliary"
        made.append(infer_task(name, output, role, tasks.get(name)))
        try:
            heads[name] = keras.Model(trunk, output, name=f"head_{name}")
        except ValueError as e:
            raise ValueError(f"Output '{name}' reads inputs besides the shared trunk ({e}); name the trunk's last "
                             "layer with shared=.") from None
    return encoder, made, heads
