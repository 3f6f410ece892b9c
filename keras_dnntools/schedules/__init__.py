"""kdt.schedules: learning-rate (and momentum) schedules, pure functions of the step.

Each schedule is a `keras.optimizers.schedules.LearningRateSchedule` with a
complete JSON config, registered for `.keras` saving. Pass one as an
optimizer's `learning_rate`, or let the callbacks of `kdt.callbacks` install
it for a `fit()` call.
"""

from keras_dnntools.schedules.exponential import ExponentialSchedule
from keras_dnntools.schedules.one_cycle import OneCycleMomentum, OneCycleSchedule
from keras_dnntools.schedules.piecewise import PiecewiseConstantSchedule
from keras_dnntools.schedules.power import PowerSchedule

__all__ = [
    "ExponentialSchedule",
    "OneCycleMomentum",
    "OneCycleSchedule",
    "PiecewiseConstantSchedule",
    "PowerSchedule",
]
