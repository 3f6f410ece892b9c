"""How the scheduler callbacks drive an optimizer at every step, from the inside.

A Python callback that sets `optimizer.learning_rate` in `on_train_batch_begin`
runs once per *execution*: with `compile(steps_per_execution=32)` the 31 other
steps keep a stale rate. So the callbacks evaluate their schedules inside the
compiled train step instead, as pure functions of the optimizer's iteration
count:

- For the duration of `fit()`, every optimizer that applies gradients (the
  optimizer itself; the inner one of a `LossScaleOptimizer`; each
  sub-optimizer of a `MultiOptimizer`) gets an `InstalledSchedule` as its
  learning rate. Keras calls it inside the step, before the update; it reads
  the step from the top-level optimizer's `iterations`.
- When momentum is cycled, SGD's `momentum` (or the Adam family's `beta_1`),
  a Python float that Keras reads when the step is traced, is replaced by a
  `ScheduledHyperparameter` variable that the installed schedule assigns
  inside the step, before the update reads it.
- The optimizer's own learning-rate variable stays in place, so
  `optimizer.variables`, checkpoints and `BackupAndRestore` files keep their
  layout; the installed schedule assigns it the rate of every step, so a
  checkpoint holds the rate of its latest step. On removal it becomes the
  optimizer's rate again; `momentum`/`beta_1` become Python floats again,
  with the value of the last step.
- While installed, the optimizer's `get_config()` reports those plain floats
  (the values of the latest step), so a model saved mid-run is a plain model.

Where Keras has no public route (swapping the object the optimizer evaluates
as its rate, an untracked stand-in for `momentum`), this goes through
`keras_dnntools._keras_compat`. What is installed is undone on every exit path
of `fit()`: see `keras_dnntools.callbacks._fit_scope`.

The step a schedule sees is counted from the start of the `fit()` call that
installed it: `t = iterations - first_step`, where `first_step` is the
optimizer's step at the first epoch of that call minus
`epoch * steps_per_epoch` (so `fit(initial_epoch=k)`, and a run that
`keras.callbacks.BackupAndRestore` resumes at epoch k, continue the schedule
where epoch k starts).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_dnntools import _keras_compat
from keras_dnntools._registry import PACKAGE
from keras_dnntools.schedules import OneCycleMomentum, OneCycleSchedule

MOMENTUM_ATTRIBUTES = ("beta_1", "momentum")
# Cycles up to this many steps are tabulated (16 MiB of float32 per table).
MAX_TABULATED_STEPS = 1 << 22


def _to_float(value: Any) -> float:
    return float(ops.convert_to_numpy(value))


class ScheduledHyperparameter(keras.Variable):
    """A scalar variable standing in for a float hyperparameter of an optimizer.

    Its value changes at every step, but Python comparisons with a number
    (`momentum != 0`, `momentum > 0`) answer with the value it was created
    with: optimizers such as SGD and RMSprop make those tests in Python, while
    tracing, to decide whether they use momentum at all.
    """

    def __init__(self, value: float, name: str) -> None:
        super().__init__(float(value), dtype="float32", trainable=False, name=name)
        self._structural_value = float(value)
        self._step_value = None

    def set_step_value(self, value: Any) -> None:
        """Gives the value of this train step to the optimizer's update.

        On TensorFlow the value stays a tensor of the step's graph, which the
        update reads through `.value` in that graph (and graphs nested in it):
        an assignment inside the step would cost ~10% of a small model's step
        with `steps_per_execution=32` (the variable's reads are ordered after
        it). Elsewhere, and in eager steps (`run_eagerly=True`), the
        variable is assigned; between steps its value is set from Python
        (`sync_rate_variable`).
        """
        if keras.backend.backend() == "tensorflow" and _inside_function():
            self._step_value = value
        else:
            self._step_value = None
            self.assign(value)

    @property
    def value(self) -> Any:
        step_value = self._step_value
        if step_value is not None and _in_graph_of(step_value):
            return step_value
        return super().value

    def _compare(self, other: Any, method: str) -> Any:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return getattr(self._structural_value, method)(float(other))
        return getattr(super(), method)(other)

    def __eq__(self, other: Any) -> Any:
        return self._compare(other, "__eq__")

    def __ne__(self, other: Any) -> Any:
        return self._compare(other, "__ne__")

    def __gt__(self, other: Any) -> Any:
        return self._compare(other, "__gt__")

    def __ge__(self, other: Any) -> Any:
        return self._compare(other, "__ge__")

    def __lt__(self, other: Any) -> Any:
        return self._compare(other, "__lt__")

    def __le__(self, other: Any) -> Any:
        return self._compare(other, "__le__")

    __hash__ = keras.Variable.__hash__


def _inside_function() -> bool:
    import tensorflow as tf

    return tf.inside_function()


def _in_graph_of(tensor: Any) -> bool:
    """Whether TensorFlow is tracing `tensor`'s graph or a graph nested in it."""
    import tensorflow as tf

    if not _inside_function():
        return False
    graph = tf.compat.v1.get_default_graph()
    while graph is not None:
        if graph is tensor.graph:
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


def _lookup(table: Any, index: Any) -> Any:
    """`table[index]` for a step count `index` in `[0, len(table))`.

    On TensorFlow a bare `tf.gather`: `ops.take` adds six ops per lookup to
    map negative indices (which a step count never is), and in a train step
    looped by `steps_per_execution` each op costs microseconds per step.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(table, index)
    return ops.take(table, index)


def _table(schedule: Any) -> Any:
    """`schedule` at every step of its cycle, as a float32 tensor."""
    steps = np.arange(schedule.total_steps)
    return ops.convert_to_tensor(ops.convert_to_numpy(schedule(steps)), "float32")


@dataclasses.dataclass
class _Binding:
    """What an installed schedule drives inside the train step.

    A 1cycle (rate and momentum over the same cycle) is tabulated: the same
    float32 values as the schedules, evaluated once on every step of the
    cycle, so that a train step pays one gather per value instead of the ~20
    scalar ops of the phase arithmetic (measurable with
    `steps_per_execution=32` and a small model).
    """

    iterations: Any
    installed_step: int  # the optimizer's step when the schedule was installed
    first_step: int  # the optimizer's step that the schedule counts as t = 0
    rate_variable: Any
    momentum_attribute: str | None = None
    momentum_schedule: Any = None
    momentum_variable: Any = None
    tables: tuple | None = None  # (rate, momentum or None) at steps 0..n-1


@keras.saving.register_keras_serializable(package=PACKAGE)
class InstalledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule installed in an optimizer by a `kdt.callbacks` scheduler.

    Its value at step `t` is `scale * schedule(t)` (with `steps_per_epoch`:
    `scale * schedule(t // steps_per_epoch)`, the schedule counting epochs).
    While installed it reads the step from the top-level optimizer's
    `iterations` and also assigns the scheduled momentum. Its config holds
    only the schedule, the scale and `steps_per_epoch`.
    """

    def __init__(
        self,
        schedule: Any,
        scale: float = 1.0,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.scale = float(scale)
        self.steps_per_epoch = steps_per_epoch
        self.binding: _Binding | None = None

    def scheduled_step(self, step: Any) -> Any:
        """The step (or epoch) the wrapped schedules are evaluated at."""
        if self.steps_per_epoch is None:
            return step
        return ops.floor_divide(step, self.steps_per_epoch)

    def _scaled(self, rate: Any) -> Any:
        return rate if self.scale == 1.0 else rate * self.scale

    def values_at(self, step: int) -> tuple[float, float | None]:
        """The rate (and momentum) of optimizer step `step`, without side effects."""
        if self.binding is not None:
            step = max(step - self.binding.first_step, 0)
        scheduled = self.scheduled_step(step)
        rate = _to_float(self.schedule(scheduled)) * self.scale
        binding = self.binding
        if binding is None or binding.momentum_schedule is None:
            return rate, None
        return rate, _to_float(binding.momentum_schedule(scheduled))

    def latest_values(self) -> tuple[float, float | None]:
        """The rate and momentum of the last step taken since installation."""
        binding = self.binding
        last_step = int(ops.convert_to_numpy(binding.iterations)) - 1
        if last_step >= binding.installed_step:
            return self.values_at(last_step)
        momentum = binding.momentum_variable
        return (
            _to_float(binding.rate_variable),
            None if momentum is None else _to_float(momentum),
        )

    def __call__(self, step: Any) -> Any:
        binding = self.binding
        if binding is None:
            return self._scaled(self.schedule(self.scheduled_step(step)))
        step = binding.iterations
        if binding.first_step:  # read while tracing: set before the first step
            step = ops.maximum(step - binding.first_step, 0)
        step = self.scheduled_step(step)
        if binding.tables is not None:
            rate_table, momentum_table = binding.tables
            step = ops.minimum(step, int(rate_table.shape[0]) - 1)
            rate = self._scaled(_lookup(rate_table, step))
            momentum = None if momentum_table is None else _lookup(momentum_table, step)
        else:
            rate = self._scaled(ops.cast(self.schedule(step), "float32"))
            momentum = None
            if binding.momentum_variable is not None:
                momentum = ops.cast(binding.momentum_schedule(step), "float32")
        # The optimizer's own rate variable is assigned from Python at the end
        # of each epoch (`sync_rate_variable`), not here: one op less per step.
        if momentum is not None:
            binding.momentum_variable.set_step_value(momentum)
        return rate

    def sync_rate_variable(self) -> None:
        """Gives the rate (and momentum) variables the values of the latest step.

        On JAX the momentum variable's in-step assignments are not kept (it is
        not part of the optimizer's state), so it is set from Python here.
        """
        rate, momentum = self.latest_values()
        self.binding.rate_variable.assign(rate)
        if momentum is not None:
            self.binding.momentum_variable.assign(momentum)

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "scale": self.scale,
            "steps_per_epoch": self.steps_per_epoch,
        }


def leaf_optimizers(optimizer: Any) -> list[Any]:
    """The optimizers that apply gradients: through loss scaling and MultiOptimizer."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return list(optimizer.optimizers)
    return [optimizer]


def leaves_and_scales(model: Any, owner: str) -> tuple[list[Any], list[float]]:
    """The leaf optimizers of `model`, and the scale of each one's schedule.

    The ratio rule: the leaf with the largest rate now follows the schedule
    (scale 1), every other one the schedule times its rate / that rate.
    Removes what an interrupted `fit()` left installed.

    Raises:
        ValueError: if the model is not compiled, a rate is a schedule, or no
            rate is positive.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"{owner} needs a compiled model: call `model.compile(optimizer=...)` "
            "before `fit()`."
        )
    leaves = leaf_optimizers(optimizer)
    rates = []
    for leaf in leaves:
        remove(leaf)
        current = _keras_compat.learning_rate_holder(leaf)
        if not isinstance(current, keras.Variable):
            raise ValueError(
                f"{owner} sets the learning rate itself, but the optimizer "
                f"{leaf.name!r} ({type(leaf).__name__}) already has a learning-rate "
                f"schedule: learning_rate={current!r}. Compile with a float "
                "`learning_rate` to use this callback, or keep the schedule in the "
                "optimizer and drop the callback."
            )
        rates.append(_to_float(current))
    largest = max(rates)
    if largest <= 0:
        raise ValueError(
            f"{owner} keeps the ratios between the sub-optimizers' learning rates, "
            f"but none of them is positive. Received: learning rates {rates}."
        )
    return leaves, [rate / largest for rate in rates]


def momentum_attribute(optimizer: Any) -> str | None:
    """`"beta_1"` (Adam family), `"momentum"` (SGD-like, when > 0), or None."""
    for name in MOMENTUM_ATTRIBUTES:
        value = getattr(optimizer, name, None)
        if isinstance(value, ScheduledHyperparameter):
            return name
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if name == "momentum" and value <= 0:
                return None
            return name
    return None


def installed_schedule(optimizer: Any) -> InstalledSchedule | None:
    """The schedule a scheduler installed in `optimizer` (a leaf), if any."""
    current = _keras_compat.learning_rate_holder(optimizer)
    if isinstance(current, InstalledSchedule) and current.binding is not None:
        return current
    return None


def _plain_config(optimizer: Any, installed: InstalledSchedule) -> dict[str, Any]:
    """`optimizer.get_config()` while a schedule is installed: plain floats.

    A model saved mid-run (e.g. by `ModelCheckpoint`) then loads with a float
    rate and momentum, the values of the latest step, as after a finished
    `fit()`; its restored `iterations` let a scheduler continue the schedule.
    """
    config = type(optimizer).get_config(optimizer)
    rate, momentum = installed.latest_values()
    config["learning_rate"] = rate
    if momentum is not None:
        config[installed.binding.momentum_attribute] = momentum
    return config


def remove(optimizer: Any) -> None:
    """Gives a leaf optimizer back its float rate (and float momentum)."""
    installed = installed_schedule(optimizer)
    if installed is None:
        return
    binding = installed.binding
    rate, momentum = installed.latest_values()
    binding.rate_variable.assign(rate)
    _keras_compat.swap_learning_rate_holder(optimizer, binding.rate_variable)
    if momentum is not None:
        _keras_compat.set_untracked_attribute(
            optimizer, binding.momentum_attribute, momentum
        )
    _keras_compat.remove_instance_attribute(optimizer, "get_config")
    if binding.momentum_variable is not None:
        binding.momentum_variable._step_value = None  # a graph's tensor
    installed.binding = None


def tabulate(schedule: Any, momentum_schedule: Any, steps_per_epoch: Any) -> Any:
    """The `tables` argument of `install`: both schedules tabulated, when they
    are one 1cycle counted in steps; None otherwise."""
    if steps_per_epoch is not None or not isinstance(schedule, OneCycleSchedule):
        return None
    total_steps = schedule.total_steps
    if total_steps > MAX_TABULATED_STEPS:
        return None
    if momentum_schedule is None:
        return _table(schedule), None
    if (
        isinstance(momentum_schedule, OneCycleMomentum)
        and momentum_schedule.total_steps == total_steps
    ):
        return _table(schedule), _table(momentum_schedule)
    return None


def install(
    optimizer: Any,
    *,
    iterations: Any,
    schedule: Any,
    scale: float = 1.0,
    steps_per_epoch: int | None = None,
    momentum_schedule: Any = None,
    tables: Any = None,
) -> InstalledSchedule:
    """Installs `schedule` (and `momentum_schedule`) in a leaf optimizer.

    The caller has checked that the rate is a variable and that the optimizer
    has a momentum when `momentum_schedule` is given. `tables` (from
    `tabulate`) can be shared by the sub-optimizers of a MultiOptimizer.
    """
    remove(optimizer)
    first_step = int(ops.convert_to_numpy(iterations))
    installed = InstalledSchedule(schedule, scale, steps_per_epoch)
    binding = _Binding(
        iterations=iterations,
        installed_step=first_step,
        first_step=first_step,
        rate_variable=_keras_compat.learning_rate_holder(optimizer),
        tables=tables,
    )
    if momentum_schedule is not None:
        name = momentum_attribute(optimizer)
        variable = ScheduledHyperparameter(float(getattr(optimizer, name)), name)
        _keras_compat.set_untracked_attribute(optimizer, name, variable)
        binding.momentum_attribute = name
        binding.momentum_schedule = momentum_schedule
        binding.momentum_variable = variable
    installed.binding = binding
    _keras_compat.swap_learning_rate_holder(optimizer, installed)
    _keras_compat.set_untracked_attribute(
        optimizer, "get_config", functools.partial(_plain_config, optimizer, installed)
    )
    return installed
