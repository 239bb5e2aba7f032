"""Crash-safe epoch backups: a run killed at any moment resumes after its last finished epoch.

Keras' BackupAndRestore writes `latest.weights.h5` in place and the epoch number in a second
file, so a kill while it writes leaves an unreadable backup (every rerun fails in h5py), and a
kill between the two writes resumes from the wrong epoch without a word. Here one epoch's
backup is a folder `epoch-NNNNNN/` holding the whole state (`state.weights.h5`: θ, the
scheduler, both optimizers, strategy state — everything `model.save_weights` writes), and
`latest.json` names the newest complete one. `latest.json` is replaced atomically
(`os.replace`) only after the folder is written, marked `complete` and synced, so at every instant
it names a complete backup or none; older folders are removed afterwards. Without `latest.json`
(deleted by hand), the newest folder marked complete is used, with a warning.
"""

import json
import os
import shutil
import time

import keras

LATEST = "latest.json"
# Test hook, "<epochs>:<seconds>": sleep that long in the middle of writing the backup of that
# many finished epochs (after its state file, before the switch), with a file `writing` in the
# backup folder meanwhile, so that a test can kill the process inside the write window.
PAUSE_ENV = "TFAUX_TEST_BACKUP_PAUSE"


class BackupError(RuntimeError):
    """A backup that cannot be read; the message is one sentence saying what to do."""


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path, write, partial=None):
    """Write a file so that readers see the old one or the new one, never a partial one:
    `write(partial)` (default partial: `<path>.partial`, in the same folder), fsync, os.replace
    onto `path`, fsync of the folder."""
    partial = partial or f"{path}.partial"
    write(partial)
    _fsync(partial)
    os.replace(partial, path)
    _fsync(os.path.dirname(os.path.abspath(path)))


def write_json_atomically(path, value):
    """`value` as JSON in `path` (NaN and infinity refused), replaced atomically."""
    write_text_atomically(path, json.dumps(value, indent=2, allow_nan=False))


def write_text_atomically(path, text):
    """The string `text` in `path`, replaced atomically."""
    def write(partial):
        with open(partial, "w") as f:
            f.write(text)
    replace_atomically(path, write)


def finished_epochs(backup_dir):
    """Epochs finished by the interrupted run whose backup lies in backup_dir; 0 without one."""
    latest = _read_latest(backup_dir)
    return 0 if latest is None else latest["epoch"]


COMPLETE = "complete"  # marker written in an epoch folder once its state is synced


def _newest_complete(backup_dir):
    """{"epoch", "folder"} of the newest epoch folder holding the COMPLETE marker, or None."""
    if not os.path.isdir(backup_dir):
        return None
    found = sorted(name for name in os.listdir(backup_dir)
                   if name.startswith("epoch-") and name[6:].isdigit()
                   and os.path.exists(os.path.join(backup_dir, name, COMPLETE)))
    if not found:
        return None
    print(f"WARNING: tfaux: {os.path.join(backup_dir, LATEST)} is missing; resuming from the newest complete "
          f"backup, {found[-1]}.")
    return {"epoch": int(found[-1][6:]), "folder": os.path.join(backup_dir, found[-1])}


def _read_latest(backup_dir):
    path = os.path.join(backup_dir, LATEST)
    if not os.path.exists(path):
        return _newest_complete(backup_dir)
    try:
        with open(path) as f:
            latest = json.load(f)
        epoch, folder = int(latest["epoch"]), str(latest["folder"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BackupError(f"the backup index {path} is unreadable ({e}); delete {backup_dir} to start the run "
                          "over.") from None
    return {"epoch": epoch, "folder": os.path.join(backup_dir, folder)}


class EpochBackup(keras.callbacks.Callback):
    """Back up the whole training state at the end of every epoch and restore it when training
    starts again (sets the model's initial epoch, like keras.callbacks.BackupAndRestore).

    delete_when_done: remove the backup at the end of training. Off by default: the caller
    removes it once the run's results are safely written (`remove`), so that a kill between
    the last epoch and the results still resumes without retraining."""

    def __init__(self, backup_dir, delete_when_done=False):
        super().__init__()
        self.backup_dir = os.path.abspath(backup_dir)
        self.delete_when_done = delete_when_done

    def on_train_begin(self, logs=None):
        self.restore()

    def restore(self):
        """Load the newest complete backup into the model (set_model first); returns its epoch count."""
        latest = _read_latest(self.backup_dir)
        if latest is None:
            return 0
        path = os.path.join(latest["folder"], "state.weights.h5")
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(path)
        except Exception as e:  # h5py/OSError/ValueError: truncated, corrupt or from another model
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BackupError(f"the backup of epoch {latest['epoch']} in {self.backup_dir} cannot be read "
                              f"({reason}); delete {self.backup_dir} to start the run over.") from None
        self.model._initial_epoch = latest["epoch"]
        return latest["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1)

    def save(self, epochs):
        """Write the backup of `epochs` finished epochs, then switch `latest.json` to it."""
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epochs:06d}"
        folder = os.path.join(self.backup_dir, name)
        shutil.rmtree(folder, ignore_errors=True)  # a half-written one from a killed run
        os.makedirs(folder)
        state = os.path.join(folder, "state.weights.h5")
        self.model.save_weights(state)
        _fsync(state)
        open(os.path.join(folder, COMPLETE), "w").close()
        _fsync(folder)
        at, _, pause = os.environ.get(PAUSE_ENV, "").partition(":")
        if at and int(at) == epochs:
            marker = os.path.join(self.backup_dir, "writing")
            open(marker, "w").close()
            time.sleep(float(pause))
            os.remove(marker)
        write_json_atomically(os.path.join(self.backup_dir, LATEST), {"epoch": epochs, "folder": name})
        for other in os.listdir(self.backup_dir):
            if other.startswith("epoch-") and other != name:
                shutil.rmtree(os.path.join(self.backup_dir, other), ignore_errors=True)

    def on_train_end(self, logs=None):
        if self.delete_when_done:
            self.remove()

    def remove(self):
        shutil.rmtree(self.backup_dir, ignore_errors=True)


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best epoch by `monitor` (seed 000, Eq. 1) in `path`, replaced
    atomically (keras' ModelCheckpoint writes in place: a kill mid-write leaves a corrupt file).

    best: the best value reached before a resume (None: none yet). NaN values never count."""

    def __init__(self, path, monitor, mode="max", best=None):
        super().__init__()
        if not str(path).endswith(".weights.h5"):
            raise ValueError(f"path must end in .weights.h5, got {path}.")
        self.path, self.monitor, self.mode, self.best = str(path), monitor, mode, best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or value != value:
            return
        value = float(value)
        if self.best is not None and not (value > self.best if self.mode == "max" else value < self.best):
            return
        self.best = value
        replace_atomically(self.path, self.model.save_weights,
                           partial=self.path[:-len(".weights.h5")] + ".partial.weights.h5")
