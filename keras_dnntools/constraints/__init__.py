"""kdt.constraints: weight constraints (max-norm)."""

from keras_dnntools.constraints.max_norm import MaxNorm, apply_max_norm

__all__ = ["MaxNorm", "apply_max_norm"]
