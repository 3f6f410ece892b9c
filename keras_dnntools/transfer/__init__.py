"""kdt.transfer: reuse a trained network (freeze, "B on A", fine-tune).

The chapter's transfer-learning recipe with its traps handled: freeze the
reused layers (nested models and BatchNormalization included), train the new
head, unfreeze the top layers, lower the rate, train again; or all of it in one
call with `fine_tune`.
"""

from keras_dnntools.transfer.cloning import clone_with_weights, reuse_layers
from keras_dnntools.transfer.discriminative import discriminative_optimizer
from keras_dnntools.transfer.fine_tuning import fine_tune
from keras_dnntools.transfer.freezing import freeze, unfreeze
from keras_dnntools.transfer.gradual_unfreezing import GradualUnfreezing
from keras_dnntools.transfer.recompiling import recompile

__all__ = [
    "GradualUnfreezing",
    "clone_with_weights",
    "discriminative_optimizer",
    "fine_tune",
    "freeze",
    "recompile",
    "reuse_layers",
    "unfreeze",
]
