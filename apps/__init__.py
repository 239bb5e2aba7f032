"""absl binaries, one per experiment: flags -> config -> fit -> metrics.json."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
