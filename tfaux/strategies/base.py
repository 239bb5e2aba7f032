"""The one protocol every method implements.

A strategy turns the per-example, per-task loss matrix l[i, k] (column 0 is the
primary task) into a parameter update for theta, and, if it has parameters phi
of its own, says how they are learned:

- loss-weighting methods override `lower_loss` (or just `example_weights`);
- gradient-space methods override `lower_gradients`;
- bi-level methods set `bilevel = True`; AuxiliaryModel then updates their
  trainable weights every `upper_interval` steps by the implicit hypergradient
  of the dev loss (tfaux.hypergrad), and calls `after_upper_update`.

Strategies are Keras layers so that phi is saved with the model's weights.
"""

import dataclasses

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.upper import UpperSettings


@dataclasses.dataclass
class Context:
    """What a strategy may look at for one batch (all of it constant w.r.t. theta).

    losses:   [B, T] per-example task losses (detached), zero where masked.
    masks:    [B, T] 1 where the example has a label for the task.
    features: [B, T, d] encoder feature of example i for task k (detached).
    ids:      [B] example ids (index in the training split).
    """

    losses: tf.Tensor
    masks: tf.Tensor
    features: tf.Tensor
    ids: tf.Tensor

    @property
    def global_batch(self):
        return distribute.global_batch_size(tf.shape(self.losses)[0])


class Strategy(keras.layers.Layer):
    """Base: every labelled (example, task) pair weighted 1 (subclasses change this)."""

    bilevel = False
    persistent_tape = False
    logs_weights = False  # whether example_weights is the schedule (logged per task while training)
    upper_defaults = UpperSettings()  # bi-level methods: the reference code's update of phi (tfaux.upper)

    def setup(self, tasks, feature_dim, num_examples):
        """Create phi. tasks: primary first; num_examples: training-set size."""
        self.tasks = list(tasks)
        self.num_tasks = len(self.tasks)
        self.built = True

    def active_tasks(self):
        """Boolean per task: whether its head must run at all (STL skips auxiliaries)."""
        return [True] * self.num_tasks

    def example_weights(self, context):
        """w[i, k] >= 0 of each (example, task) pair; [B, T]."""
        return tf.ones_like(context.losses)

    def lower_loss(self, losses, context):
        """L_t = (1/B) sum_i sum_k m_ik w_ik l_ik  (seed 000, Eq. 3/4 form)."""
        weights = self.example_weights(context)
        return tf.reduce_sum(weights * losses * context.masks) / context.global_batch

    def lower_gradients(self, tape, loss, losses, context, variables):
        """Gradients of the lower objective for `variables` (shared first, then heads)."""
        del losses, context
        return tape.gradient(loss, variables.all)

    def after_upper_update(self):
        """Projection after each upper step (e.g. monotonicity constraints)."""
        return None


@dataclasses.dataclass
class ThetaVariables:
    """The task model's variables, grouped the way gradient-space methods need."""

    shared: list
    heads: list  # one list of variables per task, in task order

    @property
    def all(self):
        return self.shared + [v for head in self.heads for v in head]
