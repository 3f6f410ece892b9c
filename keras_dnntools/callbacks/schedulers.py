"""Scheduler callbacks: install a schedule in the optimizer for one `fit()` call."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_dnntools._registry import public
from keras_dnntools._validation import check_bool, check_choice, check_int
from keras_dnntools.callbacks import _installation, _rate_owners
from keras_dnntools.schedules import (
    ExponentialSchedule,
    OneCycleMomentum,
    OneCycleSchedule,
    PowerSchedule,
)

UPDATES = ("batch", "epoch")

_HOW_IT_WORKS = """
    How it works: at the start of `fit()` the callback installs the schedule
    in the optimizer (every sub-optimizer of a `MultiOptimizer`, the inner
    optimizer of a `LossScaleOptimizer`), where Keras evaluates it inside the
    compiled train step from `optimizer.iterations`: the rate used at every
    optimizer step is exact, also with `compile(steps_per_execution=N)`, and
    the callback keeps no step counter of its own. The schedule's step `t`
    counts from the first step of epoch 0 of the `fit()` call: every `fit()`
    starts the schedule again (a reused callback starts a new cycle), and
    `fit(..., initial_epoch=k)`, or a run that
    `keras.callbacks.BackupAndRestore` resumes at epoch k, continues it where
    epoch k starts (`t = k * steps_per_epoch` there).

    Afterwards the optimizer gets its plain float rate (and momentum) back,
    with the value of the last step taken, and trains at that constant rate
    until something changes it. This happens at the end of `fit()`, and also
    when `fit()` raised (Keras calls no callback then): at once when the
    exception has been handled and its frames freed, and otherwise (an
    exception still held, as an interactive session does) at the next
    `fit`, `evaluate`, `predict`, `*_on_batch`, `save` or `save_weights` of
    the model, before it does anything; `kdt.callbacks.release(model)` does
    it explicitly. A single callback may set the learning rate in a `fit()`:
    another scheduler, the `LearningRateFinder`, Keras's `ReduceLROnPlateau`
    or `LearningRateScheduler` beside it raise a `ValueError` before the
    first step.

    With a `keras.optimizers.MultiOptimizer`, each sub-optimizer keeps its
    ratio to the others: the sub-optimizer with the largest rate at the start
    of `fit()` follows the schedule exactly, and every other one follows the
    schedule times (its rate / that largest rate). All are evaluated at the
    `MultiOptimizer`'s own `iterations`.

    The epoch logs (hence `history.history` and TensorBoard) get
    `learning_rate`, the rate of the largest-rate optimizer at the last step
    of the epoch."""


def _explained(cls: type) -> type:
    if cls.__doc__ is not None:  # None under `python -OO`
        cls.__doc__ = cls.__doc__.replace("{how_it_works}", _HOW_IT_WORKS.strip())
    return cls


class _Scheduler(_rate_owners.RateOwner):
    """Installs `self._make_schedules()` for the duration of each `fit()` call."""

    def __init__(self) -> None:
        super().__init__()
        self._installed: list[Any] = []
        self._origin_set = False
        self.schedule: Any = None
        self.momentum_schedule: Any = None

    # Subclasses: return (rate schedule, momentum schedule or None, steps_per_epoch
    # when the schedule counts epochs, else None).
    def _make_schedules(self) -> tuple[Any, Any, int | None]:  # pragma: no cover
        raise NotImplementedError

    def _steps_per_epoch(self, why: str) -> int:
        steps = (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                f"{type(self).__name__} cannot {why}: the number of steps per "
                "epoch is unknown (a dataset or generator of unknown length). Pass "
                "`steps_per_epoch` to `fit()`, or give the callback `total_steps`."
            )
        return int(steps)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.check_sole_rate_owner()
        owner = type(self).__name__
        leaves, scales = _installation.leaves_and_scales(self.model, owner)
        schedule, momentum, steps_per_epoch = self._make_schedules()
        if momentum is not None:
            for leaf in leaves:
                if _installation.momentum_attribute(leaf) is None:
                    raise ValueError(
                        f"{owner} was given cycle_momentum=True, but the optimizer "
                        f"{leaf.name!r} ({type(leaf).__name__}) has no momentum to "
                        "cycle (SGD-like optimizers need `momentum > 0`; the Adam "
                        "family's `beta_1` is cycled). Pass cycle_momentum=False, "
                        "or create the optimizer with a momentum, e.g. "
                        "`keras.optimizers.SGD(momentum=0.9)`."
                    )
        self.schedule, self.momentum_schedule = schedule, momentum
        iterations = self.model.optimizer.iterations
        tables = _installation.tabulate(schedule, momentum, steps_per_epoch)
        self._origin_set = False
        self._installed = []
        self.open_scope(self._uninstall)
        for leaf, scale in zip(leaves, scales, strict=True):
            self._installed.append(
                _installation.install(
                    leaf,
                    iterations=iterations,
                    schedule=schedule,
                    scale=scale,
                    steps_per_epoch=steps_per_epoch,
                    momentum_schedule=momentum,
                    tables=tables,
                )
            )
        # A train step traced by an earlier fit() still holds the old rate.
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._origin_set or not self._installed:
            return
        # The schedule's t = 0 is the first step of epoch 0 of this fit():
        # `initial_epoch` (or a BackupAndRestore resume) continues it.
        self._origin_set = True
        steps = (self.params or {}).get("steps") or 0
        first_step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        first_step -= int(epoch) * int(steps)
        for installed in self._installed:
            installed.binding.first_step = first_step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self._installed:
            return
        if logs is None:
            logs = {}
        # The values of the epoch's last step, computed from the schedules.
        last_step = max(
            int(ops.convert_to_numpy(self.model.optimizer.iterations)) - 1, 0
        )
        for installed in self._installed:
            # Checkpoints of the epoch (BackupAndRestore) hold its last rate.
            installed.sync_rate_variable()
        main = max(self._installed, key=lambda installed: installed.scale)
        logs["learning_rate"] = main.values_at(last_step)[0]
        for installed in self._installed:
            momentum = installed.values_at(last_step)[1]
            if momentum is not None:
                logs[installed.binding.momentum_attribute] = momentum

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close_scope()

    def _uninstall(self, model: Any) -> None:
        for leaf in _installation.leaf_optimizers(model.optimizer):
            _installation.remove(leaf)
        self._installed = []
        model.make_train_function(force=True)


@public("callbacks")
@_explained
class OneCycleScheduler(_Scheduler):
    """1cycle for `fit()`: PyTorch's `OneCycleLR`, exact at every step.

    The learning rate follows `kdt.schedules.OneCycleSchedule` and, with
    `cycle_momentum=True`, SGD's `momentum` (or the Adam family's `beta_1`)
    follows `kdt.schedules.OneCycleMomentum`: the same values, step for step,
    as `torch.optim.lr_scheduler.OneCycleLR` with the same arguments.

    {how_it_works} With `cycle_momentum=True` they also get
    `momentum` (SGD-like optimizers) or `beta_1` (Adam family): the value used
    at the last step.

    `total_steps=None` spans the cycle over the whole `fit()` call:
    `epochs * steps_per_epoch` optimizer steps, counted from epoch 0 of the
    call (so that a resumed run keeps the same cycle). It needs a known
    number of steps per epoch (arrays, or a `tf.data.Dataset` of known
    cardinality, or `steps_per_epoch`).

    Reference: Leslie N. Smith and Nicholay Topin, "Super-Convergence: Very
    Fast Training of Neural Networks Using Large Learning Rates", 2017
    (https://arxiv.org/abs/1708.07120).

    Args:
        max_learning_rate: the peak rate (> 0).
        total_steps: steps in the cycle, or `None` to infer it from `fit()`.
        pct_start: fraction of the cycle spent warming up, in (0, 1).
        anneal_strategy: `"cos"` or `"linear"`.
        div_factor: the initial rate is `max_learning_rate / div_factor`.
        final_div_factor: the final rate is the initial rate divided by this.
        three_phase: PyTorch's three-phase variant.
        cycle_momentum: also cycle the momentum (or `beta_1`) inversely.
        base_momentum: the momentum at the peak rate.
        max_momentum: the momentum at the start and end of the cycle.

    Attributes:
        schedule: the `OneCycleSchedule` of the latest `fit()` call.
        momentum_schedule: its `OneCycleMomentum`, or `None`.

    Raises:
        ValueError: for an argument out of range (named in the message); at
            the start of `fit()`, when the optimizer's rate is already a
            schedule, when `cycle_momentum=True` and an optimizer has no
            momentum (SGD with `momentum=0`, Adagrad, ...: pass
            `cycle_momentum=False`), or when `total_steps=None` and the number
            of steps per epoch is unknown.

    Example:

    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(momentum=0.9), "mse")
    >>> scheduler = kdt.callbacks.OneCycleScheduler(max_learning_rate=0.05)
    >>> history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...                     callbacks=[scheduler])
    >>> scheduler.schedule.total_steps
    16
    >>> sorted(key for key in history.history if key != "loss")
    ['learning_rate', 'momentum']
    """

    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ) -> None:
        super().__init__()
        if total_steps is not None:
            total_steps = check_int("total_steps", total_steps, low=2)
        self.total_steps = total_steps
        self.cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
        self._rate_arguments = dict(
            max_learning_rate=max_learning_rate,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
        )
        self._momentum_arguments = dict(
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            three_phase=three_phase,
        )
        # Check every argument now rather than at the start of fit(); a cycle
        # this long accepts any valid pct_start.
        self._build(total_steps or 10**9)

    def _build(self, total_steps: int) -> tuple[Any, Any]:
        schedule = OneCycleSchedule(total_steps=total_steps, **self._rate_arguments)
        momentum = OneCycleMomentum(total_steps=total_steps, **self._momentum_arguments)
        return schedule, (momentum if self.cycle_momentum else None)

    def _make_schedules(self) -> tuple[Any, Any, None]:
        total_steps = self.total_steps
        if total_steps is None:
            epochs = int((self.params or {}).get("epochs") or 0)
            total_steps = epochs * self._steps_per_epoch("infer total_steps")
        return (*self._build(total_steps), None)


class _DecayScheduler(_Scheduler):
    """A decay schedule counted in steps (`update="batch"`) or in epochs."""

    def __init__(self, update: str) -> None:
        super().__init__()
        self.update = check_choice("update", update, UPDATES)

    def _make_schedules(self) -> tuple[Any, None, int | None]:
        steps_per_epoch = None
        if self.update == "epoch":
            steps_per_epoch = self._steps_per_epoch('count epochs (update="epoch")')
        return self._decay, None, steps_per_epoch


@public("callbacks")
@_explained
class PowerScheduler(_DecayScheduler):
    """Power scheduling for `fit()`: `lr0 / (1 + t / decay_steps) ** power`.

    Installs a `kdt.schedules.PowerSchedule`; `t` counts optimizer steps
    (`update="batch"`) or whole epochs (`update="epoch"`: `t` is
    `optimizer.iterations // steps_per_epoch`, so the rate changes at epoch
    boundaries and `decay_steps` is in epochs).

    {how_it_works}

    Args:
        initial_learning_rate: the rate at t = 0 (> 0).
        decay_steps: the scale s of t (> 0), in steps or in epochs.
        power: the exponent c (> 0).
        update: `"batch"` or `"epoch"`.

    Raises:
        ValueError: for an argument out of range (named in the message); at
            the start of `fit()`, when the optimizer's rate is already a
            schedule, or with `update="epoch"` when the number of steps per
            epoch is unknown.

    Example:

    >>> x = np.ones((32, 2), "float32")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(), "mse")
    >>> history = model.fit(x, x[:, :1], batch_size=8, epochs=2, verbose=0,
    ...     callbacks=[kdt.callbacks.PowerScheduler(0.01, decay_steps=4)])
    >>> [round(rate, 6) for rate in history.history["learning_rate"]]
    [0.005714, 0.003636]
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        power: float = 1.0,
        update: str = "batch",
    ) -> None:
        super().__init__(update)
        self._decay = PowerSchedule(initial_learning_rate, decay_steps, power)


@public("callbacks")
@_explained
class ExponentialScheduler(_DecayScheduler):
    """Exponential scheduling for `fit()`: `lr0 * decay_rate ** (t / decay_steps)`.

    Installs a `kdt.schedules.ExponentialSchedule`; `t` counts optimizer
    steps (`update="batch"`) or whole epochs (`update="epoch"`).

    {how_it_works}

    Args:
        initial_learning_rate: the rate at t = 0 (> 0).
        decay_steps: the scale s of t (> 0), in steps or in epochs.
        decay_rate: the factor per `decay_steps`, in (0, 1].
        update: `"batch"` or `"epoch"`.

    Raises:
        ValueError: for an argument out of range (named in the message); at
            the start of `fit()`, when the optimizer's rate is already a
            schedule, or with `update="epoch"` when the number of steps per
            epoch is unknown.

    Example:

    >>> x = np.ones((32, 2), "float32")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(), "mse")
    >>> scheduler = kdt.callbacks.ExponentialScheduler(
    ...     0.01, decay_steps=1, update="epoch")
    >>> history = model.fit(x, x[:, :1], batch_size=8, epochs=3, verbose=0,
    ...                     callbacks=[scheduler])
    >>> [round(rate, 6) for rate in history.history["learning_rate"]]
    [0.01, 0.001, 0.0001]
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: float,
        decay_rate: float = 0.1,
        update: str = "batch",
    ) -> None:
        super().__init__(update)
        self._decay = ExponentialSchedule(
            initial_learning_rate, decay_steps, decay_rate
        )
