"""Task heads: small MLPs on the shared features, for `Task(head_fn=...)`."""

import keras


def mlp_head(units, layers=1, hidden=256, name=None):
    """A factory of task heads: call it with no argument (as Task.make_head does) for a
    fresh head. layers=1: Dense(units); layers=2: Dense(hidden) + ReLU -> Dense(units).
    `units` must be the task's output size (num_classes, or 1 for binary / regression).

        Task("fine", role="primary", num_classes=100, head_fn=mlp_head(100, layers=2, hidden=512))
    """
    if layers not in (1, 2):
        raise ValueError(f"mlp_head layers must be 1 or 2, got {layers}.")
    if int(units) < 1 or (layers == 2 and int(hidden) < 1):
        raise ValueError(f"mlp_head needs positive widths, got units={units}, hidden={hidden}.")

    def make():
        stack = [keras.layers.Dense(int(hidden), activation="relu")] if layers == 2 else []
        stack.append(keras.layers.Dense(int(units)))
        return keras.Sequential(stack, name=name)

    return make
