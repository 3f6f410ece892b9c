"""fine_tune: the whole transfer recipe in one call (fastai's `fine_tune`)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_dnntools import _keras_compat
from keras_dnntools._data import check_fit_data, fit_steps_per_epoch
from keras_dnntools._distribution import strategy_scope
from keras_dnntools._registry import public
from keras_dnntools._validation import check_float, check_int, invalid_value
from keras_dnntools.callbacks import OneCycleScheduler
from keras_dnntools.schedules import OneCycleSchedule
from keras_dnntools.transfer import _weighted_layers as wl
from keras_dnntools.transfer.discriminative import discriminative_optimizer
from keras_dnntools.transfer.freezing import set_top_trainable, unfreeze
from keras_dnntools.transfer.recompiling import (
    compile_arguments,
    compiled_optimizer,
    fresh_optimizer,
)

# fastai's choices for the two 1cycle runs of `fine_tune`: the frozen phase
# warms up for almost the whole run, the unfrozen one starts at max / 5.
FROZEN_PCT_START = 0.99
UNFROZEN_DIV_FACTOR = 5.0
MAX_GROUPS = 3
_RESERVED_FIT_ARGUMENTS = ("initial_epoch",)


@public("transfer")
def fine_tune(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    epochs: int,
    base_learning_rate: float = 2e-3,
    freeze_epochs: int = 1,
    learning_rate_mult: float = 100,
    **fit_kwargs: Any,
) -> tuple[keras.callbacks.History, keras.callbacks.History]:
    """Fine-tunes a reused network in one call: frozen first, then all of it.

    fastai's `Learner.fine_tune` for Keras:

    1. Freeze the base: only the head trains. The head is the trainable top
       of the model when some weighted layers are frozen (as
       `kdt.transfer.reuse_layers` leaves it), else the top weighted layer.
    2. Train for `freeze_epochs` epochs with 1cycle
       (`kdt.callbacks.OneCycleScheduler`, `max_learning_rate=base_learning_rate`,
       `pct_start=0.99` as in fastai).
    3. Unfreeze everything (normalization layers stay frozen, in inference
       mode), and train for `epochs` epochs with 1cycle (`div_factor=5` as in
       fastai) and discriminative rates (`kdt.transfer.discriminative_optimizer`,
       up to 3 groups): the top group peaks at `base_learning_rate`, the bottom
       one at `base_learning_rate / learning_rate_mult`.

    Each phase compiles the model again with the loss and metrics of the
    user's `compile()` and a fresh optimizer of the same class and config
    (momentum cycled when the optimizer has one: SGD's `momentum` when it is
    positive, the Adam family's `beta_1`). The model stays compiled with the
    discriminative optimizer afterwards.

    Args:
        model: a compiled `keras.Model` whose base is reused (for instance
            from `kdt.transfer.reuse_layers`).
        x: the training inputs, as for `model.fit`.
        y: the training targets, as for `model.fit`.
        epochs: epochs of the unfrozen phase (at least 1).
        base_learning_rate: the peak learning rate of the head (and of the
            top group in the unfrozen phase).
        freeze_epochs: epochs of the frozen phase (0 skips it).
        learning_rate_mult: how much lower the bottom group's rate is than
            the top group's in the unfrozen phase (at least 1).
        **fit_kwargs: passed to both `model.fit` calls (`batch_size`,
            `validation_data`, `callbacks`, `verbose`, ...).

    Returns:
        `(frozen_history, unfrozen_history)`, the `History` of each phase (the
        first one is empty when `freeze_epochs=0`).

    Raises:
        ValueError: if the model is not compiled or has no weighted layer, or
            an argument is out of range.

    Example:

    >>> model_a = keras.Sequential([keras.Input((4,)),
    ...                             keras.layers.Dense(8, activation="relu"),
    ...                             keras.layers.Dense(3, activation="softmax")])
    >>> model_b = kdt.transfer.reuse_layers(
    ...     model_a, head=keras.layers.Dense(1, activation="sigmoid"))
    >>> model_b.compile(optimizer="adam", loss="binary_crossentropy")
    >>> x, y = np.random.rand(64, 4), np.random.randint(0, 2, (64, 1))
    >>> frozen, unfrozen = kdt.transfer.fine_tune(
    ...     model_b, x, y, epochs=2, batch_size=16, verbose=0)
    >>> len(frozen.history["loss"]), len(unfrozen.history["loss"])
    (1, 2)
    """
    model = wl.check_model(model)
    arguments = compile_arguments(model)
    check_fit_data(model, x, y)
    epochs = check_int("epochs", epochs, low=1)
    freeze_epochs = check_int("freeze_epochs", freeze_epochs, low=0)
    base_learning_rate = check_float(
        "base_learning_rate",
        base_learning_rate,
        low=0.0,
        low_inclusive=False,
        expected="a positive number",
    )
    learning_rate_mult = check_float(
        "learning_rate_mult", learning_rate_mult, low=1.0, expected="a number >= 1"
    )
    for name in _RESERVED_FIT_ARGUMENTS:
        if name in fit_kwargs:
            raise invalid_value(
                name,
                "no value: fine_tune runs both phases from epoch 0",
                fit_kwargs[name],
            )
    user_callbacks = list(fit_kwargs.pop("callbacks", None) or [])
    _check_phase_lengths(
        x, fit_kwargs, freeze_epochs, epochs, base_learning_rate, learning_rate_mult
    )
    saved = _ModelState(model)
    try:
        return _fine_tune(
            model,
            x,
            y,
            arguments,
            epochs=epochs,
            base_learning_rate=base_learning_rate,
            freeze_epochs=freeze_epochs,
            learning_rate_mult=learning_rate_mult,
            user_callbacks=user_callbacks,
            fit_kwargs=fit_kwargs,
        )
    except BaseException:
        # Bad data midway, KeyboardInterrupt: the caller gets the model back
        # as it was, with its own optimizer, before the exception reaches it.
        saved.restore(model)
        raise


def _fine_tune(
    model: keras.Model,
    x: Any,
    y: Any,
    arguments: dict[str, Any],
    *,
    epochs: int,
    base_learning_rate: float,
    freeze_epochs: int,
    learning_rate_mult: float,
    user_callbacks: list,
    fit_kwargs: dict[str, Any],
) -> tuple[keras.callbacks.History, keras.callbacks.History]:
    template = _template_optimizer(compiled_optimizer(model))
    cycle_momentum = _has_momentum(template)

    all_leaves = wl.leaves(model)
    weighted = wl.weighted_leaf_indices(model, all_leaves)
    frozen_history = keras.callbacks.History()
    if freeze_epochs:
        set_top_trainable(
            model,
            _head_size(all_leaves, weighted),
            keep_batchnorm_frozen=True,
            all_leaves=all_leaves,
        )
        with strategy_scope(model):
            arguments["optimizer"] = fresh_optimizer(
                template, learning_rate=base_learning_rate
            )
        model.compile(**arguments)
        scheduler = OneCycleScheduler(
            base_learning_rate,
            pct_start=FROZEN_PCT_START,
            cycle_momentum=cycle_momentum,
        )
        frozen_history = model.fit(
            x,
            y,
            epochs=freeze_epochs,
            callbacks=[*user_callbacks, scheduler],
            **fit_kwargs,
        )

    unfreeze(model)
    arguments = compile_arguments(model)
    arguments["optimizer"] = discriminative_optimizer(
        model,
        fresh_optimizer(template),
        learning_rate_range=(
            base_learning_rate / learning_rate_mult,
            base_learning_rate,
        ),
        num_groups=min(MAX_GROUPS, len(weighted)),
    )
    model.compile(**arguments)
    scheduler = OneCycleScheduler(
        base_learning_rate,
        div_factor=UNFROZEN_DIV_FACTOR,
        cycle_momentum=cycle_momentum,
    )
    unfrozen_history = model.fit(
        x, y, epochs=epochs, callbacks=[*user_callbacks, scheduler], **fit_kwargs
    )
    return frozen_history, unfrozen_history


class _ModelState:
    """A model's variables, `trainable` flags and compiled optimizer."""

    def __init__(self, model: keras.Model) -> None:
        self.optimizer = model.optimizer
        self.arguments = compile_arguments(model)
        self.trainable = [
            (layer, layer.trainable) for layer in _keras_compat.flatten_layers(model)
        ]
        self.values = [(v, ops.convert_to_numpy(v)) for v in model.variables]
        self.optimizer_values = [
            (v, ops.convert_to_numpy(v)) for v in self.optimizer.variables
        ]

    def restore(self, model: keras.Model) -> None:
        for layer, trainable in self.trainable:
            layer.trainable = trainable
        for variable, value in self.values:
            variable.assign(value)
        self.arguments["optimizer"] = self.optimizer
        model.compile(**self.arguments)
        for variable, value in self.optimizer_values:
            variable.assign(value)


def _check_phase_lengths(
    x: Any,
    fit_kwargs: dict[str, Any],
    freeze_epochs: int,
    epochs: int,
    base_learning_rate: float,
    learning_rate_mult: float,
) -> None:
    """Checks that each 1cycle phase has enough steps, before anything changes."""
    per_epoch = fit_steps_per_epoch(x, fit_kwargs)
    if per_epoch is None:
        return  # a generator of unknown length: the scheduler will say
    phases = [("epochs", epochs, {})]
    if freeze_epochs:
        phases.insert(
            0, ("freeze_epochs", freeze_epochs, {"pct_start": FROZEN_PCT_START})
        )
    for name, count, extra in phases:
        try:
            OneCycleSchedule(base_learning_rate, total_steps=count * per_epoch, **extra)
        except ValueError as error:
            raise ValueError(
                f"Invalid value for argument `{name}`: fine_tune runs a 1cycle "
                f"schedule in each phase, and {name}={count} gives "
                f"{count} x {per_epoch} = {count * per_epoch} optimizer steps "
                f"({per_epoch} per epoch with batch_size="
                f"{fit_kwargs.get('batch_size') or 32}), too few for the cycle. "
                f"Pass more `{name}` or a smaller `batch_size`. Received: "
                f"{name}={count}, learning_rate_mult={learning_rate_mult}."
            ) from error


def _template_optimizer(
    optimizer: keras.optimizers.Optimizer,
) -> keras.optimizers.Optimizer:
    """The optimizer to copy: the top (largest-rate) one of a MultiOptimizer."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if isinstance(optimizer, keras.optimizers.MultiOptimizer):
        return max(optimizer.optimizers, key=lambda sub: float(sub.learning_rate))
    return optimizer


def _has_momentum(optimizer: keras.optimizers.Optimizer) -> bool:
    if getattr(optimizer, "beta_1", None) is not None:
        return True
    momentum = getattr(optimizer, "momentum", None)
    return isinstance(momentum, (int, float)) and momentum > 0


def _head_size(all_leaves: list[wl.Leaf], weighted: list[int]) -> int:
    """Trainable weighted layers at the top when some are frozen, else 1."""
    states = [all_leaves[i].effectively_trainable() for i in weighted]
    if all(states):
        return 1
    size = 0
    for trainable in reversed(states):
        if not trainable:
            break
        size += 1
    return max(size, 1)
