"""`check`: one forward and backward pass, a per-layer table, and the remedies."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_dnntools._data import check_fit_data
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_choice,
    check_int,
    check_name,
    check_sequence,
    element_of_type,
    invalid_type,
    is_real,
)
from keras_dnntools.diagnostics import _inspection

KINDS = (
    "vanishing_gradients",
    "exploding_gradients",
    "dead_units",
    "saturated_units",
    "not_self_normalizing",
)
# Thresholds of the findings (see `check`'s docstring).
VANISHING_RATIO = 0.1
EXPLODING_RMS = 10.0
EXPLODING_GROWTH = 100.0
DEAD_FRACTION = 0.5
SATURATED_FRACTION = 0.2
SELU_STD_RANGE = (0.5, 2.0)

REMEDIES = {
    "vanishing_gradients": (
        "Use an initialization matched to the activation (He for the ReLU family, "
        "LeCun normal for SELU, Glorot for sigmoid/tanh) and a non-saturating "
        "activation (ReLU, leaky ReLU, ELU, SELU); add BatchNormalization, or "
        "initialize with kdt.initializers.lsuv."
    ),
    "exploding_gradients": (
        "Shrink the initial weights (He or Glorot initialization instead of a "
        "large fixed stddev), add BatchNormalization, or clip the gradients "
        "(e.g. keras.optimizers.SGD(clipnorm=1.0))."
    ),
    "dead_units": (
        "Use He initialization and zero biases, a leaky activation (LeakyReLU, "
        "ELU, SELU, kdt.layers.RReLU), or a lower learning rate."
    ),
    "saturated_units": (
        "Use Glorot initialization for sigmoid/tanh, or better a non-saturating "
        "activation (ReLU family with He initialization), or BatchNormalization "
        "before the activation."
    ),
    "not_self_normalizing": (
        "SELU self-normalizes only in a plain stack of Dense layers with LeCun "
        "normal initialization, standardized inputs, no BatchNormalization, no "
        "l1/l2/max-norm on the kernels, and AlphaDropout instead of Dropout."
    ),
}


@public("diagnostics")
@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem `kdt.diagnostics.check` found, with the chapter's remedy.

    Args:
        kind: one of ``"vanishing_gradients"``, ``"exploding_gradients"``,
            ``"dead_units"``, ``"saturated_units"``, ``"not_self_normalizing"``.
        layer: the name of the layer concerned, or None for the whole model.
        message: what was measured, in words.
        remedy: the fix the chapter recommends.

    Example:

    >>> finding = kdt.diagnostics.Finding("dead_units", "dense", "90% dead", "...")
    >>> finding.kind
    'dead_units'
    """

    kind: str
    layer: str | None
    message: str
    remedy: str

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        check_name("layer", self.layer)
        for field in ("message", "remedy"):
            if not isinstance(getattr(self, field), str):
                raise invalid_type(field, "a string", getattr(self, field))


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """The measurements of one weighted layer (one row of the report).

    Attributes:
        name: the layer's name.
        activation: the activation measured (``"relu"``, ``"sigmoid"``, ...).
        activation_mean: mean of the layer's output over the batch.
        activation_std: population std of the output over the batch.
        gradient_norm: L2 norm of the gradients of its trainable weights.
        gradient_rms: ``gradient_norm / sqrt(number of trainable parameters)``.
        dead_fraction: fraction of units whose output is <= 0 for every example
            (ReLU family; 0 otherwise).
        saturated_fraction: fraction of outputs in the flat tails of a
            sigmoid/tanh-like activation (0 otherwise).
    """

    name: str
    activation: str
    activation_mean: float
    activation_std: float
    gradient_norm: float
    gradient_rms: float
    dead_fraction: float
    saturated_fraction: float


@public("diagnostics")
class DiagnosticReport:
    """What `kdt.diagnostics.check` measured and found.

    Args:
        layers: the `LayerRow` of each weighted layer, bottom to top.
        findings: the `Finding`s, most basic first.
        loss: the loss of the pass (or the mean output when there was no loss).

    Attributes:
        layers: as above; each row has ``name``, ``activation_std``,
            ``gradient_norm``, ``dead_fraction``, ``saturated_fraction`` (and
            ``activation``, ``activation_mean``, ``gradient_rms``).
        findings: as above.
        loss: as above.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> report = kdt.diagnostics.check(model, np.ones((8, 4), "float32"))
    >>> [row.name for row in report.layers] == [model.layers[0].name]
    True
    >>> report.kinds()
    []
    """

    def __init__(self, layers, findings, loss: float):
        self.layers = list(
            check_sequence(
                "layers",
                layers,
                element_of_type(LayerRow, "a LayerRow"),
                expected="a list of LayerRow",
            )
        )
        self.findings = list(
            check_sequence(
                "findings",
                findings,
                element_of_type(Finding, "a Finding"),
                expected="a list of Finding",
            )
        )
        # NaN and inf are measurements here (an exploding model's loss).
        if not is_real(loss):
            raise invalid_type("loss", "a real number", loss)
        self.loss = float(loss)

    def kinds(self) -> list[str]:
        """The distinct kinds of the findings, in order."""
        return list(dict.fromkeys(finding.kind for finding in self.findings))

    def __str__(self) -> str:
        header = (
            f"{'layer':<20} {'activation':<11} {'act mean':>9} {'act std':>9} "
            f"{'grad norm':>10} {'grad rms':>10} {'dead':>6} {'saturated':>9}"
        )
        lines = [header, "-" * len(header)]
        for row in self.layers:
            lines.append(
                f"{row.name[:20]:<20} {row.activation[:11]:<11} "
                f"{row.activation_mean:>9.3g} {row.activation_std:>9.3g} "
                f"{row.gradient_norm:>10.3g} {row.gradient_rms:>10.3g} "
                f"{row.dead_fraction:>6.0%} {row.saturated_fraction:>9.0%}"
            )
        lines.append("")
        if not self.findings:
            lines.append("No problem found.")
        for finding in self.findings:
            where = f" ({finding.layer})" if finding.layer else ""
            lines.append(f"* {finding.kind}{where}: {finding.message}")
            lines.append(f"  Remedy: {finding.remedy}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<DiagnosticReport: {len(self.layers)} layers, findings={self.kinds()}>"

    def plot(self, ax=None):
        """Draws the report as a chart (`kdt.plotting.plot_diagnostic_report`)."""
        from keras_dnntools.plotting import plot_diagnostic_report

        return plot_diagnostic_report(self, ax=ax)


def _batch(x, y, batch_size):
    def first(data):
        if data is None:
            return None
        if isinstance(data, dict):
            return {key: first(value) for key, value in data.items()}
        if isinstance(data, (list, tuple)):
            return type(data)(first(value) for value in data)
        return np.asarray(data)[:batch_size]

    return first(x), first(y)


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _find_vanishing(rows):
    alive = [
        r for r in rows if r.dead_fraction < DEAD_FRACTION and _finite(r.gradient_rms)
    ]
    if len(alive) < 2:
        return []
    largest = max(r.gradient_rms for r in alive)
    if largest <= 0:
        return []
    weak = [r for r in alive if r.gradient_rms < VANISHING_RATIO * largest]
    if not weak:
        return []
    worst = min(weak, key=lambda r: r.gradient_rms)
    names = ", ".join(r.name for r in weak)
    return [
        Finding(
            "vanishing_gradients",
            worst.name,
            f"the gradients of {names} are less than {VANISHING_RATIO:g}x the "
            f"largest layer's (per weight, rms); {worst.name} gets "
            f"{worst.gradient_rms / largest:.1e}x: its weights will barely move",
            REMEDIES["vanishing_gradients"],
        )
    ]


def _find_exploding(rows, loss, optimizer):
    problems = []
    if not _finite(loss) or any(not _finite(r.gradient_norm) for r in rows):
        problems.append("the loss or some gradients are not finite")
    else:
        largest = max(rows, key=lambda r: r.gradient_rms)
        if largest.gradient_rms > EXPLODING_RMS and not _clips(optimizer):
            problems.append(
                f"{largest.name}'s gradients have an rms of "
                f"{largest.gradient_rms:.3g} per weight (> {EXPLODING_RMS:g})"
            )
        hidden = [r for r in rows[:-1] if r.activation_std > 0]
        if len(hidden) >= 2:
            growth = hidden[-1].activation_std / hidden[0].activation_std
            if growth > EXPLODING_GROWTH and not _clips(optimizer):
                problems.append(
                    f"the activations' std grows {growth:.3g}x from "
                    f"{hidden[0].name} to {hidden[-1].name}"
                )
    if not problems:
        return []
    top = max(
        rows, key=lambda r: r.gradient_rms if _finite(r.gradient_rms) else math.inf
    )
    return [
        Finding(
            "exploding_gradients",
            top.name,
            "; ".join(problems),
            REMEDIES["exploding_gradients"],
        )
    ]


def _clips(optimizer) -> bool:
    if optimizer is None:
        return False
    return any(
        getattr(optimizer, name, None) is not None
        for name in ("clipnorm", "clipvalue", "global_clipnorm")
    )


def _find_fraction(rows, kind, attribute, threshold, what):
    hit = [r for r in rows if getattr(r, attribute) >= threshold]
    if not hit:
        return []
    worst = max(hit, key=lambda r: getattr(r, attribute))
    names = ", ".join(f"{r.name} ({getattr(r, attribute):.0%})" for r in hit)
    return [
        Finding(
            kind,
            worst.name,
            f"{what} in {names} (threshold {threshold:.0%})",
            REMEDIES[kind],
        )
    ]


def _is_lecun_normal(initializer) -> bool:
    if isinstance(initializer, keras.initializers.LecunNormal):
        return True
    if isinstance(initializer, keras.initializers.VarianceScaling):
        config = initializer.get_config()
        return (
            config.get("scale") == 1.0
            and config.get("mode") == "fan_in"
            and config.get("distribution") in ("normal", "truncated_normal")
        )
    return False


def _find_not_self_normalizing(model, watched, rows, x):
    selu = [w for w in watched if w.activation == "selu"]
    if not selu:
        return []
    findings = []

    def add(layer, message):
        findings.append(
            Finding(
                "not_self_normalizing", layer, message, REMEDIES["not_self_normalizing"]
            )
        )

    for layer in model.layers:
        if isinstance(layer, _inspection._NORMALIZATION):
            add(layer.name, f"{layer.name} is a {type(layer).__name__} in a SELU net")
        elif type(layer) is keras.layers.Dropout:
            add(
                layer.name,
                f"{layer.name} is a plain Dropout (use AlphaDropout): it breaks "
                "the mean 0 / variance 1 fixed point",
            )
    for w in selu:
        initializer = getattr(w.layer, "kernel_initializer", None)
        if initializer is not None and not _is_lecun_normal(initializer):
            add(
                w.layer.name,
                f"{w.layer.name} uses {type(initializer).__name__} initialization, "
                "not LeCun normal",
            )
        for attribute in ("kernel_regularizer", "kernel_constraint"):
            if getattr(w.layer, attribute, None) is not None:
                add(w.layer.name, f"{w.layer.name} has a {attribute}")
    inputs = x if not isinstance(x, (list, tuple, dict)) else None
    if inputs is not None:
        flat = np.asarray(inputs, dtype="float64").reshape(len(inputs), -1)
        mean = float(np.mean(np.abs(flat.mean(axis=0))))
        std = float(np.mean(flat.std(axis=0)))
        if mean > 0.5 or not 0.5 <= std <= 2.0:
            add(
                None,
                f"the inputs are not standardized (mean |feature mean| {mean:.3g}, "
                f"mean feature std {std:.3g}): standardize them (mean 0, std 1)",
            )
    by_name = {r.name: r for r in rows}
    low, high = SELU_STD_RANGE
    drifted = [
        by_name[w.layer.name]
        for w in selu
        if not low <= by_name[w.layer.name].activation_std <= high
    ]
    if drifted and not findings:
        worst = drifted[-1]
        add(
            worst.name,
            f"the SELU activations' std left [{low:g}, {high:g}]: "
            f"{worst.name} has {worst.activation_std:.3g}",
        )
    return findings


@public("diagnostics")
def check(model, x, y=None, *, batch_size: int = 256) -> DiagnosticReport:
    """Looks for the chapter's first problem in a model: unstable gradients.

    One forward and backward pass on the first ``batch_size`` examples of
    ``x`` (in training mode, without changing the model: BatchNormalization's
    statistics and dropout's seed state are left as they were). The loss is
    the compiled loss when ``y`` is given and the model is compiled, else the
    mean of the outputs. The report has one row per weighted layer, bottom to
    top, and a `Finding` per problem, with the chapter's remedy:

    - ``"vanishing_gradients"``: a layer's gradient rms (per weight) is less
      than 0.1x the largest layer's (dead layers excepted; not reported
      with exploding gradients, which swamp the comparison).
    - ``"exploding_gradients"``: a non-finite loss or gradient; or, unless the
      optimizer clips gradients, a gradient rms above 10 per weight or hidden
      activations whose std grows more than 100x from the first to the last
      hidden layer.
    - ``"dead_units"``: half or more of a ReLU-family layer's units output
      <= 0 for every example of the batch.
    - ``"saturated_units"``: 20% or more of a sigmoid/tanh-like layer's
      outputs lie where the activation's derivative is below 10% of its
      maximum (sigmoid outside [0.025, 0.975], tanh beyond +-0.95).
    - ``"not_self_normalizing"``: a SELU net that breaks a condition of
      self-normalization (Klambauer et al., 2017): a normalization layer,
      plain Dropout, a kernel initializer other than LeCun normal, a kernel
      regularizer or constraint, unstandardized inputs, or (otherwise) SELU
      activations whose std left [0.5, 2].

    Nested models count as one block and are not entered.

    Args:
        model: a built functional or Sequential `keras.Model`.
        x: the inputs (NumPy arrays or tensors, as for `model.predict`).
        y: the targets, or None.
        batch_size: how many examples of ``x`` the pass uses.

    Returns:
        A `DiagnosticReport`: ``.layers``, ``.findings``, ``str(report)`` (a
        table) and ``.plot(ax=None)``.

    Raises:
        TypeError: if ``model`` is not a Keras model or ``batch_size`` is
            not an integer.
        ValueError: if the model has no layer graph or no weighted layer, or
            ``batch_size < 1``.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(16, activation="relu", bias_initializer=
    ...                        keras.initializers.Constant(-10.0)),
    ...     keras.layers.Dense(1),
    ... ])
    >>> report = kdt.diagnostics.check(model, np.ones((32, 8), "float32"))
    >>> report.kinds()
    ['dead_units']
    >>> report.layers[0].dead_fraction
    1.0
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    watched = _inspection.watched_layers(model)
    check_fit_data(model, x, y)
    probe = _inspection.build_probe(model, watched)
    x_batch, y_batch = _batch(x, y, batch_size)
    loss, activations, grads = _inspection.forward_backward(
        model, probe, x_batch, y_batch
    )
    norms = _inspection.gradient_norms(model, watched, grads)
    rows = []
    for w, activation, norm in zip(watched, activations, norms, strict=True):
        stats = _inspection.activation_stats(activation, w.activation)
        mean, std, dead, saturated = (float(ops.convert_to_numpy(s)) for s in stats)
        count = sum(int(np.prod(v.shape)) for v in w.layer.trainable_weights)
        norm = float(ops.convert_to_numpy(norm))
        rows.append(
            LayerRow(
                name=w.layer.name,
                activation=w.activation,
                activation_mean=mean,
                activation_std=std,
                gradient_norm=norm,
                gradient_rms=norm / math.sqrt(count) if count else 0.0,
                dead_fraction=dead,
                saturated_fraction=saturated,
            )
        )
    loss = float(ops.convert_to_numpy(loss))
    optimizer = getattr(model, "optimizer", None)
    exploding = _find_exploding(rows, loss, optimizer)
    # Exploding gradients swamp the comparison between layers.
    findings = (
        (exploding or _find_vanishing(rows))
        + _find_fraction(
            rows, "dead_units", "dead_fraction", DEAD_FRACTION, "dead units"
        )
        + _find_fraction(
            rows,
            "saturated_units",
            "saturated_fraction",
            SATURATED_FRACTION,
            "saturated outputs",
        )
        + _find_not_self_normalizing(model, watched, rows, x_batch)
    )
    return DiagnosticReport(rows, findings, loss)
