"""absl binaries, one per experiment: flags -> config -> fit -> metrics.json."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


def _import_tensorflow_quietly():
    """Import TensorFlow and probe its devices with the C-level stderr closed: its CUDA / oneDNN
    notices are written before its logging is initialised, so no log level hides them
    (--verbose=2 shows them).
    A failing import still raises, with its traceback, after stderr is back."""
    if "--verbose=2" in sys.argv or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow
        tensorflow.config.list_physical_devices()  # the CUDA probe, which logs its failure on a CPU machine
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
