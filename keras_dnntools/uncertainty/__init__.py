"""kdt.uncertainty: Monte Carlo dropout prediction and uncertainty measures.

* `mc_predict(model, x, n_samples=100, ...)`: T stochastic passes with only
  dropout active, summarized in an `MCPrediction` (mean, std, predictive and
  expected entropy, mutual information, predicted class).
* `to_mc_dropout(model)`: a weight-sharing copy of a model whose dropout
  layers stay active at inference (`kdt.layers.MCDropout` and friends).
"""

from keras_dnntools.uncertainty.conversion import to_mc_dropout
from keras_dnntools.uncertainty.monte_carlo import mc_predict
from keras_dnntools.uncertainty.prediction import MCPrediction

__all__ = ["MCPrediction", "mc_predict", "to_mc_dropout"]
