"""kdt.layers: Keras layers (Monte Carlo dropout family, RReLU)."""

from keras_dnntools.layers.mc_dropout import (
    MCAlphaDropout,
    MCDropout,
    MCSpatialDropout1D,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
)
from keras_dnntools.layers.rrelu import RReLU

__all__ = [
    "MCAlphaDropout",
    "MCDropout",
    "MCSpatialDropout1D",
    "MCSpatialDropout2D",
    "MCSpatialDropout3D",
    "RReLU",
]
