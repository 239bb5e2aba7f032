"""tfaux: auxiliary learning for Keras 3 / TensorFlow."""

from tfaux.tasks import Task, primary_task, ordered
