"""Keras callbacks for looking at what a scheduler learns while it trains.

ScheduleRecorder keeps, after every epoch, the effective weights
(`tfaux.schedule.example_weights`) of a fixed, seeded sample of training examples
on every task (seed 000, Fig. 4) and, for JTDS, its loss-filter parameters
(a_k, b_k) of sigmoid(a_k * lhat + b_k) (Fig. 6).
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from tfaux import backup, schedule


class ScheduleRecorder(keras.callbacks.Callback):
    """Record the schedule of a sample of training examples at the end of every epoch.

    dataset:      batches of the data contract covering the training split, unshuffled
                  and unaugmented (`data.train_eval(256)`). The weights are computed on the
                  whole of it and then restricted to the sample, exactly as
                  `tfaux.schedule.example_weights(model, dataset, num_examples)[ids]`:
                  JTDS z-scores losses within a batch, so a weight depends on the batch
                  it is computed in, and only the full pass matches `schedule.npz`.
                  This costs one inference pass over the training split per epoch.
    num_examples: training-set size (ids are in [0, num_examples)).
    sample:       how many example ids to follow (all tasks of each); at most num_examples.
    seed:         the sample is `np.random.default_rng(seed).choice(...)`, sorted.
    corrupted:    optional [num_examples] bool array (primary label corrupted).
    labelled:     optional [num_examples] bool array (primary label present); the mean
                  primary weight is taken over labelled examples only.
    log_dir:      if given, per-epoch scalars go to TensorBoard there (tf.summary):
                  `schedule/mean_weight/<task>` and, when some examples are corrupted,
                  `schedule/primary_weight_corrupted` / `schedule/primary_weight_clean`
                  (means over the whole training split) and `schedule/primary_auc`.

    path:         if given, `history()` is written there (npz) after every epoch, so an
                  interrupted run keeps what it recorded; `resume(e)` reads it back.

    `history()` returns a dict of arrays (see its docstring), ready for `np.savez`.
    """

    def __init__(self, dataset, num_examples, sample=64, seed=0, corrupted=None, labelled=None,
                 log_dir=None, path=None):
        super().__init__()
        num_examples = int(num_examples)
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}.")
        if int(sample) < 1:
            raise ValueError(f"sample must be positive, got {sample}.")
        self.dataset = dataset
        self.num_examples = num_examples
        self.ids = np.sort(np.random.default_rng(seed).choice(num_examples, min(int(sample), num_examples),
                                                              replace=False)).astype(np.int64)
        self.corrupted = None if corrupted is None else self._flags(corrupted, "corrupted")
        self.labelled = None if labelled is None else self._flags(labelled, "labelled")
        self.log_dir = log_dir
        self.path = path
        self._writer = None
        self._epochs, self._weights, self._scale, self._shift, self._auc = [], [], [], [], []
        self.seconds = 0.0

    def _flags(self, values, name):
        values = np.asarray(values).astype(bool)
        if values.shape != (self.num_examples,):
            raise ValueError(f"{name} must have shape ({self.num_examples},), got {values.shape}.")
        return values

    # ------------------------------------------------------------------ keras hooks
    def on_epoch_end(self, epoch, logs=None):
        start = time.time()
        weights = schedule.example_weights(self.model, self.dataset, self.num_examples)
        self._epochs.append(epoch + 1)
        self._weights.append(weights[self.ids])
        self._auc.append(self.clean_vs_corrupted_auc(weights))
        scheduler = self.model.method
        if getattr(scheduler, "loss_scale", None) is not None:
            self._scale.append(np.array(keras.ops.convert_to_numpy(scheduler.loss_scale), np.float32))
            self._shift.append(np.array(keras.ops.convert_to_numpy(scheduler.loss_shift), np.float32))
        if self.log_dir:
            self._summarize(epoch + 1, weights)
        self.seconds += time.time() - start
        if self.path:
            history = self.history()
            backup.replace_atomically(self.path, lambda partial: np.savez_compressed(partial, **history),
                                      partial=f"{self.path}.partial.npz")

    def resume(self, epochs):
        """Continue the history that an interrupted run saved at `path`: keep its entries of
        epochs 1..`epochs` (the ones its backup finished) and drop the rest."""
        self._epochs, self._weights, self._scale, self._shift, self._auc = [], [], [], [], []
        if not self.path or epochs < 1 or not os.path.exists(self.path):
            return
        saved = np.load(self.path)
        if not np.array_equal(saved["ids"], self.ids):
            raise ValueError(f"{self.path} follows other examples (another seed or dataset); delete it.")
        keep = saved["epochs"] <= epochs
        self._epochs = [int(e) for e in saved["epochs"][keep]]
        self._weights = list(saved["weights"][keep])
        self._auc = list(saved["primary_auc"][keep]) if "primary_auc" in saved else [np.nan] * len(self._epochs)
        if "loss_scale" in saved:
            self._scale, self._shift = list(saved["loss_scale"][keep]), list(saved["loss_shift"][keep])
        self.seconds = float(saved["seconds"])

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # ------------------------------------------------------------------ outputs
    def clean_vs_corrupted_auc(self, weights):
        """ROC AUC of clean over corrupted labelled examples by primary weight, over the whole
        training split (1: every clean example outweighs every corrupted one); NaN without both."""
        if self.corrupted is None:
            return np.nan
        labelled = np.ones_like(self.corrupted) if self.labelled is None else self.labelled
        clean = ~self.corrupted[labelled]
        if clean.all() or not clean.any() or not np.isfinite(weights[labelled, 0]).all():
            return np.nan  # (non-finite weights: a diverged run, which DivergenceMonitor reports)
        return float(roc_auc_score(clean, weights[labelled, 0]))

    def _summarize(self, step, weights):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            for k, task in enumerate(self.model.tasks):
                column = weights[:, k]
                if k == 0 and self.labelled is not None and self.labelled.any():
                    column = column[self.labelled]
                tf.summary.scalar(f"schedule/mean_weight/{task.name}", float(column.mean()), step=step)
            if self.corrupted is not None and self.corrupted.any():
                primary = weights[:, 0]
                clean = ~self.corrupted if self.labelled is None else (~self.corrupted & self.labelled)
                tf.summary.scalar("schedule/primary_weight_corrupted", float(primary[self.corrupted].mean()),
                                  step=step)
                if clean.any():
                    tf.summary.scalar("schedule/primary_weight_clean", float(primary[clean].mean()), step=step)
                    tf.summary.scalar("schedule/primary_auc", self._auc[-1], step=step)
        self._writer.flush()

    def history(self):
        """dict of arrays:
        weights [E, S, T] (epoch, sampled example, task), ids [S], epochs [E] (1-based),
        tasks [T] (names, primary first), seconds (time spent recording);
        corrupted [S] / labelled [S] for the sampled ids when given;
        primary_auc [E]: clean-vs-corrupted AUC of the primary weights over the whole training
        split (NaN when no labels are corrupted);
        loss_scale [E, T] (a_k) and loss_shift [E, T] (b_k) when the scheduler has a
        JTDS loss filter.
        """
        tasks = [t.name for t in self.model.tasks] if self.model is not None else []
        out = {
            "weights": (np.stack(self._weights) if self._weights
                        else np.zeros((0, len(self.ids), len(tasks)), np.float32)),
            "ids": self.ids.copy(),
            "epochs": np.array(self._epochs, np.int64),
            "primary_auc": np.array(self._auc, np.float64),
            "tasks": np.array(tasks),
            "seconds": np.float64(self.seconds),
        }
        if self.corrupted is not None:
            out["corrupted"] = self.corrupted[self.ids]
        if self.labelled is not None:
            out["labelled"] = self.labelled[self.ids]
        if self._scale:
            out["loss_scale"] = np.stack(self._scale)
            out["loss_shift"] = np.stack(self._shift)
        return out


class DivergenceMonitor(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is not finite, and remember where
    (`diverged`: None, or {"epoch": e, "step": s, "loss": value}; epoch and step from 1).
    Keras' TerminateOnNaN stops too, but says nothing the caller can act on."""

    def __init__(self):
        super().__init__()
        self.diverged = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or self.diverged is not None:
            return
        loss = float(np.asarray(loss))
        if not np.isfinite(loss):
            self.diverged = {"epoch": self._epoch + 1, "step": int(batch) + 1, "loss": str(loss)}
            self.model.stop_training = True
