"""Test set-up: two logical CPU devices, so MirroredStrategy runs as on two GPUs."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
except RuntimeError:  # TF already initialised by another plugin: tests needing two devices skip.
    pass

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data():
    """The real datasets beside the repository (../shared/data), or a skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data directory {SHARED_DATA} is absent (it lives beside the repository as ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def two_devices():
    """One MirroredStrategy over two logical CPUs for the whole session (strategies
    created one after another in a process can collide on collective-op keys)."""
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("two logical CPU devices could not be configured in this process")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


@pytest.fixture
def parse():
    """Parse the experiment binaries' absl flags in-process (apps.train defines them)."""
    from absl import flags

    from apps import train  # noqa: F401

    def _parse(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["apps.train", *args])
        return flags.FLAGS
    yield _parse
    flags.FLAGS.unparse_flags()
