"""Rebuilding an optimizer in place keeps the state of the variables it knew."""

import keras
import numpy as np
import pytest

from keras_dnntools.transfer._optimizer_state import rebuild_in_place


def variables():
    rng = np.random.default_rng(0)
    return [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=name)
        for name, shape in [("c", (3, 2)), ("a", (4, 3)), ("b", (3,))]
    ]


def randomize(optimizer):
    rng = np.random.default_rng(1)
    for variable in optimizer.variables[1:]:
        variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    optimizer.iterations.assign(7)


SLOT_LISTS = {
    keras.optimizers.Adam: ("_momentums", "_velocities"),
    keras.optimizers.SGD: ("momentums",),
    keras.optimizers.Adafactor: ("_r", "_c", "_v"),
    keras.optimizers.Nadam: ("_momentums", "_velocities"),
    keras.optimizers.RMSprop: ("_velocities", "_momentums"),
}


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.Adam(amsgrad=False),
        lambda: keras.optimizers.SGD(momentum=0.9),
        lambda: keras.optimizers.Adafactor(),
        lambda: keras.optimizers.Nadam(),
        lambda: keras.optimizers.RMSprop(momentum=0.5),
    ],
    ids=["adam", "sgd", "adafactor", "nadam", "rmsprop"],
)
def test_known_variables_keep_their_slots(make):
    c, a, b = variables()
    optimizer = make()
    optimizer.build([a, b])
    randomize(optimizer)
    # The torch backend subclasses each optimizer (torch_adam.Adam, ...).
    names = next(SLOT_LISTS[c] for c in type(optimizer).__mro__ if c in SLOT_LISTS)

    def slots(variable):
        index = optimizer._get_variable_index(variable)
        return [getattr(optimizer, name)[index].numpy().copy() for name in names]

    before = {"a": slots(a), "b": slots(b)}
    global_state = (
        optimizer._u_product.numpy().copy()
        if hasattr(optimizer, "_u_product")
        else None
    )
    rebuild_in_place(optimizer, [c, a, b])
    assert int(optimizer.iterations.numpy()) == 7
    for name, variable in (("a", a), ("b", b)):
        for new, old in zip(slots(variable), before[name], strict=True):
            np.testing.assert_array_equal(new, old)
    assert all(not np.any(slot) for slot in slots(c))
    if global_state is not None:
        np.testing.assert_array_equal(optimizer._u_product.numpy(), global_state)
    # Dropping a variable keeps the others' slots too.
    rebuild_in_place(optimizer, [a])
    for new, old in zip(slots(a), before["a"], strict=True):
        np.testing.assert_array_equal(new, old)
    with pytest.raises(KeyError):
        optimizer._get_variable_index(b)


def test_multi_optimizer_rebuilds_each_sub_optimizer():
    c, a, b = variables()
    bottom, top = keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam(1.0)
    optimizer_map = keras.optimizers.OptimizerMap(top, {"c|a": bottom})
    optimizer = keras.optimizers.MultiOptimizer(optimizer_map)
    optimizer.build([a, b])
    randomize(optimizer)
    a_momentum = bottom.momentums[bottom._get_variable_index(a)].numpy().copy()
    b_velocity = top._velocities[top._get_variable_index(b)].numpy().copy()
    rebuild_in_place(optimizer, [c, a, b])
    np.testing.assert_array_equal(
        bottom.momentums[bottom._get_variable_index(a)].numpy(), a_momentum
    )
    np.testing.assert_array_equal(
        top._velocities[top._get_variable_index(b)].numpy(), b_velocity
    )
    grads = [keras.ops.ones(v.shape) for v in (c, a, b)]
    optimizer.apply(grads, [c, a, b])  # MultiOptimizer accepts the new list
    assert int(optimizer.iterations.numpy()) == 8


@pytest.mark.backends(
    "tensorflow",
    "torch",
    reason="Keras's LossScaleOptimizer.apply() outside a train step leaks a tracer "
    "on JAX (its stateful cond)",
)
def test_loss_scale_optimizer_rebuilds_its_inner_optimizer():
    _, a, b = variables()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    optimizer.build([a])
    scale = float(optimizer.dynamic_scale.numpy())
    rebuild_in_place(optimizer, [a, b])
    grads = [np.ones(v.shape, "float32") for v in (a, b)]
    optimizer.apply(grads, [a, b])
    assert float(optimizer.dynamic_scale.numpy()) == scale
    assert optimizer.inner_optimizer._get_variable_index(b) == 1
