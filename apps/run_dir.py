"""The --output_dir of one run: who owns it, whether it resumes, what is cleared.

Under --distribute=multi_worker only the chief (worker 0) claims and writes the folder; every
other worker reads the chief's resume state from it (`copy_resume_state`) and writes what it
must into a temporary folder of its own (`WorkerScratch`), removed when it ends.

A run holds an exclusive lock on `<output_dir>/.lock` while it runs (released by the
operating system when the process ends, killed or not), so a second run on the same folder
is refused instead of writing over the first one's files. `run.json` records the flags of the
run that owns the folder:
- an interrupted run (a backup, no metrics.json) resumes when started again with the same
  flags (--epochs may be raised); other flags are refused unless --overwrite;
- a finished or diverged run (metrics.json) is run again from scratch with the same flags;
  other flags are refused unless --overwrite;
- a fresh start (or --overwrite) first removes every output a run writes, so no file of an
  earlier run (another method's schedule.npz, its history.csv) is left next to the new ones;
- a folder that holds files but no run (no run.json, metrics.json or backup) is refused, even
  with --overwrite: a run never deletes files it did not write.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile

from tfaux import backup

OUTPUTS = ("metrics.json", "history.csv", "saved_model", "saved_model.partial", "schedule.npz",
           "schedule.partial.npz", "schedule_history.npz", "schedule_history.npz.partial.npz", "best.weights.h5",
           "best.partial.weights.h5", "backup", "logs", "run.json", "metrics.json.partial", "run.json.partial",
           "task_weights.md", "task_weights.md.partial")
# Files apps.compare writes into a run's folder before the run starts (they are tfaux's own).
COMPARE_FILES = ("command.txt", "compare.log")
# Flags that do not change what a run computes.
NOT_DEFINING = ("output_dir", "verbose", "overwrite", "distribute")


class OutputDirError(ValueError):
    """The folder cannot be used for this run; the message is one sentence."""


def checked_path(value):
    """The absolute --output_dir, refused when empty or when it is a file."""
    if not value.strip():
        raise OutputDirError("--output_dir is empty; name a folder for the run's outputs.")
    out = os.path.abspath(value)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputDirError(f"--output_dir={value} is a file, not a folder; choose another path.")
    parent = os.path.dirname(out)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise OutputDirError(f"--output_dir={value} lies under {parent}, which is a file; choose another path.")
    return out


def _lock(out):
    """An open file holding an exclusive, non-blocking flock on out/.lock (with our pid in it)."""
    handle = open(os.path.join(out, ".lock"), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise OutputDirError(f"--output_dir={out} is in use by another run (process {owner}); wait for it to "
                             "finish or choose another folder.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _owner_flags(out):
    """The flags of the run whose outputs are in `out` (run.json, else metrics.json), or None."""
    for name in ("run.json", "metrics.json"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            try:
                with open(path) as f:
                    return json.load(f)["flags"]
            except (OSError, ValueError, KeyError, TypeError):
                return {}  # unreadable: treated as another run's
    return None


def _differences(theirs, ours, ignore):
    """The flags both runs record with different values, --method first (a flag one method does not
    read is recorded by the other only: apps.flags.inapplicable)."""
    keys = sorted((set(theirs) & set(ours)) - set(ignore), key=lambda k: (k != "method", k))
    return [f"--{k}={theirs.get(k)} there, {ours.get(k)} now" for k in keys if theirs.get(k) != ours.get(k)]


def clear(out):
    """Remove every output a run writes in `out` (not the lock, not files of other tools)."""
    for name in OUTPUTS:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


class Claim:
    """Holds the folder for one run: `with Claim(out, flags, overwrite):` (the backup, kept when an
    interrupted run with these flags is continued, tells the run where to resume)."""

    def __init__(self, out, flags, overwrite=False):
        self.out, self.flags, self.overwrite = out, json.loads(json.dumps(flags)), overwrite
        self._handle = None

    def __enter__(self):
        try:
            os.makedirs(self.out, exist_ok=True)
            self._handle = _lock(self.out)
        except OSError as e:
            raise OutputDirError(f"--output_dir={self.out} cannot be used ({e.strerror or e}); choose a folder you "
                                 "can write.") from None
        try:
            self._decide()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _decide(self):
        finished = os.path.exists(os.path.join(self.out, "metrics.json"))
        interrupted = backup.finished_epochs(os.path.join(self.out, "backup")) > 0 and not finished
        others = sorted(set(os.listdir(self.out)) - {".lock", *COMPARE_FILES})
        if others and _owner_flags(self.out) is None and not interrupted:
            raise OutputDirError(f"--output_dir={self.out} holds files that no tfaux run wrote ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); a run never deletes them: choose an empty "
                                 "or new folder.")
        if (finished or interrupted) and not self.overwrite:  # a result or finished epochs to keep
            theirs = _owner_flags(self.out)
            if theirs is None:
                raise OutputDirError(f"--output_dir={self.out} holds a backup of an unknown run; pass --overwrite "
                                     "to replace it or choose another folder.")
            changed = _differences(theirs, self.flags, NOT_DEFINING + (("epochs",) if interrupted else ()))
            if changed:
                kind, advice = (("an interrupted", "rerun it with its own flags to resume it, ") if interrupted
                                else ("a finished", ""))
                raise OutputDirError(f"--output_dir={self.out} holds {kind} run with other flags "
                                     f"({'; '.join(changed[:3])}); {advice}pass --overwrite to replace it, or "
                                     "choose another folder.")
        if not interrupted or self.overwrite:
            clear(self.out)
        backup.write_json_atomically(os.path.join(self.out, "run.json"), {"flags": self.flags})

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.close()  # releases the flock
            self._handle = None
        return False


# What a run reads back when it resumes (the backup of its last finished epoch, the history so far).
RESUME_STATE = ("backup", "history.csv", "schedule_history.npz", "best.weights.h5")


class WorkerScratch:
    """`with WorkerScratch(out, index) as folder:` a temporary folder where a worker other than
    the chief writes whatever a run writes (Keras' multi-worker convention), removed at the end.
    Its path is a function of (out, index), so a worker killed without cleaning up has its
    leftover removed when it is started again."""

    def __init__(self, out, index):
        digest = hashlib.sha1(os.path.abspath(out).encode()).hexdigest()[:12]
        self.path = os.path.join(tempfile.gettempdir(), f"tfaux-worker{int(index)}-{digest}")

    def __enter__(self):
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path)
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def copy_resume_state(out, scratch):
    """Copy the chief's resume state (RESUME_STATE) from `out` into `scratch`, so that this
    worker resumes after the same epoch with the same history; nothing is written into `out`."""
    for name in RESUME_STATE:
        source = os.path.join(out, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(scratch, name))
        elif os.path.isfile(source):
            shutil.copy2(source, os.path.join(scratch, name))
