"""Draws the figures of the guides into docs/images/ (run from the repository root).

    python docs/make_images.py

Small, deterministic and offline: a few seconds on a CPU, with the default
(TensorFlow) backend. The PNGs are committed; the site itself is not.
"""

from __future__ import annotations

from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

import keras_dnntools as kdt

IMAGES = Path(__file__).resolve().parent / "images"


def save(figure, name: str) -> None:
    figure.savefig(IMAGES / name, dpi=90, bbox_inches="tight")
    plt.close(figure)
    print("wrote", IMAGES / name)


def schedules() -> None:
    figure, ax = plt.subplots(figsize=(6, 3.5))
    kdt.plotting.plot_schedule(
        kdt.schedules.OneCycleSchedule(0.1, total_steps=1000),
        momentum=kdt.schedules.OneCycleMomentum(1000),
        ax=ax,
    )
    ax.set_title("OneCycleSchedule(0.1, 1000) and OneCycleMomentum(1000)")
    save(figure, "one_cycle.png")

    figure, ax = plt.subplots(figsize=(6, 3.5))
    for schedule in (
        kdt.schedules.PowerSchedule(0.01, decay_steps=100, power=1.0),
        kdt.schedules.ExponentialSchedule(0.01, decay_steps=500, decay_rate=0.1),
        kdt.schedules.PiecewiseConstantSchedule([300, 600], [0.01, 0.005, 0.001]),
    ):
        kdt.plotting.plot_schedule(schedule, 1000, ax=ax)
        ax.get_lines()[-1].set_label(type(schedule).__name__)
        ax.get_lines()[-1].set_color(f"C{len(ax.get_lines()) - 1}")
    ax.legend()
    ax.set_title("Decay schedules from lr0 = 0.01")
    save(figure, "decay_schedules.png")


def uncertainty() -> None:
    digits = load_digits()
    x, y = (digits.data / 16.0).astype("float32"), digits.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(100, activation="relu"),
            kdt.layers.MCDropout(0.3, seed=1),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1200], y[:1200], epochs=10, verbose=0)
    prediction = kdt.uncertainty.mc_predict(model, x[1200:], n_samples=50, seed=0)

    figure, ax = plt.subplots(figsize=(5, 5))
    kdt.plotting.plot_reliability_diagram(y[1200:], prediction.mean, ax=ax)
    save(figure, "reliability_diagram.png")

    figure, ax = plt.subplots(figsize=(6, 3.5))
    kdt.plotting.plot_uncertainty_histogram(prediction, y[1200:], ax=ax)
    ax.set_yscale("log")
    ax.set_title("Predictive entropy, correct vs wrong (597 test digits)")
    save(figure, "uncertainty_histogram.png")


if __name__ == "__main__":
    IMAGES.mkdir(exist_ok=True)
    schedules()
    uncertainty()
    print(f"({np.__name__} {np.__version__}, keras {keras.__version__})")
