"""tfaux: auxiliary learning for Keras 3 / TensorFlow.

Train a primary task with auxiliary tasks, where how much each task and each
example counts is itself learned (JTDS, N-JTDS, AuxiLearn), and the loss-balancing and
gradient-space baselines the papers compare against (Uncertainty, DWA, GradNorm, MGDA, PCGrad, ...).
"""

from tfaux import hypergrad, solvers, strategies, task_gradients, upper
from tfaux import backup, callbacks, models, schedule
from tfaux.export import export_primary, load_serving
from tfaux.model import AuxiliaryModel
from tfaux.tasks import Task, ordered, primary_task, target_tasks

__all__ = ["AuxiliaryModel", "Task", "export_primary", "load_serving", "hypergrad", "solvers", "strategies",
           "task_gradients", "upper", "ordered", "primary_task", "target_tasks", "models", "schedule", "callbacks",
           "backup"]
