"""Max-norm weight constraints: the `MaxNorm` constraint and `apply_max_norm`."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_dnntools._registry import PACKAGE, public
from keras_dnntools._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_sequence,
    invalid_type,
    invalid_value,
    is_integer,
)

_AXIS_EXPECTED = '"auto", an integer or a non-empty tuple/list of distinct integers'
# No tensor has more axes than this (TensorFlow's limit is 254); a larger
# |axis| is a typo or garbage, refused at construction.
_MAX_RANK = 254


def _check_axis(axis: Any) -> str | int | tuple[int, ...]:
    if isinstance(axis, str):
        return check_choice("axis", axis, ("auto",))
    if isinstance(axis, (tuple, list, np.ndarray)) and not is_integer(axis):
        axes = check_sequence(
            "axis",
            axis,
            lambda name, a: check_int(name, a, low=-_MAX_RANK, high=_MAX_RANK - 1),
            min_length=1,
            expected=_AXIS_EXPECTED,
        )
        if len(set(axes)) != len(axes):
            raise invalid_value("axis", _AXIS_EXPECTED, axis)
        return axes
    if not is_integer(axis):
        raise invalid_type("axis", _AXIS_EXPECTED, axis)
    return check_int("axis", axis, low=-_MAX_RANK, high=_MAX_RANK - 1)


def _check_axis_for_rank(axis: int | tuple[int, ...], rank: int) -> None:
    axes = axis if isinstance(axis, tuple) else (axis,)
    normalised = [a % rank if -rank <= a < rank else None for a in axes]
    if None in normalised or len(set(normalised)) != len(normalised):
        raise invalid_value(
            "axis",
            f"distinct axes of a rank-{rank} weight (-{rank} <= axis < {rank})",
            axis,
        )


@public("constraints", serializable=True)
class MaxNorm(keras.constraints.Constraint):
    """Max-norm weight constraint: caps the norm of each unit's incoming weights.

    After every training step, the weights `w` of each unit are rescaled, if
    needed, so that `||w||_2 <= max_value`, the norm being taken over the
    fan-in axes `axis`. With `axis="auto"` (the default) these are all axes but
    the last, which for Keras's kernels are the fan-in axes of each output
    unit: Dense `(in, out)` -> `0`; Conv1D `(k, in, out)` -> `(0, 1)`; Conv2D
    `(kh, kw, in, out)` -> `(0, 1, 2)`; Conv3D -> `(0, 1, 2, 3)`. (For a
    rank-1 weight "auto" means no axis: each element's magnitude is capped.)
    An explicit `axis` behaves exactly like `keras.constraints.MaxNorm`.
    `kdt.constraints.apply_max_norm` picks the right axes for other layer
    types (transposed, depthwise and separable convolutions, embeddings).

    Reference: [Srivastava et al., 2014, "Dropout: A Simple Way to Prevent
    Neural Networks from Overfitting"](https://jmlr.org/papers/v15/srivastava14a.html).

    Args:
        max_value: Positive float, the maximum norm of each unit's incoming
            weights. Defaults to `1.0`.
        axis: `"auto"`, an integer or a tuple of integers: the axes the norm is
            taken over.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `max_value <= 0` or `axis` is not valid.

    Example:

    >>> constraint = kdt.constraints.MaxNorm(max_value=1.0)
    >>> w = np.array([[3.0, 0.1], [4.0, 0.2]], dtype="float32")  # Dense (in=2, out=2)
    >>> keras.ops.convert_to_numpy(constraint(w)).round(3)
    array([[0.6, 0.1],
           [0.8, 0.2]], dtype=float32)
    >>> layer = keras.layers.Dense(4, kernel_constraint=kdt.constraints.MaxNorm(2.0))
    """

    def __init__(self, max_value: float = 1.0, axis: Any = "auto") -> None:
        self.max_value = check_positive("max_value", max_value)
        self.axis = _check_axis(axis)

    def axes_for(self, rank: int) -> int | tuple[int, ...]:
        """The axes the norm is taken over for a weight of rank `rank`."""
        if self.axis == "auto":
            return tuple(range(rank - 1))
        return self.axis  # type: ignore[return-value]

    def __call__(self, w: Any) -> Any:
        w = ops.convert_to_tensor(w)
        axis = self.axes_for(len(w.shape))
        if self.axis != "auto":
            _check_axis_for_rank(axis, len(w.shape))
        # The same arithmetic as keras.constraints.MaxNorm.
        norms = ops.sqrt(ops.sum(ops.square(w), axis=axis, keepdims=True))
        desired = ops.clip(norms, 0, self.max_value)
        return ops.cast(w, norms.dtype) * (desired / (keras.config.epsilon() + norms))

    def get_config(self) -> dict[str, Any]:
        axis = list(self.axis) if isinstance(self.axis, tuple) else self.axis
        return {"max_value": self.max_value, "axis": axis}


# Which weights of which layer types get a max-norm, and over which axes.
# Each entry: (constructor attribute holding the constraint, weight name,
# fan-in axes). Keras's kernel layouts:
#   Dense                (in, out)                      fan-in: all but the last
#   ConvND               (*kernel, in, out)             fan-in: all but the last
#   ConvNDTranspose      (*kernel, out, in)             fan-in of output channel
#                                                       o is kernel[..., o, :]:
#                                                       all but the second-to-last
#   DepthwiseConvND      (*kernel, in, multiplier)      each output channel (c, m)
#                                                       sees kernel[..., c, m]:
#                                                       the spatial axes only
#   SeparableConvND      depthwise as above, pointwise (1.., in*mult, out) as ConvND
#   Embedding            (input_dim, output_dim)        each embedding vector
#                                                       (row) is capped, as
#                                                       torch.nn.Embedding's
#                                                       max_norm does: axis 1
def _transpose_axes(rank: int) -> tuple[int, ...]:
    return (*range(rank - 2), rank - 1)


def _spatial_axes(rank: int) -> tuple[int, ...]:
    return tuple(range(rank - 2))


def _specs(layer: Any) -> list[tuple[str, str, Any]] | None:
    L = keras.layers
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return [("kernel_constraint", "kernel", _transpose_axes(layer.rank + 2))]
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return [("depthwise_constraint", "kernel", _spatial_axes(layer.rank + 2))]
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return [
            ("depthwise_constraint", "depthwise_kernel", _spatial_axes(layer.rank + 2)),
            ("pointwise_constraint", "pointwise_kernel", "auto"),
        ]
    if isinstance(layer, (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)):
        return [("kernel_constraint", "kernel", "auto")]
    if isinstance(layer, L.Embedding):
        return [("embeddings_constraint", "embeddings", 1)]
    return None


_SUPPORTED = (
    "Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, "
    "SeparableConv1D/2D, Embedding"
)
_NORMALIZATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


def _flatten(model: Any) -> Iterator[Any]:
    """Every layer of `model`, nested models included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _flatten(layer)


def _is_unsupported_weighted(layer: Any) -> bool:
    return (
        _specs(layer) is None
        and not isinstance(layer, (keras.Model, *_NORMALIZATION))
        and any(weight.trainable for weight in layer.weights)
    )


def _resolve(model: Any, flat: list[Any], layers: Any) -> list[Any]:
    if layers is None:
        targets = [layer for layer in flat if _specs(layer) is not None]
        skipped = [layer.name for layer in flat if _is_unsupported_weighted(layer)]
        if not targets:
            raise ValueError(
                f"Invalid value for argument `model`: expected a model with at "
                f"least one weighted layer of a supported type ({_SUPPORTED}). "
                f"Received: model={model.name!r} with layers "
                f"{[layer.name for layer in flat]}"
            )
        if skipped:
            warnings.warn(
                f"apply_max_norm: no max-norm put on layers {skipped}: their type "
                f"is not supported ({_SUPPORTED}). Pass `layers=` to choose the "
                "layers explicitly.",
                stacklevel=3,
            )
        return targets
    items = [layers] if isinstance(layers, (str, keras.layers.Layer)) else layers
    if not isinstance(items, Iterable):
        raise TypeError(
            "Invalid type for argument `layers`: expected None or a list of "
            f"layers or layer names. Received: layers={layers!r} of type "
            f"{type(layers).__name__}"
        )
    items = list(items)
    by_name = {layer.name: layer for layer in flat}
    targets, unknown = [], []
    for item in items:
        if isinstance(item, str):
            if item in by_name:
                targets.append(by_name[item])
            else:
                unknown.append(item)
        elif isinstance(item, keras.layers.Layer):
            if any(item is layer for layer in flat):
                targets.append(item)
            else:
                unknown.append(item.name)
        else:
            raise TypeError(
                "Invalid type for argument `layers`: expected None or a list of "
                f"layers or layer names. Received: element {item!r} of type "
                f"{type(item).__name__}"
            )
    if unknown:
        raise ValueError(
            f"Invalid value for argument `layers`: no layer named {unknown} in "
            f"model {model.name!r}. Its layers are {sorted(by_name)}"
        )
    unsupported = [layer.name for layer in targets if _specs(layer) is None]
    if unsupported:
        raise ValueError(
            f"Invalid value for argument `layers`: layers {unsupported} have no "
            f"kernel that apply_max_norm supports ({_SUPPORTED})."
        )
    if not targets:
        raise ValueError(
            "Invalid value for argument `layers`: expected at least one layer. "
            f"Received: layers={layers!r}"
        )
    return targets


def _weight(layer: Any, name: str) -> Any:
    for weight in layer.weights:
        if weight.name == name:
            return weight
    return None


@public("constraints")
def apply_max_norm(
    model: keras.Model,
    max_value: float = 1.0,
    *,
    layers: Any = None,
    clip_now: bool = True,
) -> keras.Model:
    """Puts a max-norm constraint on the kernels of a model, even a compiled one.

    Every supported weighted layer (or only `layers`) gets a
    `kdt.constraints.MaxNorm(max_value, axis=...)` on its kernel, with the
    fan-in axes of its kernel layout:

    - `Dense`, kernel `(in, out)`: axis `0`.
    - `Conv1D/2D/3D`, kernel `(*kernel_size, in, out)`: all axes but the last.
    - `Conv1D/2D/3DTranspose`, kernel `(*kernel_size, out, in)`: all axes but
      the second-to-last (the output channel `o` receives `kernel[..., o, :]`).
    - `DepthwiseConv1D/2D`, kernel `(*kernel_size, in, multiplier)`: the
      spatial axes (each output channel has its own spatial filter).
    - `SeparableConv1D/2D`: the depthwise kernel as `DepthwiseConv`, the
      pointwise kernel `(1, ..., in * multiplier, out)` as `ConvND`.
    - `Embedding`, `(input_dim, output_dim)`: axis `1`, so that each
      embedding vector is capped, as `torch.nn.Embedding(max_norm=...)` does
      (a "fan-in" axis 0 would cap each output dimension over the whole
      vocabulary, which is not what max-norm is used for on embeddings).

    A constraint the kernel already has (`non_neg`, say) is kept: the kernel
    gets `ComposedConstraint(existing, MaxNorm(...))`, which applies the
    existing one first, then the max-norm (applying `apply_max_norm` again
    replaces the max-norm, it does not stack a second one). On a layer with
    LoRA enabled (`layer.enable_lora(rank)`) the frozen kernel is clipped and
    the trainable low-rank factor (`lora_kernel_b` of `Dense`,
    `lora_embeddings_a` of `Embedding`) is scaled after each update, per
    output unit, just enough that the effective kernel
    `kernel + (alpha / rank) * a @ b` stays within `max_value`. Layers inside
    nested models are included. Biases are left alone. The
    constraint is set both on the weight variable (which the optimizer reads)
    and on the layer's constructor attribute (`kernel_constraint`, ...), so it
    is part of the saved model. The model's compiled training step is reset,
    so the next `fit` enforces the constraint after every update without
    compiling the model again. (A training loop of your own wrapped in
    `tf.function` must be traced again.) With `layers=None`, weighted layers
    of other types (recurrent layers, `EinsumDense`, ...) are skipped with a
    warning; normalization layers are never constrained.

    Args:
        model: A `keras.Model`, built or not, compiled or not.
        max_value: Positive float, the maximum norm. Defaults to `1.0`.
        layers: `None` (every supported layer) or a list of layers or layer
            names (a single one is accepted too).
        clip_now: Whether to clip the current weights at once (for layers
            that are built). Otherwise they are clipped at the next update.

    Returns:
        `model`, modified in place.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if `max_value <= 0`, a name in `layers` is unknown or its
            layer type unsupported, or the model has no supported layer.
        NotImplementedError: on the JAX backend, for a layer with LoRA enabled
            (nothing is changed).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = kdt.constraints.apply_max_norm(model, max_value=0.5)
    >>> norms = np.linalg.norm(model.layers[0].kernel.numpy(), axis=0)
    >>> bool((norms <= 0.5 + 1e-6).all())
    True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`: expected a keras.Model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    max_value = check_positive("max_value", max_value)
    clip_now = check_bool("clip_now", clip_now)
    chosen = list(_resolve(model, list(_flatten(model)), layers))
    _refuse_lora_on_jax(chosen)
    for layer in chosen:
        for attribute, weight_name, axis in _specs(layer) or ():
            constraint = _composed(getattr(layer, attribute, None), max_value, axis)
            setattr(layer, attribute, constraint)
            variable = _weight(layer, weight_name) if layer.built else None
            if variable is None:
                continue  # Not built yet: `build` reads the attribute.
            variable.constraint = constraint
            if clip_now:
                variable.assign(constraint(variable))
            if getattr(layer, "lora_enabled", False):
                _constrain_lora(layer, variable, max_value, clip_now)
    # The optimizer reads `variable.constraint` while the train step is traced:
    # drop the traced step so the next `fit` traces it again with the
    # constraints (the optimizer, its state and the compile settings are kept).
    model.train_function = None
    return model


@keras.saving.register_keras_serializable(package=PACKAGE)
class ComposedConstraint(keras.constraints.Constraint):
    """Applies one constraint, then another: how a max-norm joins an existing one.

    Args:
        first: the constraint applied first (the one the weight had).
        then: the constraint applied to its result (the max-norm).
    """

    def __init__(self, first: Any, then: Any) -> None:
        self.first = keras.constraints.get(first)
        self.then = keras.constraints.get(then)

    def __call__(self, w: Any) -> Any:
        return self.then(self.first(w))

    def get_config(self) -> dict[str, Any]:
        return {
            "first": keras.constraints.serialize(self.first),
            "then": keras.constraints.serialize(self.then),
        }


def _composed(existing: Any, max_value: float, axis: Any) -> Any:
    constraint = MaxNorm(max_value, axis=axis)
    if isinstance(existing, ComposedConstraint) and isinstance(existing.then, MaxNorm):
        existing = existing.first
    if existing is None or isinstance(existing, MaxNorm):
        return constraint
    return ComposedConstraint(existing, constraint)


class _LoraFactorMaxNorm:
    """Keeps `base + scale * a @ b` within `max_value` by scaling one factor.

    Each output unit's slice of the factor (a column of `b` for `Dense`, a
    row of `a` for `Embedding`) is multiplied by the largest `t` in [0, 1]
    with `||base_j + t * v_j|| <= max_value`, `v_j` the unit's LoRA update:
    a root of a quadratic in `t`, which exists because `base` is clipped.
    """

    def __init__(self, layer: Any, base: Any, max_value: float, factor: str):
        self.layer, self.base, self.max_value, self.factor = (
            layer,
            base,
            max_value,
            factor,
        )

    def __call__(self, w: Any) -> Any:
        layer = self.layer
        scale = layer.lora_alpha / layer.lora_rank
        base = ops.cast(self.base, w.dtype)
        a, b = _lora_factors(layer)
        if self.factor == "b":
            update = scale * ops.matmul(ops.cast(a, w.dtype), w)
            axis = 0  # Dense: one column per output unit
        else:
            update = scale * ops.matmul(w, ops.cast(b, w.dtype))
            axis = 1  # Embedding: one row per embedding vector
        bb = ops.sum(base * base, axis=axis, keepdims=True)
        bv = ops.sum(base * update, axis=axis, keepdims=True)
        vv = ops.sum(update * update, axis=axis, keepdims=True)
        limit = self.max_value**2
        root = ops.sqrt(ops.maximum(bv * bv - vv * (bb - limit), 0.0))
        t = ops.clip((root - bv) / ops.maximum(vv, 1e-30), 0.0, 1.0)
        fits = bb + 2.0 * bv + vv <= limit
        t = ops.where(fits, ops.ones_like(t), t)
        return w * t


def _lora_factors(layer: Any) -> tuple[Any, Any]:
    if isinstance(layer, keras.layers.Embedding):
        return layer.lora_embeddings_a, layer.lora_embeddings_b
    return layer.lora_kernel_a, layer.lora_kernel_b


def _refuse_lora_on_jax(layers: list) -> None:
    if keras.backend.backend() != "jax":
        return
    for layer in layers:
        if not getattr(layer, "lora_enabled", False) or not _specs(layer):
            continue
        # Keras's JAX trainer applies constraints inside the optimizer's
        # stateless update, which holds only the trainable variables: the
        # LoRA factor's constraint could not read the frozen base kernel.
        raise NotImplementedError(
            f"Layer {layer.name!r} has LoRA enabled: a max-norm on its effective "
            "kernel (kernel + a @ b) is not supported on the JAX backend (the "
            "constraint needs the frozen kernel, which Keras's JAX optimizer "
            "update does not see). Apply max-norm before `enable_lora()`, or "
            "use the TensorFlow or PyTorch backend."
        )


def _constrain_lora(layer: Any, base: Any, max_value: float, clip_now: bool) -> None:
    factor = "a" if isinstance(layer, keras.layers.Embedding) else "b"
    a, b = _lora_factors(layer)
    variable = b if factor == "b" else a
    constraint = _LoraFactorMaxNorm(layer, base, max_value, factor)
    variable.constraint = constraint
    if clip_now:
        variable.assign(constraint(variable))
