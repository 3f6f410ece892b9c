"""The layer contract can fail: broken layers are caught by the right check."""

import keras
import pytest

from tests import layer_contract


@keras.saving.register_keras_serializable(package="layer_contract_test")
class ForgetfulConfig(keras.layers.Layer):
    """Its config leaves out `factor`, so a round trip loses it."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)
        return config


class WrongShape(keras.layers.Layer):
    """compute_output_shape disagrees with the real output."""

    def call(self, inputs):
        return keras.ops.concatenate([inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


class IgnoresPolicy(keras.layers.Layer):
    """Always returns float32, whatever the dtype policy."""

    def call(self, inputs):
        return keras.ops.cast(inputs, "float32")


def test_lost_config_argument_is_caught():
    with pytest.raises(AssertionError, match="config"):
        layer_contract.check_config_round_trip(lambda: ForgetfulConfig(3.0), (3,))


def test_wrong_output_shape_is_caught():
    with pytest.raises(AssertionError, match="shapes"):
        layer_contract.check_build_and_shapes(WrongShape, (3,))


def test_ignored_dtype_policy_is_caught():
    with pytest.raises(AssertionError, match="mixed_float16: output dtype float32"):
        layer_contract.check_mixed_precision(IgnoresPolicy, (3,))


def test_layer_unknown_to_a_fresh_process_is_caught(tmp_path):
    """Registered here only (the fresh process imports keras_dnntools only)."""
    with pytest.raises(AssertionError, match="fresh process"):
        layer_contract.check_save_load_fresh_process(
            lambda: ForgetfulConfig(name="forgetful"), (3,), tmp_path
        )
