"""Every contact with Keras's private internals, each with why and a test.

Nothing else in the package may touch `keras.src...` or private attributes;
`tests/test_keras_compat.py` fails when Keras changes under one of these.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# Layer call context (issue 13: `kdt.activations.rrelu` used as an activation)
# ---------------------------------------------------------------------------


def training_in_layer_call() -> bool | None:
    """The `training` flag of the Keras layer call now running, else None.

    Why: a function passed as `Dense(activation=...)` is called without
    `training`; only the layer call context Keras keeps while `fit()` runs a
    model (`keras.src.layers.layer.CallContext`, stored as the global attribute
    `"current_call_ctx"`) says whether this is a training step. Keras has no
    public accessor for it. Used to refuse `rrelu` as an activation in
    training, where it would silently train as a plain leaky ReLU.
    """
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    if context is None:
        return None
    training = context.get_value("training")
    return None if training is None else bool(training)
