"""Builds the notebooks in this folder from the cells below and executes them.

Run from the repository root after changing a notebook's cells:

    python notebooks/make_notebooks.py

The notebooks are saved with their outputs; ``tests/test_notebooks.py`` executes
them again in CI. Everything runs offline on scikit-learn's digits data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).parent

SETUP = """\
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import numpy as np
import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
import keras_dnntools as kdt

keras.utils.set_random_seed(42)
digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = digits.target
order = np.random.default_rng(42).permutation(len(x))
x, y = x[order], y[order]
x_train, y_train = x[:1200], y[:1200]
x_test, y_test = x[1200:], y[1200:]
print(x_train.shape, x_test.shape)"""

MLP = """\
def make_mlp(activation="relu", dropout=0.0, seed=42):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    for _ in range(2):
        layers.append(keras.layers.Dense(128, kernel_initializer="he_normal"))
        layers.append(
            kdt.layers.RReLU(seed=seed)
            if activation == "rrelu"
            else keras.layers.Activation(activation)
        )
        if dropout:
            layers.append(kdt.layers.MCDropout(dropout, seed=seed))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return keras.Sequential(layers)"""

NOTEBOOKS = {
    "01_schedules_and_lr_finder.ipynb": [
        (
            "md",
            "# Learning-rate schedules, 1cycle and the learning-rate finder\n\n"
            "The chapter's cheapest big speed-up. `kdt.schedules` holds the maths as "
            "serializable `LearningRateSchedule`s (1cycle equal to PyTorch's "
            "`OneCycleLR` step for step); `kdt.callbacks` installs them in `fit()` so "
            "the rate (and momentum) is exact at every optimizer step, also with "
            "`steps_per_execution`.",
        ),
        ("code", SETUP),
        ("md", "## The schedules"),
        (
            "code",
            """\
steps = np.arange(1000)
schedules = {
    "1cycle": kdt.schedules.OneCycleSchedule(0.1, total_steps=1000),
    "power (c=1)": kdt.schedules.PowerSchedule(0.1, decay_steps=100),
    "exponential": kdt.schedules.ExponentialSchedule(0.1, decay_steps=500),
    "piecewise": kdt.schedules.PiecewiseConstantSchedule([300, 600], [0.1, 0.05, 0.01]),
}
fig, ax = plt.subplots(figsize=(7, 4))
for name, schedule in schedules.items():
    ax.plot(steps, [float(schedule(s)) for s in steps], label=name)
ax.set_xlabel("optimizer step"); ax.set_ylabel("learning rate"); ax.legend()
plt.show()""",
        ),
        (
            "code",
            """\
kdt.plotting.plot_schedule(
    kdt.schedules.OneCycleSchedule(0.1, total_steps=1000),
    momentum=kdt.schedules.OneCycleMomentum(total_steps=1000),
)
plt.show()""",
        ),
        ("md", "## Find a good rate\n\nAn exponential sweep over 100 batches."),
        ("code", MLP),
        (
            "code",
            """\
model = make_mlp()
model.compile(keras.optimizers.SGD(momentum=0.9), "sparse_categorical_crossentropy")
finder = kdt.find_learning_rate(model, x_train, y_train, min_learning_rate=1e-4)
print(f"suggested learning rate: {finder.suggestion:.3g}")
finder.plot()
plt.show()""",
        ),
        (
            "md",
            "## 1cycle against a constant rate\n\nThe finder restored the model's "
            "weights and optimizer state. The constant run uses the suggested rate; "
            "1cycle can afford a peak ten times higher, because its warm-up and its "
            "annealing keep training stable.",
        ),
        (
            "code",
            """\
max_rate = min(10 * finder.suggestion, 1.0)
results = {}
for name in ("constant", "1cycle"):
    model = make_mlp()
    model.compile(keras.optimizers.SGD(max_rate / 10 if name == "constant" else max_rate,
                                       momentum=0.9),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [kdt.callbacks.OneCycleScheduler(max_rate)] if name == "1cycle" else []
    history = model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0,
                        validation_data=(x_test, y_test), callbacks=callbacks)
    results[name] = history
    print(f"{name:>8}: test accuracy {history.history['val_accuracy'][-1]:.3f}")
plt.plot(results["1cycle"].history["learning_rate"], marker="o")
plt.xlabel("epoch"); plt.ylabel("learning rate at the epoch's last step")
plt.show()""",
        ),
        (
            "md",
            "## Exact at every step, also with `steps_per_execution`\n\n"
            "A per-batch Python callback only runs once per `steps_per_execution` "
            "steps. Our schedulers evaluate the schedule inside the train step, so "
            "the logged rate equals the schedule at the optimizer's step counter.",
        ),
        (
            "code",
            """\
model = make_mlp()
model.compile(keras.optimizers.SGD(momentum=0.9), "sparse_categorical_crossentropy",
              steps_per_execution=8)
scheduler = kdt.callbacks.OneCycleScheduler(0.05)
history = model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0,
                    callbacks=[scheduler])
steps_per_epoch = int(np.ceil(len(x_train) / 32))
reference = kdt.schedules.OneCycleSchedule(0.05, total_steps=3 * steps_per_epoch)
for epoch, logged in enumerate(history.history["learning_rate"]):
    last_step = (epoch + 1) * steps_per_epoch - 1
    print(epoch, f"{logged:.6f}", f"{float(reference(last_step)):.6f}")""",
        ),
    ],
    "02_mc_dropout_and_uncertainty.ipynb": [
        (
            "md",
            "# Monte Carlo dropout and uncertainty\n\n`kdt.uncertainty.mc_predict` "
            "samples only the dropout layers (BatchNormalization stays in inference "
            "mode), computes the deterministic part of the network once, and returns "
            "the mean, the std and the uncertainty measures: predictive entropy, "
            "expected entropy and mutual information (BALD).",
        ),
        ("code", SETUP),
        ("code", MLP),
        (
            "code",
            """\
model = make_mlp(dropout=0.3)
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
prediction = kdt.uncertainty.mc_predict(model, x_test, n_samples=100, seed=0)
one_pass = model.predict(x_test, verbose=0)

def nll(probs):
    return -np.mean(np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-12, 1)))

print(f"one stochastic pass: accuracy {np.mean(one_pass.argmax(1) == y_test):.3f}, "
      f"NLL {nll(one_pass):.3f}, "
      f"ECE {kdt.metrics.expected_calibration_error(y_test, one_pass):.3f}")
print(f"MC dropout, 100 samples: accuracy "
      f"{np.mean(prediction.predicted_class == y_test):.3f}, "
      f"NLL {nll(np.asarray(prediction.mean)):.3f}, "
      f"ECE {kdt.metrics.expected_calibration_error(y_test, prediction.mean):.3f}")""",
        ),
        (
            "code",
            """\
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
kdt.plotting.plot_reliability_diagram(y_test, prediction.mean, ax=axes[0])
kdt.plotting.plot_uncertainty_histogram(
    prediction, y_test, measure="mutual_information", ax=axes[1])
plt.show()""",
        ),
        (
            "md",
            "## The most uncertain test images\n\nMutual information is high where "
            "the samples disagree: the model's own doubt about its weights.",
        ),
        (
            "code",
            """\
worst = np.argsort(np.asarray(prediction.mutual_information))[-6:]
fig, axes = plt.subplots(1, 6, figsize=(12, 2.4))
for ax, index in zip(axes, worst):
    ax.imshow(x_test[index].reshape(8, 8), cmap="gray_r"); ax.axis("off")
    ax.set_title(f"true {y_test[index]}, "
                 f"pred {prediction.predicted_class[index]}", fontsize=9)
plt.show()""",
        ),
        (
            "md",
            "## Existing models: plain `Dropout` works too\n\n`mc_predict` switches "
            "plain Keras dropout on for the sampling only; `to_mc_dropout` makes a "
            "weight-sharing copy with always-on MC layers.",
        ),
        (
            "code",
            """\
plain = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                          keras.layers.Dropout(0.3),
                          keras.layers.Dense(10, activation="softmax")])
plain.compile("adam", "sparse_categorical_crossentropy",
              metrics=[kdt.metrics.ExpectedCalibrationError()])
plain.fit(x_train, y_train, epochs=10, verbose=0)
print(plain.evaluate(x_test, y_test, verbose=0, return_dict=True))
mc_model = kdt.uncertainty.to_mc_dropout(plain)
print([type(layer).__name__ for layer in mc_model.layers])
print(kdt.uncertainty.mc_predict(plain, x_test[:5], n_samples=50, seed=1).std.max(axis=-1))""",
        ),
    ],
    "03_transfer_learning.ipynb": [
        (
            "md",
            "# Transfer learning: model B on model A\n\nModel A learns digits 0-7. "
            "Task B is odd against even over all ten digits, with only 40 labelled "
            "images. We reuse A's layers, train the new head with the base frozen, "
            "then unfreeze with lower, discriminative rates.",
        ),
        ("code", SETUP),
        (
            "code",
            """\
seen = y_train < 8
model_a = keras.Sequential([
    keras.Input((64,)),
    keras.layers.Dense(128, activation="relu", kernel_initializer="he_normal"),
    keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal"),
    keras.layers.Dense(8, activation="softmax"),
])
model_a.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model_a.fit(x_train[seen], y_train[seen], epochs=20, verbose=0)
few = np.random.default_rng(0).choice(len(x_train), 40, replace=False)
x_b, y_b = x_train[few], (y_train[few] % 2).astype("float32")
y_b_test = y_test % 2
print("model A accuracy on 0-7:",
      model_a.evaluate(x_test[y_test < 8], y_test[y_test < 8], verbose=0)[1])""",
        ),
        ("md", "## By hand: reuse, freeze, train the head, unfreeze, recompile"),
        (
            "code",
            """\
model_b = kdt.transfer.reuse_layers(
    model_a, drop_top=1, head=keras.layers.Dense(1, activation="sigmoid"))
model_b.compile("adam", "binary_crossentropy", metrics=["accuracy"])
print("trainable after reuse:", [layer.trainable for layer in model_b.layers])
model_b.fit(x_b, y_b, epochs=20, batch_size=8, verbose=0)
kdt.transfer.unfreeze(model_b)
kdt.transfer.recompile(model_b, learning_rate=1e-4)
model_b.fit(x_b, y_b, epochs=20, batch_size=8, verbose=0)
print("B on A:", model_b.evaluate(x_test, y_b_test, verbose=0)[1])
print("model A untouched:",
      model_a.evaluate(x_test[y_test < 8], y_test[y_test < 8], verbose=0)[1])""",
        ),
        ("md", "## In one call: `fine_tune`, and against training from scratch"),
        (
            "code",
            """\
def scratch_model():
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dense(64, activation="relu", kernel_initializer="he_normal"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])

for seed in range(3):
    keras.utils.set_random_seed(seed)
    tuned = kdt.transfer.reuse_layers(
        model_a, drop_top=1, head=keras.layers.Dense(1, activation="sigmoid"))
    tuned.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    # 40 images make 5 batches an epoch: a tiny data set needs more epochs and
    # a higher rate than fastai's defaults (tuned for thousands of batches).
    kdt.transfer.fine_tune(tuned, x_b, y_b, epochs=20, freeze_epochs=10,
                           base_learning_rate=1e-2, batch_size=8, verbose=0)
    keras.utils.set_random_seed(seed)
    scratch = scratch_model()
    scratch.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    scratch.fit(x_b, y_b, epochs=30, batch_size=8, verbose=0)
    print(f"seed {seed}: B on A {tuned.evaluate(x_test, y_b_test, verbose=0)[1]:.3f}"
          f"  from scratch {scratch.evaluate(x_test, y_b_test, verbose=0)[1]:.3f}")""",
        ),
        (
            "md",
            "## Unfreezing inside one `fit()`\n\n`GradualUnfreezing` makes the top N "
            "weighted layers trainable from a given epoch on, within the same `fit` "
            "call; newly trainable weights get optimizer slots.",
        ),
        (
            "code",
            """\
keras.utils.set_random_seed(0)
gradual = kdt.transfer.reuse_layers(
    model_a, drop_top=1, head=keras.layers.Dense(1, activation="sigmoid"))
gradual.compile("adam", "binary_crossentropy", metrics=["accuracy"])
before = gradual.layers[0].get_weights()[0].copy()
gradual.fit(x_b, y_b, epochs=8, batch_size=8, verbose=0,
            callbacks=[kdt.transfer.GradualUnfreezing({0: 1, 3: 2, 6: 3})])
print("bottom layer changed:",
      not np.array_equal(before, gradual.layers[0].get_weights()[0]))""",
        ),
    ],
    "04_activations_and_constraints.ipynb": [
        (
            "md",
            "# RReLU and max-norm\n\nRandomized leaky ReLU draws a fresh negative slope "
            "for every element in training and uses the mean slope at inference "
            "(as `torch.nn.RReLU`). Max-norm caps each unit's incoming weight vector.",
        ),
        ("code", SETUP),
        (
            "code",
            """\
z = np.linspace(-4, 4, 401).astype("float32")
layer = kdt.layers.RReLU(seed=0)
fig, ax = plt.subplots(figsize=(6, 4))
for _ in range(3):
    ax.plot(z, np.asarray(layer(z, training=True)), alpha=0.4, lw=1)
ax.plot(z, np.asarray(layer(z, training=False)), color="black", label="inference")
ax.axhline(0, color="gray", lw=0.5); ax.legend(); ax.set_title("RReLU")
plt.show()""",
        ),
        ("code", MLP),
        (
            "code",
            """\
for activation in ("relu", "elu", "selu", "rrelu"):
    model = make_mlp(activation)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=15, verbose=0,
                        validation_data=(x_test, y_test))
    print(f"{activation:>6}: test accuracy {history.history['val_accuracy'][-1]:.3f}")""",
        ),
        (
            "md",
            "## Max-norm on a model you already have\n\n`apply_max_norm` knows each "
            "layer type's fan-in axes and takes effect in the next `fit`, without "
            "recompiling.",
        ),
        (
            "code",
            """\
def fan_in_norms(model):
    return [np.linalg.norm(layer.kernel.numpy(), axis=0).max()
            for layer in model.layers if hasattr(layer, "kernel")]

for clip in (False, True):
    model = make_mlp()
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy")
    if clip:
        kdt.constraints.apply_max_norm(model, max_value=1.0)
    model.fit(x_train, y_train, epochs=5, verbose=0)
    print("max-norm 1.0" if clip else "no constraint",
          np.round(fan_in_norms(model), 3))""",
        ),
    ],
}


def unstable_gradients_notebook() -> list[tuple[str, str]]:
    """Cells of 05: the chapter's vanishing-gradient experiment on digits."""
    return [
        (
            "md",
            "# Unstable gradients: diagnose, then fix\n\n"
            "The chapter opens with vanishing and exploding gradients. Here a deep "
            "MLP (12 hidden layers of 50 units) learns the digits five ways: "
            "sigmoid with a naive `N(0, 1)` init, He + ReLU, LeCun + SELU, "
            "BatchNorm, and LSUV (on tanh). Before training, `kdt.diagnostics.check` runs one "
            "forward and backward pass and says what is wrong and which remedy the "
            "chapter gives; during training, `kdt.callbacks.TrainingMonitor` records "
            "every layer's gradient norm and activation histogram inside the train "
            "step.",
        ),
        ("code", SETUP),
        (
            "code",
            """\
mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
standardized = ((x_train - mean) / std, (x_test - mean) / std)


def deep_mlp(activation, initializer, batch_norm=False, depth=12, units=50):
    keras.utils.set_random_seed(42)
    layers = [keras.Input((64,))]
    for _ in range(depth):
        if batch_norm:
            layers += [
                keras.layers.Dense(units, kernel_initializer=initializer, use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.Activation(activation),
            ]
        else:
            layers.append(keras.layers.Dense(
                units, activation=activation, kernel_initializer=initializer))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


results = {}


def diagnose_and_train(name, model, train=(x_train, x_test), epochs=5):
    report = kdt.diagnostics.check(model, train[0], y_train)
    print(report)
    monitor = kdt.callbacks.TrainingMonitor(frequency=10)
    model.fit(train[0], y_train, epochs=epochs, batch_size=32,
              callbacks=[monitor], verbose=0)
    accuracy = model.evaluate(train[1], y_test, verbose=0)[1]
    results[name] = (accuracy, report.kinds())
    print(f"\\n{name}: test accuracy {accuracy:.3f}")
    figure, ax = plt.subplots(figsize=(8, 3.5))
    kdt.plotting.plot_gradient_norms(monitor, ax=ax)
    ax.set_title(f"{name}: gradient norm per layer")
    plt.show()
    return monitor""",
        ),
        (
            "md",
            "## 1. Sigmoid with a naive init: vanishing and saturated\n\n"
            "The check finds the bottom layers' gradients orders of magnitude below "
            "the top layers', and most sigmoid outputs in their flat tails. The "
            "gradient norms fan out from bottom (dark) to top (light), and the "
            "activation histograms pile up at 0 and 1.",
        ),
        (
            "code",
            """\
naive = keras.initializers.RandomNormal(stddev=1.0)
monitor = diagnose_and_train("sigmoid, N(0, 1)", deep_mlp("sigmoid", naive))
kdt.plotting.plot_activation_histograms(monitor)
plt.show()""",
        ),
        (
            "md",
            "## 2. He initialization and ReLU\n\n"
            "Matching the init to the activation keeps the variance of the signal "
            "from layer to layer: no finding, and the net trains.",
        ),
        (
            "code",
            """\
monitor = diagnose_and_train("He + ReLU", deep_mlp("relu", "he_normal"))
kdt.plotting.plot_activation_histograms(monitor)
plt.show()""",
        ),
        (
            "md",
            "## 3. LeCun normal and SELU, on standardized inputs\n\n"
            "SELU self-normalizes only under its conditions. The check says so when "
            "one is broken (here: the raw inputs are not standardized), and is quiet "
            "once they all hold.",
        ),
        (
            "code",
            """\
print(kdt.diagnostics.check(deep_mlp("selu", "lecun_normal"), x_train).findings[0])
monitor = diagnose_and_train(
    "LeCun + SELU", deep_mlp("selu", "lecun_normal"), train=standardized)""",
        ),
        (
            "md",
            "## 4. Batch Normalization\n\n"
            "BatchNorm before each sigmoid removes the saturation even with the naive "
            "init; with sigmoid the lower layers still learn more slowly.",
        ),
        (
            "code",
            """\
monitor = diagnose_and_train(
    "sigmoid + BatchNorm", deep_mlp("sigmoid", naive, batch_norm=True))""",
        ),
        (
            "md",
            "## 5. LSUV\n\n"
            "Layer-sequential unit-variance initialization (Mishkin & Matas, 2016) "
            "rescales each layer, bottom to top, until its output (for tanh: its "
            "pre-activation) has unit variance on a batch. It rescues a tanh net "
            "started from the same naive init (with sigmoid, whose derivative is "
            "at most 1/4, the check still finds vanishing gradients after LSUV).",
        ),
        (
            "code",
            """\
print(kdt.diagnostics.check(deep_mlp("tanh", naive), x_train, y_train).kinds())
model = kdt.initializers.lsuv(deep_mlp("tanh", naive), x_train[:512])
monitor = diagnose_and_train("tanh + LSUV", model)""",
        ),
        ("md", "## Summary"),
        (
            "code",
            """\
for name, (accuracy, kinds) in results.items():
    print(f"{name:<22} test accuracy {accuracy:.3f}   check at init: {kinds or 'ok'}")""",
        ),
    ]


NOTEBOOKS["05_unstable_gradients.ipynb"] = unstable_gradients_notebook()


# What the numbers printed above mean: a Markdown cell inserted after the cell
# (its index in NOTEBOOKS[name]) whose output it explains, surprising ones first.
# The figures are those of the saved run (seed 42); a re-run may move them a little.
EXPLANATIONS = {
    "05_unstable_gradients.ipynb": {
        14: "**Reading the summary, surprising ones first.** BatchNorm before each sigmoid is still flagged `vanishing_gradients` at initialization and reaches only 0.688 after 5 epochs: it re-centres the pre-activations, but with the naive `N(0, 1)` kernels the bottom layers still get tiny gradients at the start, and 5 epochs at this rate do not make up for it. SELU (0.899) beats He + ReLU (0.792) here: its outputs stay normalized through all 12 layers, while the ReLU net is healthy but slower to start. LSUV on tanh is best (0.953): every layer starts with unit-variance outputs. The naive sigmoid net (0.312) barely learns, and the check's findings at initialization say why before any training. Accuracies are on 597 test images (one image is 0.0017) after 5 epochs, seed 42.",
    },
    "01_schedules_and_lr_finder.ipynb": {
        7: "**Reading the finder.** The suggestion (about 0.02 here) is fastai's "
        "\"valley\": a rate where the smoothed loss still falls steeply, a safe "
        "*constant* rate. The curve rises steeply at the right end: the sweep stops "
        "once the loss exceeds 4x its best, so the last points are a divergence, not "
        "a property of the model.",
        9: "**Reading the result.** The constant rate reaches 0.943 test accuracy and "
        "1cycle 0.975 (597 test images: one image is 0.0017, so the gap is about 19 "
        "images), both after 15 epochs from the same initial weights. The constant run "
        "uses `max_rate / 10`, which is the finder's suggestion; 1cycle peaks at ten "
        "times it. This notebook uses 10x, the demo 4x and fastai's `fit_one_cycle` "
        "1x: the peak is a choice, to be checked on validation data. The plot shows "
        "the rate at the last step of each epoch: the warm-up over the first 30% of "
        "the steps, then the cosine annealing.",
        11: "**Reading the table.** Per epoch: the rate logged by the callback, then "
        "the schedule evaluated at the epoch's last optimizer step. They are equal "
        "although the model runs 8 steps per call (`steps_per_execution=8`). The "
        "last epoch shows 0.000000: 1cycle ends at `0.05 / 25 / 1e4 = 2e-7`, which "
        "rounds to zero at six decimals.",
    },
    "02_mc_dropout_and_uncertainty.ipynb": {
        3: "**The surprise first: MC dropout *raised* the ECE, from 0.019 to 0.060,** "
        "while accuracy (0.948 to 0.975) and NLL (0.168 to 0.137) improved. The ECE "
        "measures the gap between confidence and accuracy, in either direction. One "
        "stochastic pass is nearly calibrated here (mean confidence 0.938, accuracy "
        "0.948). Averaging 100 passes makes the predictions more accurate but less "
        "confident (mean confidence 0.917, accuracy 0.975): the model becomes "
        "*under*-confident, and a gap of 0.058 shows up as an ECE of 0.060. The "
        "reliability diagram below shows it: the bars stand above the diagonal. "
        "The NLL, a proper scoring rule, is the better summary of probability "
        "quality, and it improves. The ECE is also noisy on 597 images (15 bins, "
        "some holding a handful of images: the diagram prints each bin's count).",
        4: "**Reading the plots.** Left: accuracy against confidence per bin, with "
        "the number of test images in each bin; bars above the diagonal are "
        "under-confident. Right: mutual information (nats) for right and wrong "
        "predictions; the wrong ones sit to the right, where the passes disagree.",
        8: "**Reading the output.** The plain model's `expected_calibration_error` "
        "of 0.148 comes from `evaluate`, with dropout *off* (a deterministic pass): "
        "after 10 epochs of a 64-unit net with 30% dropout its probabilities are "
        "still soft (mean confidence 0.78 for 0.93 accuracy): under-confident "
        "again, not over-confident. The loss (0.335) is its NLL. The layer list "
        "shows `to_mc_dropout` swapping `Dropout` for `MCDropout`. The last line "
        "is, for each of 5 test images, the largest standard deviation of a class "
        "probability over 50 passes: 0.06 to 0.19, i.e. the probabilities move by "
        "that much from pass to pass.",
    },
    "03_transfer_learning.ipynb": {
        2: "**Reading the output.** Model A classifies digits 0-7 with 0.979 "
        "accuracy on the test images of those digits; it never saw 8 or 9.",
        4: "**Reading the output.** After `reuse_layers` only the new head is "
        "trainable (`[False, False, True]`). B on A reaches 0.804 on odd vs even "
        "over all ten digits, from 40 labelled images. Model A's accuracy is "
        "unchanged, to the last digit: `reuse_layers` cloned its layers, so "
        "training B did not touch A.",
        6: "**Reading the table.** Over three seeds, B on A (`fine_tune`) reaches "
        "0.883 to 0.908 and the same network from scratch 0.861 to 0.863: transfer "
        "wins by 2 to 5 points (12 to 28 of 597 images), consistently. With much "
        "less training (the demo's `--quick`, 4 epochs) the comparison can flip, "
        "which is why the demo labels that run a smoke test.",
        8: "**Reading the output.** `True`: the bottom layer, frozen at the start, "
        "was unfrozen at epoch 6 by `GradualUnfreezing` and trained within the "
        "same `fit` call.",
    },
    "04_activations_and_constraints.ipynb": {
        2: "**Reading the plot.** Three training-mode calls (thin lines) draw "
        "different slopes for every negative input; the black line is inference, "
        "the mean slope `(1/8 + 1/3) / 2`, about 0.23.",
        4: "**Reading the results.** The differences (0.951 to 0.975) are 14 test "
        "images at most, within what another seed would change: read no ranking "
        "into them. SELU is lowest here because `make_mlp` uses He initialization; "
        "SELU self-normalizes only with LeCun normal initialization (and no "
        "ordinary dropout).",
        6: "**Reading the output.** The largest fan-in norm (the norm of one "
        "unit's incoming weights) in each of the three Dense layers after 5 epochs "
        "at a high rate: up to 2.4 without a constraint, exactly 1.0 with "
        "`apply_max_norm(model, max_value=1.0)`, which clips after every step.",
    },
}


def with_explanations(name: str, cells: list[tuple[str, str]]) -> list:
    """The cells of a notebook with its explanation cells inserted."""
    cells = list(cells)
    for index in sorted(EXPLANATIONS.get(name, {}), reverse=True):
        cells.insert(index + 1, ("md", EXPLANATIONS[name][index]))
    return cells


def build(name: str, cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in cells:
        if kind == "md":
            notebook.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            notebook.cells.append(nbformat.v4.new_code_cell(source))
    return notebook


NOISE = ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "cpu_feature_guard")


def drop_native_log_noise(notebook: nbformat.NotebookNode) -> None:
    """Removes TensorFlow's C++ start-up log lines from the saved outputs."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                lines = [
                    line
                    for line in output.text.splitlines(keepends=True)
                    if not any(word in line for word in NOISE)
                    and not line.startswith(("I0000", "E0000", "W0000", "To enable"))
                ]
                if not "".join(lines).strip():
                    continue
                output.text = "".join(lines)
            kept.append(output)
        cell.outputs = kept


def main(names: list[str]) -> None:
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        notebook = build(name, with_explanations(name, cells))
        NotebookClient(notebook, timeout=600, kernel_name="python3").execute(
            cwd=str(HERE)
        )
        drop_native_log_noise(notebook)
        nbformat.write(notebook, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main(sys.argv[1:])
