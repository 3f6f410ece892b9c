"""One driver per row kind, run under a compile mode: mixed precision or XLA.

`run(key, mode)` trains and predicts with the component of row `key` under
`mode`, one of ``"mixed_float16"``, ``"mixed_bfloat16"`` (global dtype policy)
or ``"jit"`` (``jit_compile=True`` for fit and predict), and checks what must
hold there. Where a result must not depend on the mode (the rates a callback
sets, the layers GradualUnfreezing unfreezes), the driver compares with a
plain float32, non-XLA run of the same thing.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import numpy as np
import pytest

import keras_dnntools as kdt
from tests import layer_contract as contract
from tests.reliability import _models as m
from tests.reliability.matrix import MATRIX

MODES = ("mixed_float16", "mixed_bfloat16", "jit")
LOW_PRECISION = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@contextlib.contextmanager
def _policy(mode):
    """The mode's global dtype policy (float32 for "jit" and "reference")."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mode if mode in LOW_PRECISION else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _jit(mode):
    return {"jit_compile": mode == "jit"}


def _compute_dtype(mode):
    return LOW_PRECISION.get(mode, "float32")


def _finite(values, what):
    values = np.asarray(values, dtype="float64")
    assert np.all(np.isfinite(values)), f"{what} not finite: {values}"


def _fit_predict(model, x, y, mode, epochs=1, **kwargs):
    history = m.compile_and_fit(model, x, y, epochs=epochs, **_jit(mode), **kwargs)
    _finite(history.history["loss"], "loss")
    prediction = model.predict(x, verbose=0)
    _finite(prediction, "prediction")
    return history, prediction


def _kernel_norms(model):
    norms = []
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            value = m.numpy(kernel).astype("float64")
            axes = tuple(range(value.ndim - 1))
            norms.append(np.sqrt(np.sum(value**2, axis=axes)))
    return norms


def _inner(optimizer):
    """The optimizer a LossScaleOptimizer wraps (the optimizer itself otherwise)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _hyperparameters(optimizer):
    inner = _inner(optimizer)
    values = {"learning_rate": m.scalar(inner.learning_rate)}
    for name in ("momentum", "beta_1"):
        if hasattr(inner, name):
            values[name] = m.scalar(getattr(inner, name))
    return values


def layer(key, mode):
    """The shared layer contract's XLA / mixed-precision checks, plus ours.

    `tests/layer_contract.py` checks fit and predict (same predictions with
    XLA for deterministic layers), output dtypes and finite values; added
    here: variables stay float32 and MC layers stay stochastic.
    """
    row = MATRIX[key]
    stochastic = row.stochastic
    if mode == "jit":
        contract.check_fit_and_jit(row.make, row.input_shape, not stochastic)
        return
    if mode == "mixed_float16":  # the contract runs both policies at once
        contract.check_mixed_precision(row.make, row.input_shape)
    x, _ = m.data(row.input_shape)
    with _policy(mode):
        component = row.make()
        model = m.around(component, row.input_shape)
        first, second = model.predict(x, verbose=0), model.predict(x, verbose=0)
    assert component.compute_dtype == _compute_dtype(mode)
    assert all(v.dtype == "float32" for v in model.weights), "variables not float32"
    assert (not np.array_equal(first, second)) == stochastic, "MC stays stochastic"


def activation(key, mode):
    """rrelu is refused as a layer activation in training (it would never get
    `training`), so the model around it only predicts; fit must say so."""
    x, y = m.data()
    with _policy(mode):
        function = MATRIX[key].make()
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(4, activation=function)]
        )
        model.compile(optimizer=m.sgd(), loss="mse", **_jit(mode))
        _finite(model.predict(x, verbose=0), "prediction")
        with pytest.raises(ValueError, match=r"kdt\.layers\.RReLU"):
            model.fit(x, y[:, :1].repeat(4, axis=1), verbose=0)
        low = keras.ops.convert_to_tensor(x, dtype=_compute_dtype(mode))
        for training in (False, True):
            out = function(low, training=training, seed=1)
            assert keras.backend.standardize_dtype(out.dtype) == _compute_dtype(mode)
            _finite(keras.ops.cast(out, "float32"), "rrelu output")


def constraint(key, mode):
    x, y = m.data()
    with _policy(mode):
        make = MATRIX[key].make
        # Column norms start at 0.3 * sqrt(6) ~ 0.73: the constraint must clip.
        dense = keras.layers.Dense(
            2,
            kernel_initializer=keras.initializers.Constant(0.3),
            kernel_constraint=make(),
        )
        model = keras.Sequential([keras.Input((6,)), dense])
        _fit_predict(model, x, y, mode, epochs=2)
        low = keras.ops.convert_to_tensor(x[:, :2] * 10, dtype=_compute_dtype(mode))
        clipped = make()(low)
        assert keras.backend.standardize_dtype(clipped.dtype) == _compute_dtype(mode)
    for norms in _kernel_norms(model):
        assert np.all(norms <= 0.5 * (1 + 1e-5)), norms


def apply_max_norm(key, mode):
    x, y = m.data()
    with _policy(mode):
        model = m.dense_stack()
        model.compile(optimizer=m.sgd(0.5), loss="mse", **_jit(mode))
        kdt.constraints.apply_max_norm(model, 0.5)
        model.fit(x * 10, y * 10, batch_size=4, epochs=2, verbose=0, shuffle=False)
        _finite(model.predict(x, verbose=0), "prediction")
    for norms in _kernel_norms(model):
        assert np.all(norms <= 0.5 * (1 + 1e-5)), norms


def schedule(key, mode):
    x, y = m.data()
    with _policy(mode):
        scheduled = MATRIX[key].make()
        model = m.dense_stack()
        optimizer = keras.optimizers.SGD(learning_rate=scheduled, momentum=0.9)
        _fit_predict(model, x, y, mode, epochs=2, optimizer=optimizer)
        if mode == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        step = int(m.numpy(_inner(model.optimizer).iterations))
        # Loss scaling skips the steps whose float16 gradients overflow (a
        # momentum schedule used as a rate, ~0.9, may overflow on some backends).
        assert step == 4 if mode != "mixed_float16" else 1 <= step <= 4
        rate = m.scalar(model.optimizer.learning_rate)
    assert rate == pytest.approx(m.scalar(scheduled(step)), rel=1e-6)


OPTIMIZERS = {"SGD": lambda: m.sgd(0.01), "Adam": lambda: keras.optimizers.Adam(0.01)}


def _scheduler_run(key, mode, optimizer_name):
    keras.utils.set_random_seed(0)  # the same model in every mode and order
    x, y = m.data()
    with _policy(mode):
        model = m.dense_stack()
        optimizer = OPTIMIZERS[optimizer_name]()
        history, _ = _fit_predict(
            model,
            x,
            y,
            mode,
            epochs=2,
            optimizer=optimizer,
            callbacks=[MATRIX[key].make()],
            run_eagerly=mode == "reference",
        )
        if mode == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    return history.history, _hyperparameters(model.optimizer)


@functools.cache
def _scheduler_reference(key, optimizer_name):
    """The plain run (float32, eager) the other modes must agree with."""
    return _scheduler_run(key, "reference", optimizer_name)


def scheduler(key, mode):
    """Whatever the callback does to a plain optimizer, it does through the mode.

    SGD (`momentum`) everywhere; Adam (`beta_1`) too through the
    LossScaleOptimizer of `mixed_float16`.
    """
    names = ("SGD", "Adam") if mode == "mixed_float16" else ("SGD",)
    for name in names:
        want_logs, want = _scheduler_reference(key, name)
        got_logs, got = _scheduler_run(key, mode, name)
        assert got == pytest.approx(want, rel=1e-6), name
        assert want["learning_rate"] != pytest.approx(0.01), "the callback did nothing"
        assert "learning_rate" in got_logs
        for log in set(want_logs) - {"loss"}:
            assert got_logs[log] == pytest.approx(want_logs[log], rel=1e-6), log


def _trained_and_snapshot(mode):
    """A trained model (optimizer state exists), its data and state snapshot."""
    x, y = m.data(n=16)
    model = m.dense_stack()
    model.compile(optimizer=m.sgd(0.01), loss="mse", **_jit(mode))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    snapshot = (model.get_weights(), [m.numpy(v) for v in model.optimizer.variables])
    return model, x, y, snapshot


def _assert_restored(model, snapshot):
    weights, state = snapshot
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(after, before, err_msg="weights not restored")
    for before, after in zip(state, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(m.numpy(after), before, "optimizer state")


def lr_finder(key, mode):
    with _policy(mode):
        model, x, y, snapshot = _trained_and_snapshot(mode)
        finder = MATRIX[key].make()
        model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[finder])
    _assert_restored(model, snapshot)


def find_learning_rate(key, mode):
    with _policy(mode):
        model, x, y, snapshot = _trained_and_snapshot(mode)
        result = kdt.callbacks.find_learning_rate(model, x, y, batch_size=2, steps=6)
    _finite(result.learning_rates, "learning rates")
    assert len(result.learning_rates) == len(result.losses) > 0
    assert np.isfinite(result.suggestion)
    _assert_restored(model, snapshot)


@functools.cache
def _unfreezing_reference(key):
    return _unfreezing_run(key, "reference")


def _unfreezing_run(key, mode):
    keras.utils.set_random_seed(0)  # the same model in every mode and order
    x, y = m.data()
    with _policy(mode):
        model = m.dense_stack()
        bottom = model.layers[0]
        initial = m.numpy(bottom.kernel)
        seen = {}

        def record(epoch, logs=None):
            seen[epoch] = not np.array_equal(m.numpy(bottom.kernel), initial)

        probe = keras.callbacks.LambdaCallback(on_epoch_end=record)
        history, _ = _fit_predict(
            model,
            x,
            y,
            mode,
            epochs=2,
            callbacks=[MATRIX[key].make(), probe],
            run_eagerly=mode == "reference",
        )
    trainable = [layer.trainable for layer in model.layers]
    return seen, trainable, history.history, _hyperparameters(model.optimizer)


def gradual_unfreezing(key, mode):
    """Unfreezes on time, and `learning_rate_factor` reaches the optimizer."""
    seen, trainable, logs, rates = _unfreezing_run(key, mode)
    assert seen == {0: False, 1: True}, "bottom layer: frozen in epoch 0, then trained"
    want_seen, want_trainable, want_logs, want_rates = _unfreezing_reference(key)
    assert want_rates["learning_rate"] == pytest.approx(0.01 * 0.5), "factor 0.5"
    assert (seen, trainable) == (want_seen, want_trainable)
    assert rates == pytest.approx(want_rates, rel=1e-6)
    for name in set(want_logs) - {"loss"}:
        assert logs[name] == pytest.approx(want_logs[name], rel=1e-6), name


@functools.cache
def _discriminative_reference(key):
    logs, model = _discriminative_run(key, "reference")
    return logs, _sub_rates(model.optimizer)


def _discriminative_run(key, mode):
    keras.utils.set_random_seed(0)  # the same model in every mode and order
    x, y = m.data()
    with _policy(mode):
        model = m.dense_stack()
        optimizer = kdt.transfer.discriminative_optimizer(
            model, m.sgd(), learning_rate_range=(1e-3, 1e-1), num_groups=3
        )
        callback = kdt.callbacks.OneCycleScheduler(0.1)
        history, _ = _fit_predict(
            model,
            x,
            y,
            mode,
            epochs=2,
            optimizer=optimizer,
            callbacks=[callback],
            run_eagerly=mode == "reference",
        )
    return history.history, model


def discriminative_optimizer(key, mode):
    logs, model = _discriminative_run(key, mode)
    want_logs, want = _discriminative_reference(key)
    for name in set(want_logs) - {"loss"}:
        assert logs[name] == pytest.approx(want_logs[name], rel=1e-6), name
    got = _sub_rates(model.optimizer)
    assert len(got) == 3
    assert got == pytest.approx(want, rel=1e-6)
    ratios = np.array(got[1:]) / np.array(got[:-1])
    np.testing.assert_allclose(ratios, 10.0, rtol=1e-5)


def _sub_rates(optimizer):
    inner = _inner(optimizer)
    subs = getattr(inner, "optimizers", None)
    assert subs is not None, f"no sub-optimizers found on {type(inner).__name__}"
    return [m.scalar(_inner(sub).learning_rate) for sub in subs]


def fine_tune(key, mode):
    x, y = m.data(n=16)  # 1cycle needs pct_start * steps > 1
    with _policy(mode):
        model = m.dense_stack()
        m.compile_and_fit(model, x, y, **_jit(mode))
        first, second = kdt.transfer.fine_tune(
            model, x, y, epochs=1, freeze_epochs=1, batch_size=4, verbose=0
        )
        _finite(first.history["loss"] + second.history["loss"], "loss")
        _finite(model.predict(x, verbose=0), "prediction")
        if mode == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        if mode == "jit":
            assert model.jit_compile


def mc_predict(key, mode):
    x, y = m.data()
    with _policy(mode):
        model = m.dense_stack(dropout=True)
        m.compile_and_fit(model, x, y, **_jit(mode))
        prediction = kdt.uncertainty.mc_predict(model, x, n_samples=4, seed=1)
    _finite(prediction.mean, "mean")
    _finite(prediction.std, "std")
    assert np.asarray(prediction.std).max() > 0, "dropout not active while sampling"


def to_mc_dropout(key, mode):
    x, _ = m.data()
    with _policy(mode):
        model = kdt.uncertainty.to_mc_dropout(m.dense_stack(dropout=True))
        first, second = model.predict(x, verbose=0), model.predict(x, verbose=0)
    assert not np.array_equal(first, second)
    for layer in model.layers[:-1]:
        assert layer.compute_dtype == _compute_dtype(mode), layer.name


def clone_with_weights(key, mode):
    x, y = m.data()
    with _policy(mode):
        original = m.dense_stack()
        clone = kdt.transfer.clone_with_weights(original)
        _fit_predict(clone, x, y, mode)
    for a, b in zip(original.layers, clone.layers, strict=True):
        assert a.dtype_policy.name == b.dtype_policy.name, a.name


def reuse_layers(key, mode):
    x, y = m.data()
    with _policy(mode):
        source = m.dense_stack()
        head = keras.layers.Dense(2, dtype="float32")
        model = kdt.transfer.reuse_layers(source, drop_top=1, head=head)
        _fit_predict(model, x, y, mode)
        assert model.layers[0].compute_dtype == _compute_dtype(mode)


def recompile(key, mode):
    x, y = m.data()
    with _policy(mode):
        model = m.dense_stack()
        m.compile_and_fit(model, x, y, **_jit(mode))
        kdt.transfer.recompile(model, learning_rate=0.05)
        history = model.fit(x, y, batch_size=4, verbose=0)
    _finite(history.history["loss"], "loss")
    if mode == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    if mode == "jit":
        assert model.jit_compile, "recompile dropped jit_compile=True"
    assert m.scalar(model.optimizer.learning_rate) == pytest.approx(0.05)


def metric(key, mode):
    x, y = m.class_data(n=16)
    with _policy(mode):
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(3),
                keras.layers.Activation("softmax"),  # low-precision probabilities
            ]
        )
        model.compile(
            optimizer=m.sgd(),
            loss="sparse_categorical_crossentropy",
            metrics=[MATRIX[key].make()],
            **_jit(mode),
        )
        model.fit(x, y, batch_size=4, verbose=0)
        results = model.evaluate(x, y, verbose=0, return_dict=True)
        (value,) = [v for name, v in results.items() if name != "loss"]
        probabilities = np.asarray(model.predict(x, verbose=0), dtype="float32")
    want = float(kdt.metrics.expected_calibration_error(y, probabilities, n_bins=5))
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(want, abs=1e-2 if mode in LOW_PRECISION else 1e-5)


DRIVERS = {
    "layer": layer,
    "activation": activation,
    "constraint": constraint,
    "apply_max_norm": apply_max_norm,
    "schedule": schedule,
    "scheduler": scheduler,
    "lr_finder": lr_finder,
    "find_learning_rate": find_learning_rate,
    "gradual_unfreezing": gradual_unfreezing,
    "discriminative_optimizer": discriminative_optimizer,
    "fine_tune": fine_tune,
    "mc_predict": mc_predict,
    "to_mc_dropout": to_mc_dropout,
    "metric": metric,
    "transfer.clone_with_weights": clone_with_weights,
    "transfer.reuse_layers": reuse_layers,
    "transfer.recompile": recompile,
}


def run(key, mode):
    assert mode in MODES
    driver = DRIVERS.get(key) or DRIVERS.get(MATRIX[key].kind)
    assert driver is not None, f"no driver for {key} (kind {MATRIX[key].kind!r})"
    driver(key, mode)
