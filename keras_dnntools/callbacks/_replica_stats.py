"""`TrainingMonitor` under a TensorFlow `MirroredStrategy`: global statistics.

Each replica of a mirrored train step sees its share of the global batch. On
a logged step every replica measures, inside a `tf.cond`, the sums that the
statistics of the global batch need; one all-reduce adds the replicas' sums
after the `tf.cond` (TensorFlow allows no synchronization inside one), and
the statistics are computed from them:

* gradients: Keras scales each replica's loss by 1 / replicas, so the sum of
  the replicas' gradients is the global gradient, the one the optimizer
  applies;
* mean and std: counts, sums, and the squared deviations from the replica's
  own mean, combined in float64 (Chan, Golub and LeVeque's pairwise formula);
* dead units: a unit is dead when no replica saw it positive;
* the saturated fraction and the activation histograms: counts.
"""

from __future__ import annotations

from keras import ops

from keras_dnntools.diagnostics._inspection import RELU_FAMILY, SATURATION


def _units(kind: str, width: int) -> int:
    return width if kind in RELU_FAMILY else 1


def local_moments(activation, kind: str):
    """This replica's sums: ``([n, sum, m2, n * mean**2, saturated], alive)``."""
    a = ops.cast(activation, "float32")
    size = ops.size(a)
    local_mean = ops.sum(a) / ops.cast(ops.maximum(size, 1), "float32")
    n = ops.cast(size, "float64")
    total = ops.cast(ops.sum(a), "float64")
    m2 = ops.cast(ops.sum(ops.square(a - local_mean)), "float64")
    squared_mean = total * total / ops.maximum(n, 1.0)
    if kind in SATURATION:
        low, high = SATURATION[kind]
        flat = ops.logical_or(a <= low, a >= high)
        saturated = ops.cast(ops.sum(ops.cast(flat, "float32")), "float64")
    else:
        saturated = ops.zeros((), "float64")
    moments = ops.stack([n, total, m2, squared_mean, saturated])
    if kind in RELU_FAMILY:
        units = ops.reshape(a, (-1, a.shape[-1]))
        # Positive somewhere in the batch (NaN counts as alive, as on one device).
        alive = ops.any(ops.logical_not(units <= 0.0), axis=0)
        alive = ops.cast(alive, "float32")
    else:
        alive = ops.zeros((1,), "float32")
    return moments, alive


def no_moments(kind: str, width: int):
    """The zeros a replica adds on a step that is not logged."""
    return ops.zeros((5,), "float64"), ops.zeros((_units(kind, width),), "float32")


def global_stats(moments, alive, kind: str):
    """``(mean, std, dead_fraction, saturated_fraction)`` of the global batch."""
    n, total, m2, squared_mean, saturated = (moments[i] for i in range(5))
    n = ops.maximum(n, 1.0)
    mean = total / n
    # Sum of squares about the global mean: within + between the replicas.
    variance = (m2 + squared_mean - total * total / n) / n
    std = ops.sqrt(ops.maximum(variance, 0.0))
    zero = ops.zeros((), "float32")
    dead = zero
    if kind in RELU_FAMILY:
        dead = ops.mean(ops.cast(ops.equal(alive, 0.0), "float32"))
    fraction = ops.cast(saturated / n, "float32") if kind in SATURATION else zero
    return ops.cast(mean, "float32"), ops.cast(std, "float32"), dead, fraction
