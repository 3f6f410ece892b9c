"""The argument checks every public object relies on."""

import numpy as np
import pytest

from keras_dnntools import _validation as v


def test_check_float_accepts_numbers_and_numpy_scalars():
    assert v.check_float("rate", 0.5, low=0, high=1) == 0.5
    assert v.check_float("rate", np.float32(0.25), low=0, high=1) == 0.25
    assert isinstance(v.check_float("rate", 1, low=0), float)


@pytest.mark.parametrize(
    "kwargs, value",
    [
        ({"low": 0, "high": 1, "high_inclusive": False}, 1.0),
        ({"low": 0, "low_inclusive": False}, 0.0),
        ({"low": 0}, -1e-9),
        ({}, float("nan")),
        ({}, float("inf")),
    ],
)
def test_check_float_rejects_out_of_range_with_keras_style_message(kwargs, value):
    with pytest.raises(ValueError, match=r"Invalid value for argument `rate`") as info:
        v.check_float("rate", value, **kwargs)
    assert f"Received: rate={value!r}" in str(info.value)


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_check_float_rejects_non_numbers(value):
    with pytest.raises(TypeError, match=r"argument `rate`: expected a real number"):
        v.check_float("rate", value)


def test_check_positive_excludes_zero():
    assert v.check_positive("decay_steps", 2) == 2.0
    with pytest.raises(ValueError, match=r"decay_steps > 0.0.*decay_steps=0"):
        v.check_positive("decay_steps", 0)
    with pytest.raises(TypeError, match="`decay_steps`"):
        v.check_positive("decay_steps", "1")


def test_check_int():
    assert v.check_int("steps", np.int64(3), low=1) == 3
    with pytest.raises(TypeError, match="`steps`"):
        v.check_int("steps", 3.0)
    with pytest.raises(TypeError, match="`steps`"):
        v.check_int("steps", True)
    with pytest.raises(ValueError, match=r"steps >= 1.*Received: steps=0"):
        v.check_int("steps", 0, low=1)


def test_check_bool_choice_seed():
    assert v.check_bool("clip_now", False) is False
    with pytest.raises(TypeError, match="`clip_now`"):
        v.check_bool("clip_now", 1)
    assert v.check_choice("update", "epoch", ("batch", "epoch")) == "epoch"
    with pytest.raises(ValueError, match=r"one of 'batch', 'epoch'.*update='step'"):
        v.check_choice("update", "step", ("batch", "epoch"))
    assert v.check_seed("seed", None) is None
    with pytest.raises(ValueError, match="`seed`"):
        v.check_seed("seed", -1)


def test_extra_context_is_listed_in_the_message():
    error = v.invalid_value("lower", "0 <= lower <= upper", 0.5, upper=0.2)
    assert str(error) == (
        "Invalid value for argument `lower`: expected 0 <= lower <= upper. "
        "Received: lower=0.5, upper=0.2"
    )


def test_check_examples_takes_backend_tensors_and_refuses_their_nan():
    import keras

    from keras_dnntools._validation import check_examples

    tensor = keras.ops.convert_to_tensor(np.ones((3, 2), "float32"))
    if keras.backend.backend() == "torch":
        tensor.requires_grad_(True)  # .numpy() would raise on it
    assert check_examples("x", tensor) == 3
    bad = keras.ops.convert_to_tensor(np.full((3, 2), np.nan, "float32"))
    with pytest.raises(ValueError, match=r"`x`.*finite"):
        check_examples("x", bad)
