"""kdt.callbacks: scheduler callbacks and the learning-rate finder.

The schedulers install a `kdt.schedules` schedule in the optimizer for the
duration of `fit()`, where Keras evaluates it from `optimizer.iterations`
inside the train step: exact at every step, also with `steps_per_execution`.
"""

from keras_dnntools.callbacks._fit_scope import release
from keras_dnntools.callbacks.learning_rate_finder import (
    LearningRateFinder,
    LRFinderResult,
    find_learning_rate,
)
from keras_dnntools.callbacks.schedulers import (
    ExponentialScheduler,
    OneCycleScheduler,
    PowerScheduler,
)
from keras_dnntools.callbacks.training_monitor import TrainingMonitor

__all__ = [
    "ExponentialScheduler",
    "LRFinderResult",
    "LearningRateFinder",
    "OneCycleScheduler",
    "PowerScheduler",
    "TrainingMonitor",
    "find_learning_rate",
    "release",
]
