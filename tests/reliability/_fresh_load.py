"""Loads every saved model of a folder in this fresh process, as a user would.

Run as ``python -m tests.reliability._fresh_load FOLDER``: for each
``NAME.keras`` with its ``NAME.npz`` (inputs, targets, whether inference and
training are deterministic), loads the model with ``keras.models.load_model(path,
safe_mode=True)`` and no ``custom_objects`` (only ``import keras_dnntools``,
which registers our classes), probes it and pickles ``{NAME: result or
error}`` to ``FOLDER/results.pkl``.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path


def main(folder: Path) -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_dnntools  # noqa: F401 - registers our classes, as a user does
    from tests.reliability._probe import probe

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.disable_interactive_logging()
    results = {}
    for path in sorted(folder.glob("*.keras")):
        try:
            data = np.load(path.with_suffix(".npz"))
            keras.utils.set_random_seed(0)
            model = keras.models.load_model(path, safe_mode=True)
            results[path.stem] = probe(
                model,
                data["x"],
                data["y"],
                deterministic=bool(data["deterministic"]),
                train_deterministic=bool(data["train_deterministic"]),
            )
        except Exception:
            results[path.stem] = {"error": traceback.format_exc()}
        keras.backend.clear_session()
    with open(folder / "results.pkl", "wb") as file:
        pickle.dump(results, file)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
