"""The scope a model's variables were created in, for variables made later.

Under a TensorFlow `tf.distribute` strategy (MirroredStrategy), every variable
that belongs to a model built in `strategy.scope()` must be created in that
scope too: Keras enters it inside `fit()`, but callbacks (`on_train_begin`,
`on_epoch_begin`) and helpers called between `fit`s run outside it. Optimizer
slots that we build there (`LearningRateFinder`, `GradualUnfreezing`) go
through `strategy_scope`. Inside a mirrored step, `replica_context` tells a
computation which replica runs it. Other backends have no strategy: no-ops.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras


def strategy_scope(model: keras.Model) -> Any:
    """`model.distribute_strategy.scope()` on TensorFlow, else a null context."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None or keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    return strategy.scope()


def replica_context() -> Any:
    """The replica context of a TensorFlow step run by one of several replicas
    (a `MirroredStrategy`), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context
