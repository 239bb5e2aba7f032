"""tfaux: auxiliary learning for Keras 3 / TensorFlow.

Train a primary task with auxiliary tasks, where how much each task and each
example counts is itself learned (JTDS, N-JTDS, AuxiLearn, GCS, ...).
"""

from tfaux import hypergrad, strategies, upper
from tfaux import callbacks, models, schedule
from tfaux.export import export_primary, load_serving
from tfaux.model import AuxiliaryModel
from tfaux.tasks import Task, ordered, primary_task

__all__ = ["AuxiliaryModel", "Task", "export_primary", "load_serving", "hypergrad", "strategies", "upper",
           "ordered", "primary_task", "models", "schedule", "callbacks"]
