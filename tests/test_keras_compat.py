"""What `keras_dnntools._keras_compat` relies on in Keras: one test per contact.

Each test fails when a Keras release changes the private behaviour that the
contact uses, so that the change is found here and not in a user's model.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_dnntools import _keras_compat


def _model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def _data():
    x = np.ones((16, 3), "float32")
    return x, x[:, :1]


# ---------------------------------------------------------------- optimizers


def test_learning_rate_holder_is_the_rate_variable_or_the_schedule():
    optimizer = keras.optimizers.SGD(0.1)
    holder = _keras_compat.learning_rate_holder(optimizer)
    assert isinstance(holder, keras.Variable)
    assert any(holder is v for v in optimizer.variables)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert _keras_compat.learning_rate_holder(keras.optimizers.SGD(schedule)) is (
        schedule
    )


def test_swapping_the_holder_keeps_the_variables_and_evaluates_the_schedule():
    optimizer = keras.optimizers.SGD(0.1)
    variables = list(optimizer.variables)
    rate = _keras_compat.learning_rate_holder(optimizer)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, 10, 0.5)
    _keras_compat.swap_learning_rate_holder(optimizer, schedule)
    assert float(optimizer.learning_rate) == pytest.approx(0.5)
    assert [id(v) for v in optimizer.variables] == [id(v) for v in variables]
    _keras_compat.swap_learning_rate_holder(optimizer, rate)
    assert float(optimizer.learning_rate) == pytest.approx(0.1)


def test_untracked_attribute_stays_out_of_the_optimizer_variables():
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    count = len(optimizer.variables)
    _keras_compat.set_untracked_attribute(
        optimizer, "momentum", keras.Variable(0.5, trainable=False)
    )
    assert len(optimizer.variables) == count
    # Why the contact exists: a plain assignment tracks the variable.
    optimizer.some_state = keras.Variable(0.5, trainable=False)
    assert len(optimizer.variables) == count + 1


def test_an_instance_attribute_shadows_and_unshadows_a_method():
    optimizer = keras.optimizers.SGD(0.1)
    _keras_compat.set_untracked_attribute(optimizer, "get_config", lambda: {"x": 1})
    assert optimizer.get_config() == {"x": 1}
    _keras_compat.remove_instance_attribute(optimizer, "get_config")
    assert optimizer.get_config()["learning_rate"] == pytest.approx(0.1)


def test_built_variables_tracked_variables_and_untracking():
    model = _model()
    optimizer = model.optimizer
    assert _keras_compat.built_variables(optimizer) == []
    optimizer.build(model.trainable_variables)
    built = _keras_compat.built_variables(optimizer)
    assert [id(v) for v in built] == [id(v) for v in model.trainable_variables]
    tracked = _keras_compat.tracked_variables(optimizer)
    assert [id(v) for v in tracked] == [id(v) for v in optimizer.variables]
    # The slots are the last variables tracked, one momentum per variable.
    slots = tracked[-len(built) :]
    assert [tuple(s.shape) for s in slots] == [tuple(v.shape) for v in built]
    _keras_compat.untrack_variable(optimizer, slots[-1])
    assert len(optimizer.variables) == len(tracked) - 1


def test_resetting_the_index_lets_the_optimizer_build_again():
    model = _model()
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables[:2])
    _keras_compat.reset_variable_index(optimizer)
    optimizer.built = False
    optimizer.build(model.trainable_variables)
    optimizer.apply(
        [keras.ops.ones(v.shape) for v in model.trainable_variables],
        model.trainable_variables,
    )


def test_sub_optimizer_for_a_variable_of_a_multi_optimizer():
    model = _model()
    slow, fast = keras.optimizers.SGD(0.01), keras.optimizers.Adam(0.1)
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            default_optimizer=fast, optimizer_map={".*a/.*": slow}
        )
    )
    first, last = model.layers[0].kernel, model.layers[-1].kernel
    assert _keras_compat.sub_optimizer_for(optimizer, first) is slow
    assert _keras_compat.sub_optimizer_for(optimizer, last) is fast


# ----------------------------------------------------------- layers, models


def test_flatten_layers_reaches_inside_wrappers_and_nested_models():
    inner = keras.layers.Dense(2, name="inner")
    nested = keras.Sequential([keras.Input((5, 2)), keras.layers.Dense(3, name="deep")])
    model = keras.Sequential(
        [keras.Input((5, 3)), keras.layers.TimeDistributed(inner), nested]
    )
    names = [layer.name for layer in _keras_compat.flatten_layers(model)]
    assert names[0] == model.name
    assert {"inner", "deep"} <= set(names)


def test_trainable_state_marked_as_compiled_silences_keras_warning():
    model = _model()
    x, y = _data()
    model.fit(x, y, verbose=0)
    assert _keras_compat.compiled_trainable_state(model) is not None
    model.layers[0].trainable = False
    # Keras's own check (3.15 defines it; newer releases call it from fit()).
    with pytest.warns(UserWarning, match="trainable"):
        model._warn_if_trainable_state_changed()
    model.layers[0].trainable = True
    model.fit(x, y, verbose=0)
    model.layers[0].trainable = False
    _keras_compat.mark_trainable_state_compiled(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._warn_if_trainable_state_changed()


# -------------------------------------------------------- fit() in progress


def test_the_running_callback_list_and_fit_in_progress_are_found():
    model = _model()
    x, y = _data()
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["list"] = _keras_compat.running_callback_list()
            seen["fit"] = _keras_compat.fit_in_progress(self.model)
            seen["this_fit"] = _keras_compat.fit_in_progress(self.model, seen["list"])
            seen["other_fit"] = _keras_compat.fit_in_progress(
                self.model, keras.callbacks.CallbackList()
            )

        def on_test_begin(self, logs=None):  # validation inside fit()
            seen["fit_in_evaluate"] = _keras_compat.fit_in_progress(self.model)

    probe = Probe()
    model.fit(x, y, verbose=0, validation_data=(x, y), callbacks=[probe])
    assert isinstance(seen["list"], keras.callbacks.CallbackList)
    assert any(callback is probe for callback in seen["list"].callbacks)
    assert seen["fit"] and seen["fit_in_evaluate"] and seen["this_fit"]
    assert not seen["other_fit"]
    assert not _keras_compat.fit_in_progress(model)
    assert _keras_compat.running_callback_list() is None


@pytest.mark.parametrize(
    "call, method",
    [
        ("fit", "make_train_function"),
        ("train_on_batch", "make_train_function"),
        ("evaluate", "make_test_function"),
        ("test_on_batch", "make_test_function"),
        ("predict", "make_predict_function"),
        ("predict_on_batch", "make_predict_function"),
        ("save", "save"),
        ("save_weights", "save_weights"),
    ],
)
def test_keras_looks_up_the_guarded_methods_on_the_instance(call, method, tmp_path):
    assert method in _keras_compat.GUARDED_METHODS
    model = _model()
    x, y = _data()
    calls = []
    original = getattr(type(model), method)

    def shadow(*args, **kwargs):
        calls.append(method)
        return original(model, *args, **kwargs)

    _keras_compat.shadow_method(model, method, shadow)
    try:
        arguments = {
            "fit": lambda: model.fit(x, y, verbose=0),
            "train_on_batch": lambda: model.train_on_batch(x, y),
            "evaluate": lambda: model.evaluate(x, y, verbose=0),
            "test_on_batch": lambda: model.test_on_batch(x, y),
            "predict": lambda: model.predict(x, verbose=0),
            "predict_on_batch": lambda: model.predict_on_batch(x),
            "save": lambda: model.save(tmp_path / "m.keras"),
            "save_weights": lambda: model.save_weights(tmp_path / "m.weights.h5"),
        }
        arguments[call]()
    finally:
        _keras_compat.unshadow_method(model, method)
    assert calls, f"{call}() did not call {method}() on the instance"
    assert method not in vars(model)


# ---------------------------------------------------------------------------
# Train-step instrumentation (TrainingMonitor)
# ---------------------------------------------------------------------------


def _monitor_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


class _Handshake(keras.callbacks.Callback):
    """Announces each train-function call, like TrainingMonitor does."""

    def __init__(self):
        super().__init__()
        self.live, self.token, self.steps_seen = True, False, 0

    def on_train_begin(self, logs=None):
        def make_step(original):
            def step(*args):
                self.steps_seen += 1  # trace time on TF/JAX, every step on torch
                return original(*args)

            return step

        _keras_compat.install_train_step(
            self.model, make_step, lambda: self.live, self.handshake
        )

    def handshake(self):
        token, self.token = self.token, False
        return token

    def on_train_batch_begin(self, batch, logs=None):
        self.token = True

    def on_train_end(self, logs=None):
        self.live = False
        _keras_compat.uninstall_train_step(self.model)


def test_trainers_build_the_train_function_from_the_instance_train_step():
    # Keras builds `train_function` from `model.train_step` (an instance
    # attribute shadows the method) and calls `model.train_function` after
    # `on_train_batch_begin`.
    model = _monitor_model()
    callback = _Handshake()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[callback], verbose=0)
    assert callback.steps_seen >= 1
    assert not _keras_compat.is_instrumented(model)
    assert model.train_function is None


def test_the_guard_uninstalls_on_a_call_nobody_announced():
    model = _monitor_model()
    callback = _Handshake()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # builds a plain function
    callback.set_model(model)
    callback.on_train_begin()
    assert _keras_compat.is_instrumented(model)
    before = model.get_weights()
    model.train_on_batch(x[:4], y[:4])  # no on_train_batch_begin: not ours
    assert not _keras_compat.is_instrumented(model)
    assert not np.allclose(before[0], model.get_weights()[0])


class _PlainHandshake(_Handshake):
    """Announces every call as one that needs no instrumented step."""

    def on_train_batch_begin(self, batch, logs=None):
        self.token = _keras_compat.PLAIN_STEP


def test_a_call_announced_plain_runs_the_original_step():
    # The plain train function is made from the original step: the
    # instrumented one is never traced (TF, JAX) nor run (torch), and the
    # model trains all the same.
    model = _monitor_model()
    callback = _PlainHandshake()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    before = model.get_weights()
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[callback], verbose=0)
    assert callback.steps_seen == 0
    assert not np.allclose(before[0], model.get_weights()[0])
    assert not _keras_compat.is_instrumented(model)


def test_make_train_function_accepts_force_and_sets_train_function():
    model = _monitor_model()
    model.make_train_function(force=True)
    assert callable(model.train_function)
    assert "train_step" not in vars(model)  # a method, not an instance attribute


# ------------------------------------------------------------ uncertainty


def _functional():
    inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((2,), name="b")}
    merged = keras.layers.Concatenate()([inputs["a"], inputs["b"]])
    hidden = keras.layers.Dense(4, name="hidden")(merged)
    outputs = keras.layers.Dropout(0.5, name="drop")(hidden)
    return keras.Model(inputs, outputs)


def test_functional_class_and_nodes_in_call_order():
    model = _functional()
    assert isinstance(model, _keras_compat.functional_class())
    assert not isinstance(keras.layers.Dense(2), _keras_compat.functional_class())
    names = [
        node.operation.name
        for node in _keras_compat.ordered_nodes(model)
        if not node.is_input
    ]
    assert names.index("hidden") < names.index("drop")


def test_node_call_arguments_replace_the_inputs():
    model = _functional()
    node = next(
        n
        for n in _keras_compat.ordered_nodes(model)
        if getattr(n.operation, "name", "") == "hidden"
    )
    values = {id(kt): "replaced" for kt in node.input_tensors}
    args, kwargs = _keras_compat.node_call_arguments(node, values)
    assert args == ("replaced",) and kwargs == {}


class _NoTraining(keras.layers.Layer):
    def call(self, inputs):
        return inputs


def test_call_context_args_and_sublayers():
    assert "training" in _keras_compat.call_context_args(keras.layers.Dropout(0.5))
    # Layers route `training` through their call context, even without the
    # argument; plain operations (keras.ops nodes) take none.
    assert "training" in _keras_compat.call_context_args(_NoTraining())
    operation = keras.Operation()
    assert _keras_compat.call_context_args(operation) == set()
    nested = keras.Sequential(
        [keras.Input((3,)), keras.Sequential([keras.layers.Dropout(0.1)])]
    )
    kinds = {type(layer).__name__ for layer in _keras_compat.sublayers(nested)}
    assert {"Sequential", "Dropout"} <= kinds
    assert _keras_compat.sublayers(object()) == []


def test_standardize_inputs_orders_a_dict_like_model_inputs():
    model = _functional()
    a, b = np.zeros((1, 3)), np.ones((1, 2))
    flat = _keras_compat.standardize_inputs(model, {"b": b, "a": a})
    assert [tuple(np.shape(v)) for v in flat] == [(1, 3), (1, 2)]


def test_keras_masks_round_trip():
    tensor = keras.ops.ones((2, 3))
    mask = keras.ops.convert_to_tensor([[True, False, True]] * 2)
    _keras_compat.set_keras_mask(tensor, mask)
    assert _keras_compat.get_keras_mask(tensor) is mask
    masked = keras.layers.Masking()(keras.ops.zeros((1, 2, 3)))
    assert _keras_compat.get_keras_mask(masked) is not None


def test_routed_calls_route_and_always_restore():
    layer = keras.layers.Dropout(0.5)
    x = keras.ops.ones((2, 3))
    with _keras_compat.routed_calls([layer], lambda _l, v: v * 7, describe="test"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 7.0)
    assert "call" not in vars(layer)
    try:
        with _keras_compat.routed_calls([layer], lambda _l, v: v, describe="test"):
            raise KeyError("boom")
    except KeyError:
        pass
    assert "call" not in vars(layer)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 1.0)


# ---------------------------------------------------------------------------
# training_in_layer_call (issue 13)
# ---------------------------------------------------------------------------


SEEN: list = []


class _Probe(keras.layers.Layer):
    """Records what `training_in_layer_call()` says inside its call."""

    def call(self, inputs):  # no `training` argument, like an activation
        SEEN.append(_keras_compat.training_in_layer_call())
        return inputs


def test_training_in_layer_call_follows_fit_and_predict():
    SEEN.clear()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), _Probe()])
    model.compile("sgd", "mse", run_eagerly=True)
    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    SEEN.clear()
    model.fit(x, y, batch_size=4, verbose=0)
    # The train step's call says True (torch's trainer first builds the model
    # with one symbolic inference call, hence the last one).
    assert SEEN and SEEN[-1] is True, SEEN
    SEEN.clear()
    model.predict(x, verbose=0)
    assert SEEN == [False]
    SEEN.clear()
    model(x, training=True)
    assert SEEN == [True]
    assert _keras_compat.training_in_layer_call() is None  # outside any call
