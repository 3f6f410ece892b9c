"""NumPy re-simulation of Keras's SGD and Adam updates for a 1-unit linear model.

Fed with the rate and momentum of every step, it says what the learned weights
must be when each optimizer step used exactly those values.
"""

import numpy as np


def linear_data(num_samples=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    y += rng.normal(scale=0.1, size=y.shape).astype("float32")
    return x, y


def _gradients(weights, bias, x, y):
    error = x @ weights + bias - y  # mean squared error over the batch
    return 2 * x.T @ error / len(x), 2 * error.mean(axis=0)


def simulate(kind, x, y, batch_size, rates, momenta, beta_2=0.999, epsilon=1e-7):
    """Weights after `len(rates)` unshuffled steps, from zero weights.

    kind: "sgd" (momentum in `momenta`) or "adam" (beta_1 in `momenta`).
    """
    x, y = x.astype("float64"), y.astype("float64")
    batches = len(x) // batch_size
    params = [np.zeros((x.shape[1], 1)), np.zeros(1)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    for step, (rate, momentum) in enumerate(zip(rates, momenta, strict=True)):
        start = (step % batches) * batch_size
        grads = _gradients(
            *params, x[start : start + batch_size], y[start : start + batch_size]
        )
        for i, grad in enumerate(grads):
            if kind == "sgd":
                first[i] = momentum * first[i] - rate * grad
                params[i] = params[i] + first[i]
            else:
                local_step = step + 1
                alpha = (
                    rate * np.sqrt(1 - beta_2**local_step) / (1 - momentum**local_step)
                )
                first[i] += (grad - first[i]) * (1 - momentum)
                second[i] += (grad * grad - second[i]) * (1 - beta_2)
                params[i] = params[i] - alpha * first[i] / (
                    np.sqrt(second[i]) + epsilon
                )
    return params
