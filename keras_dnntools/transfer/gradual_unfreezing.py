"""GradualUnfreezing: unfreeze the top layers epoch by epoch, inside one fit()."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import keras

from keras_dnntools import _keras_compat
from keras_dnntools._distribution import strategy_scope
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_float,
    invalid_type,
    invalid_value,
)
from keras_dnntools.callbacks._installation import leaf_optimizers
from keras_dnntools.callbacks._rate_owners import check_sole_rate_owner
from keras_dnntools.transfer import _optimizer_state
from keras_dnntools.transfer import _weighted_layers as wl
from keras_dnntools.transfer.freezing import set_top_trainable, top_trainable_plan


@public("transfer")
class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreezes the top weighted layers on a schedule, within one `fit()` call.

    ULMFiT's gradual unfreezing (Howard & Ruder, 2018): train the new head
    first, then unfreeze one more block of the reused network every few
    epochs. `schedule` maps an epoch to the number N of top weighted layers
    that are trainable from that epoch on: exactly those N and the layers above
    the lowest of them train, every other layer is frozen (as
    `kdt.transfer.unfreeze(model, top=N)`; N equal to the number of weighted
    layers unfreezes everything, 0 freezes everything). Before the first epoch
    listed, the model is left as it is.

    Changing `trainable` from a callback does nothing in plain Keras (the train
    step was compiled for the old variables) or fails (the optimizer has no
    slots for the new ones). This callback retraces the train step at each
    change, and at the start of `fit()` gives the optimizer slots for every
    variable the schedule will train, keeping the state it already had (its
    step count, its rate, the slots of the variables it was training).
    Variables that join later start from fresh slots. The optimizer is the
    same object throughout, so scheduler callbacks (`kdt.callbacks`) keep
    driving it, and its variables do not change during `fit()`, so a
    `keras.callbacks.BackupAndRestore` checkpoint loads into a resumed run
    (list `GradualUnfreezing` before `BackupAndRestore`). Works with
    `MultiOptimizer` (e.g. from `kdt.transfer.discriminative_optimizer`), whose
    sub-optimizers count their own steps from when their layers join, so Adam's
    bias correction starts afresh for them; a single Adam-like optimizer counts
    bias correction in its global steps.

    Reference: Howard & Ruder, "Universal Language Model Fine-tuning for Text
    Classification", ACL 2018 (https://arxiv.org/abs/1801.06146).

    Works on every backend: the train step is traced again at each change.
    On JAX the optimizer is rebuilt in place at each change for exactly the
    trainable variables (JAX applies it statelessly, which needs that), so
    its variables change during `fit()` and a `BackupAndRestore` checkpoint
    taken after a change does not load into a resumed run there. The
    `schedule` counts the epoch index of each `fit()` call as Keras passes it
    to callbacks: a reused `GradualUnfreezing` applies its
    schedule again from epoch 0 of the next `fit()`, and from `initial_epoch`
    when one is given (`fit(..., initial_epoch=4)` continues a schedule where
    epoch 4 starts). With `learning_rate_factor` it sets the learning rate,
    so it cannot share a `fit()` with a scheduler callback or Keras's
    `ReduceLROnPlateau`/`LearningRateScheduler` (a `ValueError` before the
    first step).

    Args:
        schedule: a dict mapping epochs (0-based, as in `on_epoch_begin`) to
            the number of top weighted layers trainable from that epoch on,
            e.g. `{0: 1, 2: 3, 4: 6}`.
        learning_rate_factor: if given, the learning rate (of every
            sub-optimizer of a `MultiOptimizer`) is multiplied by this factor
            at each change of the schedule after the first epoch of the fit,
            e.g. `0.5` to lower it as deeper layers join. The rate must be a
            plain value, not a `LearningRateSchedule`.
        keep_batchnorm_frozen: as in `kdt.transfer.unfreeze`: normalization
            layers stay frozen (inference mode) unless set to `False`.

    Raises:
        TypeError: if `schedule` is not a dict of ints.
        ValueError: if an epoch is negative, a count is negative or (at the
            start of training) larger than the number of weighted layers, or
            `learning_rate_factor` is not positive.
        NotImplementedError: at the start of training on the JAX backend, for
            an optimizer with `use_ema=True` or with
            `keras.callbacks.BackupAndRestore` in the same `fit()`.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(8), keras.layers.Dense(1)])
    >>> _ = kdt.transfer.freeze(model, until=1)
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x, y = np.ones((8, 4)), np.ones((8, 1))
    >>> unfreezing = kdt.transfer.GradualUnfreezing({0: 1, 2: 3})
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[unfreezing])
    >>> [layer.trainable for layer in model.layers]
    [True, True, True]
    """

    def __init__(
        self,
        schedule: Mapping[int, int],
        *,
        learning_rate_factor: float | None = None,
        keep_batchnorm_frozen: bool = True,
    ):
        super().__init__()
        self.schedule = _check_schedule(schedule)
        if learning_rate_factor is not None:
            learning_rate_factor = check_float(
                "learning_rate_factor",
                learning_rate_factor,
                low=0.0,
                low_inclusive=False,
                expected="None or a positive number",
            )
        self.learning_rate_factor = learning_rate_factor
        self.keep_batchnorm_frozen = check_bool(
            "keep_batchnorm_frozen", keep_batchnorm_frozen
        )
        self._applied: int | None = None
        self._first_epoch: int | None = None

    def number_trainable(self, epoch: int) -> int | None:
        """The number of top weighted layers trainable at `epoch` (None: as is)."""
        started = [start for start in self.schedule if start <= epoch]
        return self.schedule[max(started)] if started else None

    @property
    def sets_learning_rate(self) -> bool:
        """Whether it changes the learning rate (with `learning_rate_factor`)."""
        return self.learning_rate_factor is not None

    def on_train_begin(self, logs=None):
        if self.sets_learning_rate:
            check_sole_rate_owner(self)
        all_leaves = wl.leaves(self.model)
        num_weighted = len(wl.weighted_leaf_indices(self.model, all_leaves))
        largest = max(self.schedule.values())
        if largest > num_weighted:
            raise invalid_value(
                "schedule",
                f"counts of top weighted layers from 0 to {num_weighted} (the "
                "number of weighted layers of the model)",
                self.schedule,
            )
        if self.learning_rate_factor is not None:
            _check_scalable(self.model.optimizer, self.learning_rate_factor)
        optimizer = self.model.optimizer
        if _exact_build() and _resumes_from_backup():
            raise NotImplementedError(
                "GradualUnfreezing together with keras.callbacks.BackupAndRestore "
                "is not supported on the JAX backend: the optimizer holds slots for "
                "exactly the trainable weights of the epoch, so a backup written "
                "after an unfreezing does not restore into the optimizer of an "
                "earlier epoch (its step count would restart from 0). Use the "
                "TensorFlow or PyTorch backend, or ModelCheckpoint."
            )
        if _exact_build() and any(
            getattr(leaf, "use_ema", False) for leaf in leaf_optimizers(optimizer)
        ):
            # The exact rebuild creates the moving averages of the newly
            # trainable weights mid-fit, which Keras's JAX trainer then loses.
            raise NotImplementedError(
                "GradualUnfreezing with an optimizer that has use_ema=True is not "
                "supported on the JAX backend (the moving averages of layers "
                "unfrozen during fit() are lost). Use use_ema=False, or the "
                "TensorFlow or PyTorch backend."
            )
        if _exact_build():
            variables = self.model.trainable_variables
        else:
            variables = self._every_trainable_variable(all_leaves)
        if sorted(_optimizer_state.slot_layout(optimizer)) != sorted(
            id(v) for v in variables
        ):
            with strategy_scope(self.model):
                _optimizer_state.rebuild_in_place(optimizer, variables)
        _optimizer_state.dispatch_to(optimizer, self.model.trainable_variables)
        self.model.make_train_function(force=True)
        self._applied = None
        self._first_epoch = None

    def _every_trainable_variable(self, all_leaves: list[wl.Leaf]) -> list:
        """Variables trainable now or at any step of the schedule, model order."""
        wanted = {id(v) for v in self.model.trainable_variables}
        for number in set(self.schedule.values()):
            plan = top_trainable_plan(
                self.model,
                number,
                keep_batchnorm_frozen=self.keep_batchnorm_frozen,
                all_leaves=all_leaves,
            )
            for leaf, trainable in zip(all_leaves, plan, strict=True):
                if trainable:
                    wanted.update(
                        id(v) for v in wl.trainable_capable_variables(leaf.layer)
                    )
        return [v for v in self.model.weights if id(v) in wanted]

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        number = self.number_trainable(epoch)
        if number is None or number == self._applied:
            return
        set_top_trainable(
            self.model, number, keep_batchnorm_frozen=self.keep_batchnorm_frozen
        )
        optimizer = self.model.optimizer
        trainable = self.model.trainable_variables
        layout = _optimizer_state.slot_layout(optimizer)
        with strategy_scope(self.model):
            if _exact_build():
                if sorted(layout) != sorted(id(v) for v in trainable):
                    _optimizer_state.rebuild_in_place(optimizer, trainable)
            elif not {id(v) for v in trainable} <= set(layout):
                # `trainable` was changed by something else since the start
                _optimizer_state.rebuild_in_place(optimizer, trainable)
        _optimizer_state.dispatch_to(optimizer, trainable)
        if self.learning_rate_factor is not None and epoch > self._first_epoch:
            _check_scalable(optimizer, self.learning_rate_factor)
            for leaf in _rate_holders(optimizer):
                leaf.learning_rate = (
                    current_learning_rate(leaf) * self.learning_rate_factor
                )
        self.model.make_train_function(force=True)
        _keras_compat.mark_trainable_state_compiled(self.model)
        self._applied = number


def _resumes_from_backup() -> bool:
    callbacks = _keras_compat.running_callback_list()
    return any(
        isinstance(callback, keras.callbacks.BackupAndRestore)
        for callback in getattr(callbacks, "callbacks", ())
    )


def _exact_build() -> bool:
    """Whether the optimizer must hold slots for exactly the trainable variables.

    The JAX trainer applies the optimizer statelessly, which insists on the
    variables it was built with; the other backends accept a subset, so the
    optimizer is built once for every variable the schedule will train (and
    its variables stay the same during `fit()`, for `BackupAndRestore`).
    """
    return keras.backend.backend() == "jax"


def _check_scalable(optimizer: keras.optimizers.Optimizer, factor: float) -> None:
    for leaf in _rate_holders(optimizer):
        if not isinstance(_keras_compat.learning_rate_holder(leaf), keras.Variable):
            raise invalid_value(
                "learning_rate_factor",
                "None when the optimizer's learning rate is a "
                "LearningRateSchedule or is driven by a scheduler callback "
                "(it cannot be scaled)",
                factor,
            )


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's learning rate now, as a Python float."""
    return float(optimizer.learning_rate)


def _rate_holders(optimizer: keras.optimizers.Optimizer) -> list:
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return _rate_holders(optimizer.inner_optimizer)
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return list(optimizer.optimizers)
    return [optimizer]


def _check_schedule(schedule: object) -> dict[int, int]:
    if not isinstance(schedule, Mapping) or not schedule:
        raise invalid_type(
            "schedule", "a non-empty dict mapping epochs to numbers of layers", schedule
        )
    checked: dict[int, int] = {}
    for epoch, number in schedule.items():
        for value in (epoch, number):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise invalid_type(
                    "schedule",
                    "a dict mapping integer epochs to integer numbers of layers",
                    schedule,
                )
        if epoch < 0 or number < 0:
            raise invalid_value(
                "schedule",
                "non-negative epochs mapped to non-negative numbers of layers",
                schedule,
            )
        checked[int(epoch)] = int(number)
    return dict(sorted(checked.items()))
