"""kdt.initializers: data-dependent initialization (LSUV)."""

from keras_dnntools.initializers.lsuv import lsuv

__all__ = ["lsuv"]
