"""`to_mc_dropout`: a weight-sharing copy of a model with always-on dropout."""

from __future__ import annotations

import keras

from keras_dnntools._registry import public
from keras_dnntools._validation import invalid_type
from keras_dnntools.layers import (
    MCAlphaDropout,
    MCDropout,
    MCSpatialDropout1D,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
)
from keras_dnntools.uncertainty import _graph

_MC_LAYERS = (
    MCDropout,
    MCAlphaDropout,
    MCSpatialDropout1D,
    MCSpatialDropout2D,
    MCSpatialDropout3D,
)


def _counterpart(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The always-active MC layer with `layer`'s rate, seed, name and dtype."""
    common = {"seed": layer.seed, "name": layer.name, "dtype": layer.dtype_policy}
    for keras_class, mc_class in (
        (keras.layers.SpatialDropout1D, MCSpatialDropout1D),
        (keras.layers.SpatialDropout2D, MCSpatialDropout2D),
        (keras.layers.SpatialDropout3D, MCSpatialDropout3D),
    ):
        if isinstance(layer, keras_class):
            if mc_class is MCSpatialDropout1D:
                return mc_class(layer.rate, **common)
            return mc_class(layer.rate, data_format=layer.data_format, **common)
    mc_class = (
        MCAlphaDropout if isinstance(layer, keras.layers.AlphaDropout) else MCDropout
    )
    return mc_class(layer.rate, noise_shape=layer.noise_shape, **common)


def _convert(layer: keras.layers.Layer) -> keras.layers.Layer:
    """`layer` with its dropout always active: converted, rebuilt, or itself."""
    if _graph.is_dropout(layer):
        return layer if isinstance(layer, _MC_LAYERS) else _counterpart(layer)
    if not _graph.dropout_layers(layer):
        return layer  # Shared: same object, same weights.
    if _graph.is_sequential(layer) or _graph.is_functional(layer):
        return _clone(layer)
    if type(layer) is keras.layers.TimeDistributed:
        config = layer.get_config()
        config.pop("layer", None)
        return keras.layers.TimeDistributed(_convert(layer.layer), **config)
    inner = [sub.name for sub in _graph.dropout_layers(layer)]
    raise ValueError(
        "Invalid value for argument `model`: expected dropout layers that "
        "to_mc_dropout can reach (in Sequential or functional models, nested "
        f"ones, or keras.layers.TimeDistributed). Layer {layer.name!r} of type "
        f"{type(layer).__name__} holds dropout layer(s) {inner} in its own code, "
        "which a copy cannot switch on: use kdt.layers.MCDropout in that "
        "layer's code, or kdt.uncertainty.mc_predict (which samples them). "
        f"Received: a model containing layer {layer.name!r}"
    )


def _clone(model: keras.Model) -> keras.Model:
    return keras.models.clone_model(model, clone_function=_convert, recursive=True)


@public("uncertainty")
def to_mc_dropout(model: keras.Model) -> keras.Model:
    """A copy of `model` that shares its weights and keeps dropout on.

    Every dropout layer (`keras.layers.Dropout`, `SpatialDropout1D/2D/3D`,
    `AlphaDropout`, at any depth of nested models, and inside
    `keras.layers.TimeDistributed`) is replaced by its
    always-active Monte Carlo counterpart (`kdt.layers.MCDropout`,
    `MCSpatialDropout1D/2D/3D`, `MCAlphaDropout`) with the same rate, noise
    shape, seed, name and dtype policy. Every other layer is *the same layer
    object* as in `model`: the copy shares all weights, so training either
    model changes both, and BatchNormalization keeps running in inference
    mode at inference. `model` itself is left as it was.

    Use the copy where a plain Keras model is needed (`predict`, `export`,
    serving): each call is one Monte Carlo sample. For many samples at once,
    with their mean and uncertainty, `kdt.uncertainty.mc_predict` is faster
    and works on `model` directly.

    The copy is not compiled; compile it to `fit` or `evaluate` it.

    Args:
        model: a Sequential or functional Keras model (nested models are
            converted recursively).

    Returns:
        A new `keras.Model` sharing `model`'s weights.

    Raises:
        TypeError: if `model` is not a Keras model, or is a subclassed model
            (whose `call` cannot be rebuilt: use `kdt.layers.MCDropout` in its
            code, or `mc_predict`, which handles subclassed models).
        ValueError: if `model` has no dropout layer, or holds one that the
            copy cannot switch on (inside a custom layer's own code): the
            message names the layer.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8),
    ...     keras.layers.Dropout(0.5),
    ...     keras.layers.Dense(1),
    ... ])
    >>> mc_model = kdt.uncertainty.to_mc_dropout(model)
    >>> type(mc_model.layers[1]).__name__
    'MCDropout'
    >>> mc_model.layers[0] is model.layers[0]  # shared weights
    True
    >>> x = np.ones((100, 4), "float32")
    >>> first, second = mc_model.predict(x, verbose=0), mc_model.predict(x, verbose=0)
    >>> bool((first != second).any())  # dropout active at inference
    True
    """
    if not isinstance(model, keras.Model):
        raise invalid_type("model", "a keras.Model", model)
    if not (isinstance(model, keras.Sequential) or _graph.is_functional(model)):
        raise TypeError(
            "Invalid type for argument `model`: expected a Sequential or "
            "functional model. A subclassed model's `call` cannot be rebuilt: use "
            "kdt.layers.MCDropout in its code, or kdt.uncertainty.mc_predict, "
            f"which samples subclassed models too. Received: model={model.name!r} "
            f"of type {type(model).__name__}"
        )
    if not _graph.dropout_layers(model):
        raise ValueError(
            "Invalid value for argument `model`: expected a model with at least "
            "one dropout layer (keras.layers.Dropout, SpatialDropout1D/2D/3D or "
            "AlphaDropout). This model has no dropout layer, so there is nothing "
            f"to keep active. Received: model={model.name!r}"
        )
    return _clone(model)
