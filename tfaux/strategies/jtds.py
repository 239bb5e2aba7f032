"""JTDS: joint task and data scheduling (seed 000, Eq. 4).

    w_ik = softplus(alpha_k) * softplus(P_k^T c_ik + b^P_k) * sigmoid(a_k * lhat_ik + b_k)

alpha: task relation; P: task prototypes (one Linear(d, T) as in the reference
code); (a, b): per-task adaptive loss filter on the z-scored loss lhat. c and
lhat are constants for the scheduler. The paper writes sigma for every factor;
the reference code (MonoJoint) uses softplus for the first two, as we do.
O(d * T) parameters, independent of the training-set size.

normalize=True (method `jtds_normalized`, ours): in every batch each task's example factors
softplus(P_k^T c_ik) * sigmoid(a_k lhat_ik + b_k) are divided by their mean over the task's
labelled examples, and the task factor is taken relative to the primary task's,
softplus(alpha_k) / softplus(alpha_G). So the primary weights average 1 and task k's average
its relative task weight: phi decides which examples count more and how much each auxiliary
task counts, but can no longer rescale training as a whole. With the paper's form the
upper level uses that scale as a learning-rate knob (weights of ~50-500, then ~0 in long
runs: the reference code's collapse, benchmarks/README.md). Two other normalisations were
measured on MNIST and dropped: dividing by the mean over all (example, task) pairs made tasks
compete for a fixed total (rotation switched off within two epochs, training unstable);
dividing by the primary mean alone let the unnormalised prototypes inflate rotation ~3000x
within two epochs. Here a task's scale moves only through its one alpha_k.
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


def per_task_normalized(weights, masks):
    """w_ik / mean_j w_jk over task k's labelled examples of the whole (all-replica) batch, so
    each task's weights average 1 (a task without labels in the batch is left as it is)."""
    totals, counts = distribute.replica_sum([tf.reduce_sum(weights * masks, 0), tf.reduce_sum(masks, 0)])
    means = tf.where(counts > 0, totals / tf.maximum(counts, 1.0), 1.0)
    return weights / tf.maximum(means, 1e-30)[None, :]


class JTDS(Strategy):
    """Task-data scheduler of Eq. 4, learned by implicit hypergradients.

    use_task / use_feature / use_loss switch the three factors off for the
    paper's ablations: only-task = JTDS(use_feature=False, use_loss=False);
    w/o loss term = JTDS(use_loss=False); w/o feature term = JTDS(use_feature=False).
    normalize: per-batch, per-task normalised example factors (see the module docstring).
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
        if self.normalize:
            w = per_task_normalized(w, context.masks)
        if self.use_task:
            task = tf.nn.softplus(self.task_prior)
            w *= (task / task[0] if self.normalize else task)[None, :]
        return w

    def get_config(self):
        return {**super().get_config(), "use_task": self.use_task, "use_feature": self.use_feature,
                "use_loss": self.use_loss, "normalize": self.normalize, "seed": self.seed}
