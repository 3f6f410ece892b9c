"""kdt.activations: activation functions (functional forms of our layers)."""

from keras_dnntools.activations.rrelu import rrelu

__all__ = ["rrelu"]
