"""1cycle: the learning rate and momentum of PyTorch's `OneCycleLR`, step for step."""

from __future__ import annotations

from typing import Any

from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_positive,
    check_rates_finite,
    invalid_value,
    invalid_values,
)
from keras_dnntools.schedules import _functional
from keras_dnntools.schedules._base import FunctionalSchedule

ANNEAL_STRATEGIES = ("cos", "linear")


def check_cycle(
    total_steps: Any, pct_start: Any, anneal_strategy: Any, three_phase: Any
) -> tuple[int, float, str, bool]:
    """Validates the arguments shared by the rate and the momentum cycles."""
    total_steps = check_int("total_steps", total_steps, low=2)
    pct_start = check_float(
        "pct_start",
        pct_start,
        low=0.0,
        high=1.0,
        low_inclusive=False,
        high_inclusive=False,
    )
    anneal_strategy = check_choice(
        "anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES
    )
    three_phase = check_bool("three_phase", three_phase)
    if three_phase and pct_start >= 0.5:
        raise invalid_value(
            "pct_start",
            "pct_start < 0.5 when three_phase=True (the warm-up and the way back "
            "each take pct_start of the cycle)",
            pct_start,
            three_phase=three_phase,
        )
    if pct_start * total_steps <= 1:
        raise invalid_value(
            "pct_start",
            "pct_start * total_steps > 1, so that the warm-up lasts at least one "
            "step (as in PyTorch, it ends at step pct_start * total_steps - 1); "
            "raise total_steps or pct_start",
            pct_start,
            total_steps=total_steps,
        )
    return total_steps, pct_start, anneal_strategy, three_phase


@public("schedules", serializable=True)
class OneCycleSchedule(FunctionalSchedule):
    """The 1cycle learning rate, step for step equal to PyTorch's `OneCycleLR`.

    The rate warms up from `max_learning_rate / div_factor` to
    `max_learning_rate` over the first `pct_start` of the cycle, then anneals
    down to `max_learning_rate / (div_factor * final_div_factor)` at step
    `total_steps - 1`, and stays there afterwards. With `three_phase=True` it
    first comes back down to the initial rate, symmetric to the warm-up, and
    the last phase anneals from there to the final rate.

    The phases end exactly where `torch.optim.lr_scheduler.OneCycleLR` ends
    them (warm-up at step `pct_start * total_steps - 1`; with three phases, the
    way back at `2 * pct_start * total_steps - 2`; the last at
    `total_steps - 1`), so the rate at every step equals PyTorch's with the
    same arguments to float32 precision. Step `t` is the optimizer's
    `iterations` before the update, i.e. the rate used by the `t`-th update
    (counted from 0).

    Reference: Leslie N. Smith and Nicholay Topin, "Super-Convergence: Very
    Fast Training of Neural Networks Using Large Learning Rates", 2017
    (https://arxiv.org/abs/1708.07120).

    Args:
        max_learning_rate: the peak rate (> 0).
        total_steps: the number of steps in the cycle (an integer >= 2).
        pct_start: the fraction of the cycle spent warming up, in (0, 1);
            below 0.5 when `three_phase=True`.
        anneal_strategy: `"cos"` (cosine annealing) or `"linear"`.
        div_factor: the initial rate is `max_learning_rate / div_factor` (> 0).
        final_div_factor: the final rate is the initial rate divided by this
            (> 0).
        three_phase: use PyTorch's three-phase variant.
        name: the schedule's name (defaults to the class name).

    Call arguments:
        step: the optimizer step (an integer, or a scalar tensor such as
            `optimizer.iterations`).

    Returns:
        The learning rate at `step`, a float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range (each message names it),
            or if `pct_start * total_steps <= 1` (a warm-up shorter than a
            step).
        TypeError: if an argument has the wrong type.

    Example:

    >>> schedule = kdt.schedules.OneCycleSchedule(0.1, total_steps=100)
    >>> round(float(schedule(0)), 6)  # max_learning_rate / div_factor
    0.004
    >>> round(float(schedule(29)), 6)  # end of the warm-up
    0.1
    >>> float(schedule(99)) == float(schedule(1000))  # held past the end
    True
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)
    """

    def __init__(
        self,
        max_learning_rate: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        max_learning_rate = check_positive("max_learning_rate", max_learning_rate)
        total_steps, pct_start, anneal_strategy, three_phase = check_cycle(
            total_steps, pct_start, anneal_strategy, three_phase
        )
        div_factor = check_positive("div_factor", div_factor)
        final_div_factor = check_positive("final_div_factor", final_div_factor)
        initial = max_learning_rate / div_factor
        check_rates_finite(
            ("max_learning_rate", "div_factor", "final_div_factor"),
            initial,
            initial / final_div_factor,
            max_learning_rate=max_learning_rate,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
        )
        self._set_arguments(
            name,
            max_learning_rate=max_learning_rate,
            total_steps=total_steps,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=three_phase,
        )

    @property
    def initial_learning_rate(self) -> float:
        """The rate at step 0: `max_learning_rate / div_factor`."""
        return self.max_learning_rate / self.div_factor

    @property
    def final_learning_rate(self) -> float:
        """The rate from step `total_steps - 1` on."""
        return self.initial_learning_rate / self.final_div_factor

    def _value(self, step: Any) -> Any:
        return _functional.one_cycle_learning_rate(step, **self._arguments)


@public("schedules", serializable=True)
class OneCycleMomentum(FunctionalSchedule):
    """The 1cycle momentum, step for step as `OneCycleLR(cycle_momentum=True)`.

    The companion of `OneCycleSchedule`: the momentum moves the other way,
    from `max_momentum` down to `base_momentum` while the rate warms up, then
    back up to `max_momentum` while the rate anneals (with `three_phase=True`:
    down, back up, then held at `max_momentum`). It drives SGD's `momentum` or
    the Adam family's `beta_1` (see `kdt.callbacks.OneCycleScheduler`).

    Reference: Leslie N. Smith, "A disciplined approach to neural network
    hyper-parameters: Part 1", 2018 (https://arxiv.org/abs/1803.09820).

    Args:
        total_steps: the number of steps in the cycle (an integer >= 2).
        base_momentum: the lowest momentum, reached at the peak rate.
        max_momentum: the highest momentum, at the start and end of the cycle;
            `0 <= base_momentum <= max_momentum <= 1`.
        pct_start: as in `OneCycleSchedule`.
        anneal_strategy: `"cos"` or `"linear"`.
        three_phase: as in `OneCycleSchedule`.
        name: the schedule's name (defaults to the class name).

    Call arguments:
        step: the optimizer step (an integer or a scalar tensor).

    Returns:
        The momentum at `step`, a float32 scalar tensor.

    Raises:
        ValueError: if an argument is out of range (each message names it).
        TypeError: if an argument has the wrong type.

    Example:

    >>> momentum = kdt.schedules.OneCycleMomentum(total_steps=100)
    >>> round(float(momentum(0)), 6), round(float(momentum(29)), 6)
    (0.95, 0.85)
    >>> round(float(momentum(99)), 6)
    0.95
    """

    def __init__(
        self,
        total_steps: int,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        total_steps, pct_start, anneal_strategy, three_phase = check_cycle(
            total_steps, pct_start, anneal_strategy, three_phase
        )
        max_momentum = check_float("max_momentum", max_momentum, low=0.0, high=1.0)
        base_momentum = check_float("base_momentum", base_momentum, low=0.0, high=1.0)
        if base_momentum > max_momentum:
            raise invalid_values(
                ("base_momentum", "max_momentum"),
                "0 <= base_momentum <= max_momentum <= 1",
                base_momentum=base_momentum,
                max_momentum=max_momentum,
            )
        self._set_arguments(
            name,
            total_steps=total_steps,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            three_phase=three_phase,
        )

    def _value(self, step: Any) -> Any:
        return _functional.one_cycle_momentum(step, **self._arguments)
