"""Builds, trains and saves a tiny model per `save_load` row, then loads them fresh.

Run as ``python -m tests.reliability._saved_models OUT.pkl`` (in the
background, see `_background.py`): for every row of the matrix with the
`save_load` check, builds a tiny model around the component, trains it a few
steps, saves it as ``.keras`` and probes it (`_probe.probe`); then ONE other
fresh process (`_fresh_load`) loads every file with `load_model(safe_mode=True)`
and no `custom_objects` and probes them the same way. Pickles
``{key: (expected, loaded)}``; either side may be ``{"error": traceback}``.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import keras
import numpy as np

import keras_dnntools as kdt
from tests.reliability import _models as m
from tests.reliability._probe import probe
from tests.reliability.matrix import MATRIX, keys_for

ROOT = Path(__file__).resolve().parents[2]


def _layer(row):
    x, y = m.data(row.input_shape)
    model = m.around(row.make(), row.input_shape)
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _activation(row):
    x, y = m.data()
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, activation=row.make()),
            keras.layers.Dense(2),
        ]
    )
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _constraint(row):
    x, y = m.data()
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(2, kernel_constraint=row.make())]
    )
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _apply_max_norm(row):
    x, y = m.data()
    model = m.dense_stack()
    kdt.constraints.apply_max_norm(model, 0.5)
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _schedule(row):
    x, y = m.data()
    model = m.dense_stack()
    optimizer = keras.optimizers.SGD(learning_rate=row.make(), momentum=0.9)
    m.compile_and_fit(model, x, y, optimizer=optimizer, run_eagerly=True)
    return model, x, y


def _scheduler(row):
    x, y = m.data()
    model = m.dense_stack()
    m.compile_and_fit(model, x, y, epochs=3, callbacks=[row.make()], run_eagerly=True)
    return model, x, y


def _gradual_unfreezing(row):
    x, y = m.data()
    model = m.dense_stack()
    m.compile_and_fit(model, x, y, epochs=2, callbacks=[row.make()], run_eagerly=True)
    return model, x, y


def _discriminative_optimizer(row):
    x, y = m.data()
    model = m.dense_stack()
    optimizer = kdt.transfer.discriminative_optimizer(
        model, m.sgd(), learning_rate_range=(1e-3, 1e-1), num_groups=3
    )
    m.compile_and_fit(model, x, y, optimizer=optimizer, run_eagerly=True)
    return model, x, y


def _fine_tune(row):
    x, y = m.data(n=16)  # 1cycle needs pct_start * steps > 1
    model = m.dense_stack()
    m.compile_and_fit(model, x, y, run_eagerly=True)
    kdt.transfer.fine_tune(
        model, x, y, epochs=1, freeze_epochs=1, batch_size=m.BATCH_SIZE, verbose=0
    )
    return model, x, y


def _freeze(row):
    x, y = m.data()
    model = m.dense_stack(batch_norm=True)
    kdt.transfer.freeze(model, until=0)
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _unfreeze(row):
    x, y = m.data()
    model = m.dense_stack(batch_norm=True)
    kdt.transfer.freeze(model)
    kdt.transfer.unfreeze(model, top=1)
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _clone_with_weights(row):
    x, y = m.data()
    original = m.dense_stack()
    m.compile_and_fit(original, x, y, run_eagerly=True)
    model = kdt.transfer.clone_with_weights(original)
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _reuse_layers(row):
    x, y = m.data()
    source = m.dense_stack()
    m.compile_and_fit(source, x, y, run_eagerly=True)
    model = kdt.transfer.reuse_layers(source, drop_top=1, head=keras.layers.Dense(2))
    m.compile_and_fit(model, x, y, run_eagerly=True)
    return model, x, y


def _recompile(row):
    x, y = m.data()
    model = m.dense_stack()
    m.compile_and_fit(model, x, y, run_eagerly=True)
    kdt.transfer.recompile(model, learning_rate=0.05)
    model.fit(x, y, batch_size=m.BATCH_SIZE, verbose=0, shuffle=False)
    return model, x, y


def _to_mc_dropout(row):
    x, y = m.data()
    model = kdt.uncertainty.to_mc_dropout(m.dense_stack(dropout=True))
    return model, x, y


def _metric(row):
    x, y = m.class_data()
    model = m.dense_stack(softmax=True)
    m.compile_and_fit(
        model,
        x,
        y,
        loss="sparse_categorical_crossentropy",
        metrics=[row.make()],
        run_eagerly=True,
    )
    return model, x, y


BUILDERS = {
    "layer": _layer,
    "activation": _activation,
    "constraint": _constraint,
    "apply_max_norm": _apply_max_norm,
    "schedule": _schedule,
    "scheduler": _scheduler,
    "gradual_unfreezing": _gradual_unfreezing,
    "discriminative_optimizer": _discriminative_optimizer,
    "fine_tune": _fine_tune,
    "to_mc_dropout": _to_mc_dropout,
    "metric": _metric,
    "transfer.freeze": _freeze,
    "transfer.unfreeze": _unfreeze,
    "transfer.clone_with_weights": _clone_with_weights,
    "transfer.reuse_layers": _reuse_layers,
    "transfer.recompile": _recompile,
}


def _save_all(folder):
    expected = {}
    for param in keys_for("save_load"):
        key = param.values[0]
        row = MATRIX[key]
        keras.utils.set_random_seed(0)
        try:
            builder = BUILDERS.get(key) or BUILDERS[row.kind]
            model, x, y = builder(row)
            model.save(folder / f"{key}.keras")
            # Seed generators' positions are not saved (as in Keras): random
            # outputs are only compared for being random.
            flags = {
                "deterministic": not row.stochastic,
                "train_deterministic": not row.random_in_training,
            }
            np.savez(folder / f"{key}.npz", x=x, y=y, **flags)
            keras.utils.set_random_seed(0)
            expected[key] = probe(model, x, y, **flags)
        except Exception:
            expected[key] = {"error": traceback.format_exc()}
        keras.backend.clear_session(free_memory=False)
    return expected


def main(out):
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.disable_interactive_logging()
    with tempfile.TemporaryDirectory() as folder:
        expected = _save_all(Path(folder))
        subprocess.run(
            [sys.executable, "-m", "tests.reliability._fresh_load", folder],
            cwd=ROOT,
            check=True,
            timeout=300,
        )
        with open(Path(folder) / "results.pkl", "rb") as file:
            loaded = pickle.load(file)
    results = {key: (want, loaded.get(key)) for key, want in expected.items()}
    with open(out, "wb") as file:
        pickle.dump(results, file)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    main(sys.argv[1])
