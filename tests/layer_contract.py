"""The layer contract: the checks every layer of keras_dnntools passes.

Use it from a layer's test module::

    from tests.layer_contract import check_layer_contract

    def test_contract(tmp_path):
        check_layer_contract(
            lambda: kdt.layers.RReLU(0.1, 0.3, seed=1), (6,), tmp_path=tmp_path
        )

`check_layer_contract` runs, for a layer built by `make_layer()` (called again
for every check, so that each check gets a fresh layer under the dtype policy
of the moment):

1. build and call in a `Sequential` and in a functional model;
   `compute_output_shape` agrees with the real (eager) and symbolic outputs;
2. one `fit` step and `predict` in a small trainable model, finite results;
3. `jit_compile=True`: `fit` and `predict` again; for a layer that is
   deterministic at inference, the same predictions as without XLA;
4. `mixed_float16` and `mixed_bfloat16`: the layer's output dtype is the
   policy's compute dtype, `fit` and `predict` give no NaN;
5. the whole config round trip: `from_config(get_config())` gives the same
   whole config and computes the same outputs, the config is JSON-able, and
   `keras.saving.serialize_keras_object` / `deserialize_keras_object` rebuild
   the layer with no `custom_objects`;
6. `.keras` save, then `keras.models.load_model(path, safe_mode=True)` in a
   fresh Python process with no `custom_objects` (only `import
   keras_dnntools`): the loaded layer has the same class and config, and
   its predictions are identical to the saved model's next predictions, for
   random layers too: they save their random generator's state, so the loaded
   model draws exactly the numbers the original draws next.

Every failure names the check that broke. One subprocess per call (or, with
`check_save_load_fresh_process_many`, one for several layers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

REPOSITORY = Path(__file__).resolve().parent.parent
BATCH_SIZE = 4
NUM_SAMPLES = 8


def _data(input_shape: tuple[int, ...], seed: int = 0):
    """Inputs with both signs (RReLU's negative side is used) and targets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_SAMPLES, *input_shape)).astype("float32")
    y = rng.normal(size=(NUM_SAMPLES, 2)).astype("float32")
    return x, y


def _trainable_model(layer: keras.layers.Layer, input_shape: tuple[int, ...]):
    """`Input -> Dense -> layer -> Flatten -> Dense(2, float32)`."""
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(input_shape[-1])(inputs)
    hidden = layer(hidden)
    hidden = keras.layers.Flatten()(hidden)
    # float32 outputs under mixed precision, as Keras's guide recommends.
    outputs = keras.layers.Dense(2, dtype="float32")(hidden)
    return keras.Model(inputs, outputs)


def _compile(model: keras.Model, jit_compile: bool = False) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit_compile
    )
    return model


def _fit_predict(model: keras.Model, x, y, what: str) -> np.ndarray:
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), f"{what}: fit gave a non-finite loss {loss}"
    predictions = model.predict(x, batch_size=BATCH_SIZE, verbose=0)
    assert np.isfinite(predictions).all(), f"{what}: predict gave NaN/inf"
    return predictions


def check_build_and_shapes(make_layer, input_shape) -> None:
    """Sequential and functional models; compute_output_shape vs real outputs."""
    x, _ = _data(input_shape)
    layer = make_layer()
    sequential = keras.Sequential([keras.Input(input_shape), layer])
    eager = keras.ops.convert_to_numpy(sequential(x))
    expected = tuple(layer.compute_output_shape((NUM_SAMPLES, *input_shape)))
    assert eager.shape == expected, (
        f"shapes: compute_output_shape gives {expected}, the call {eager.shape}"
    )
    inputs = keras.Input(input_shape)
    layer = make_layer()
    outputs = layer(inputs)
    symbolic = tuple(layer.compute_output_shape((None, *input_shape)))
    assert tuple(outputs.shape) == symbolic, (
        f"shapes: symbolic output {tuple(outputs.shape)}, "
        f"compute_output_shape {symbolic}"
    )
    functional = keras.Model(inputs, outputs)
    assert keras.ops.convert_to_numpy(functional(x)).shape == expected


def check_fit_and_jit(make_layer, input_shape, deterministic: bool) -> None:
    """One fit step and predict, without and with XLA."""
    x, y = _data(input_shape)
    keras.utils.set_random_seed(0)
    model = _compile(_trainable_model(make_layer(), input_shape))
    plain = _fit_predict(model, x, y, "fit/predict")
    if deterministic:
        again = model.predict(x, batch_size=BATCH_SIZE, verbose=0)
        np.testing.assert_array_equal(
            again, plain, err_msg="predict is not deterministic"
        )
    if keras.backend.backend() == "torch":
        # jit_compile=True is torch.compile (dynamo) there, which fails on
        # Keras's Functional call; tests/reliability/test_jit.py says so too.
        return
    _compile(model, jit_compile=True)
    if deterministic:
        jitted = model.predict(x, batch_size=BATCH_SIZE, verbose=0)
        np.testing.assert_allclose(
            jitted,
            plain,
            rtol=1e-5,
            atol=1e-6,
            err_msg="jit_compile=True: predictions differ from the plain ones",
        )
    _fit_predict(model, x, y, "jit_compile=True")


def check_mixed_precision(make_layer, input_shape) -> None:
    """Output dtype follows the policy; fit and predict give no NaN."""
    x, y = _data(input_shape)
    original = keras.config.dtype_policy()
    try:
        for policy in ("mixed_float16", "mixed_bfloat16"):
            keras.config.set_dtype_policy(policy)
            compute_dtype = keras.config.dtype_policy().compute_dtype
            layer = make_layer()
            output = layer(x)
            dtype = keras.backend.standardize_dtype(output.dtype)
            assert dtype == compute_dtype, (
                f"{policy}: output dtype {dtype}, expected {compute_dtype}"
            )
            values = keras.ops.convert_to_numpy(keras.ops.cast(output, "float32"))
            assert not np.isnan(values).any(), f"{policy}: NaN in the output"
            keras.utils.set_random_seed(0)
            model = _compile(_trainable_model(make_layer(), input_shape))
            _fit_predict(model, x, y, policy)
    finally:
        keras.config.set_dtype_policy(original)


def check_config_round_trip(make_layer, input_shape) -> None:
    """Whole configs equal after from_config and after (de)serialization, and
    the rebuilt layer computes what the original computes."""
    layer = make_layer()
    config = layer.get_config()
    assert "name" in config, "config: no name"
    json.dumps(config)  # raises if not JSON-able
    clone = type(layer).from_config(config)
    assert clone.get_config() == config, (
        f"config: from_config(get_config()) gives {clone.get_config()}, "
        f"expected {config}"
    )
    serialized = keras.saving.serialize_keras_object(layer)
    rebuilt = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(rebuilt) is type(layer), (
        f"deserialize: got {type(rebuilt).__name__}, expected {type(layer).__name__}"
    )
    assert rebuilt.get_config() == config, (
        f"deserialize: config {rebuilt.get_config()}, expected {config}"
    )
    # A constructor argument missing from the config shows in the outputs.
    # (Stochastic layers are seeded: the clone draws the same numbers.)
    x, _ = _data(input_shape)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(clone(x)),
        keras.ops.convert_to_numpy(layer(x)),
        err_msg="config: the layer rebuilt from its config computes otherwise",
    )


_CHILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    if os.environ["KERAS_BACKEND"] == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras
    import keras_dnntools  # registers our classes, as a user's import does
    for folder, name in zip(sys.argv[1::2], sys.argv[2::2]):
        model = keras.models.load_model(
            os.path.join(folder, "model.keras"), safe_mode=True
        )
        layer = model.get_layer(name)
        x = np.load(os.path.join(folder, "x.npy"))
        predictions = model.predict(x, batch_size=4, verbose=0)
        np.save(os.path.join(folder, "child.npy"), predictions)
        info = {
            "module": type(layer).__module__,
            "class": type(layer).__name__,
            "config": layer.get_config(),
        }
        with open(os.path.join(folder, "child.json"), "w") as file:
            json.dump(info, file)
    """
)


def check_save_load_fresh_process(make_layer, input_shape, tmp_path: Path) -> None:
    """`.keras` save, then load_model(safe_mode=True) in a fresh process."""
    check_save_load_fresh_process_many([(make_layer, input_shape)], tmp_path)


def check_save_load_fresh_process_many(cases, tmp_path: Path) -> None:
    """`check_save_load_fresh_process` for each ``(make_layer, input_shape)``
    of `cases`, with one fresh process for all (its imports are most of its
    cost)."""
    saved = []
    for index, (make_layer, input_shape) in enumerate(cases):
        x, y = _data(input_shape)
        keras.utils.set_random_seed(0)
        layer = make_layer()
        model = _compile(_trainable_model(layer, input_shape))
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
        folder = Path(tmp_path) / str(index)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.keras")
        np.save(folder / "x.npy", x)
        # The saved model's next predictions: a random layer saves its
        # generator state, so the loaded model draws the same numbers.
        reference = model.predict(x, batch_size=BATCH_SIZE, verbose=0)
        saved.append((folder, layer, reference))
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY), environment.get("PYTHONPATH", "")]
    )
    arguments = [
        str(part) for folder, layer, _ in saved for part in (folder, layer.name)
    ]
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, (
        f"load_model in a fresh process failed:\n{completed.stderr[-4000:]}"
    )
    for folder, layer, reference in saved:
        what = f"fresh process, {type(layer).__name__}"
        info = json.loads((folder / "child.json").read_text())
        loaded_class = f"{info['module']}.{info['class']}"
        expected_class = f"{type(layer).__module__}.{type(layer).__name__}"
        assert loaded_class == expected_class, (
            f"{what}: loaded layer is {loaded_class}, expected {expected_class}"
        )
        expected_config = json.loads(json.dumps(layer.get_config()))
        assert info["config"] == expected_config, (
            f"{what}: config {info['config']}, expected {expected_config}"
        )
        np.testing.assert_array_equal(
            np.load(folder / "child.npy"),
            reference,
            err_msg=f"{what}: predictions of the loaded model differ",
        )


def check_layer_contract(
    make_layer: Callable[[], keras.layers.Layer],
    input_shape: tuple[int, ...],
    *,
    tmp_path: Any,
    deterministic: bool = True,
    fresh_process: bool = True,
) -> None:
    """Runs every check of the layer contract (see the module docstring).

    Args:
        make_layer: builds a fresh layer.
        input_shape: the layer's input shape, without the batch axis.
        tmp_path: a fresh folder (pytest's `tmp_path`).
        deterministic: whether the layer's inference (`predict`) output is
            deterministic (RReLU: yes; Monte Carlo dropout: no).
        fresh_process: run check 6 here; a module with several layers
            passes False and checks them all in one fresh process with
            `check_save_load_fresh_process_many`.
    """
    check_build_and_shapes(make_layer, input_shape)
    check_config_round_trip(make_layer, input_shape)
    check_fit_and_jit(make_layer, input_shape, deterministic)
    check_mixed_precision(make_layer, input_shape)
    if fresh_process:
        check_save_load_fresh_process(make_layer, input_shape, tmp_path)
