"""JTDS: joint task and data scheduling (seed 000, Eq. 4).

    w_ik = softplus(alpha_k) * softplus(P_k^T c_ik + b^P_k) * sigmoid(a_k * lhat_ik + b_k)

alpha: task relation; P: task prototypes (one Linear(d, T) as in the reference
code); (a, b): per-task adaptive loss filter on the z-scored loss lhat. c and
lhat are constants for the scheduler. The paper writes sigma for every factor;
the reference code (MonoJoint) uses softplus for the first two, as we do.
O(d * T) parameters, independent of the training-set size.

normalize=True (method `jtds_normalized`, ours) divides every w_ik of a batch by the mean of w
over the batch's labelled (example, task) pairs, so they average 1. Scaling every weight by
one factor leaves theta*(phi) unchanged, so the exact implicit gradient along that direction
is zero; the truncated Neumann series (a damped inverse) gives it a "bigger / smaller step"
signal instead, which the paper's form follows: weights grow to ~100 early and, once training
on the primary task stops helping the dev loss, the primary weights fall ~500x (MNIST, 40%
noise, epochs 9-11: the reference code's collapse; benchmarks/README.md). Normalised, phi can
only move weight between examples and tasks. Measured alternatives, dropped: dividing by the
primary task's mean weight only (rotation inflated ~3000x within two epochs) and per-task
normalisation with relative task weights (rotation weight concentrated on a few examples,
validation accuracy 3-10 points lower).
"""

import keras
import tensorflow as tf

from tfaux import distribute
from tfaux.strategies.base import Strategy


def normalized_losses(losses, masks, eps=1e-6):
    """lhat_ik = (l_ik - mean_k) / (std_k + eps), per task over the labelled
    examples of the whole (all-replica) batch; std is the unbiased estimate."""
    count, total, squares = distribute.replica_sum([
        tf.reduce_sum(masks, 0), tf.reduce_sum(masks * losses, 0),
        tf.reduce_sum(masks * tf.square(losses), 0)])
    n = tf.maximum(count, 1.0)
    mean = total / n
    variance = tf.maximum(squares - n * tf.square(mean), 0.0) / tf.maximum(n - 1.0, 1.0)
    return (losses - mean) / (tf.sqrt(variance) + eps)


def pair_normalized(weights, masks):
    """w_ik / mean of w over the labelled (example, task) pairs of the whole (all-replica)
    batch, so that they average 1."""
    total, count = distribute.replica_sum([tf.reduce_sum(weights * masks), tf.reduce_sum(masks)])
    return weights * tf.maximum(count, 1.0) / tf.maximum(total, 1e-30)


@keras.saving.register_keras_serializable(package="tfaux")
class JTDS(Strategy):
    """Task-data scheduler of Eq. 4, learned by implicit hypergradients.

    use_task / use_feature / use_loss switch the three factors off for the
    paper's ablations: only-task = JTDS(use_feature=False, use_loss=False);
    w/o loss term = JTDS(use_loss=False); w/o feature term = JTDS(use_feature=False).
    normalize: weights of every batch average 1 over its labelled pairs (module docstring).
    """

    bilevel = True
    logs_weights = True

    def __init__(self, use_task=True, use_feature=True, use_loss=True, normalize=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.use_task, self.use_feature, self.use_loss = use_task, use_feature, use_loss
        self.normalize = normalize
        self.seed = seed

    def setup(self, tasks, feature_dim, num_examples):
        super().setup(tasks, feature_dim, num_examples)
        t = self.num_tasks
        if self.use_task:
            self.task_prior = self.add_weight(shape=(t,), initializer="ones", name="task_prior")
        if self.use_feature:
            self.prototypes = self.add_weight(
                shape=(feature_dim, t), name="prototypes",
                initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=self.seed))
            self.prototype_bias = self.add_weight(shape=(t,), initializer="zeros", name="prototype_bias")
        if self.use_loss:
            self.loss_scale = self.add_weight(
                shape=(t,), name="loss_scale",
                initializer=keras.initializers.RandomUniform(0.0, 0.05, seed=self.seed + 1))
            self.loss_shift = self.add_weight(shape=(t,), initializer="zeros", name="loss_shift")

    def example_weights(self, context):
        w = tf.ones_like(context.losses)
        if self.use_feature:
            relation = tf.einsum("bkd,dk->bk", context.features, self.prototypes) + self.prototype_bias
            w *= tf.nn.softplus(relation)
        if self.use_loss:
            lhat = normalized_losses(context.losses, context.masks)
            w *= tf.sigmoid(self.loss_scale * lhat + self.loss_shift)
        if self.use_task:
            w *= tf.nn.softplus(self.task_prior)[None, :]
        return pair_normalized(w, context.masks) if self.normalize else w

    def get_config(self):
        return {**super().get_config(), "use_task": self.use_task, "use_feature": self.use_feature,
                "use_loss": self.use_loss, "normalize": self.normalize, "seed": self.seed}
