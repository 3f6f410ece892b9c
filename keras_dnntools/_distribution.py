"""The scope a model's variables were created in, for variables made later.

Under a TensorFlow `tf.distribute` strategy (MirroredStrategy), every variable
that belongs to a model built in `strategy.scope()` must be created in that
scope too: Keras enters it inside `fit()`, but callbacks (`on_train_begin`,
`on_epoch_begin`) and helpers called between `fit`s run outside it. Optimizer
slots that we build there (`LearningRateFinder`, `GradualUnfreezing`) go
through `strategy_scope`. Other backends have no strategy: a no-op.
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
