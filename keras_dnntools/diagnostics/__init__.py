"""kdt.diagnostics: is this network's training unstable, where, and what fixes it.

`check(model, x, y)` runs one forward and backward pass and reports, per
weighted layer, the activation statistics and gradient norms, with findings
(vanishing/exploding gradients, dead or saturated units, a SELU net that
cannot self-normalize) and the chapter's remedy for each.
"""

from keras_dnntools.diagnostics.check import DiagnosticReport, Finding, check

__all__ = ["DiagnosticReport", "Finding", "check"]
