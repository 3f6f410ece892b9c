"""One worker of a multi-worker TensorFlow run on 127.0.0.1.

Run as ``python -m tests.reliability._tf_worker SCENARIO INDEX COUNT PORTS
OUT.pkl`` (`_processes.run` starts them): `TF_CONFIG` names every worker at
its port of PORTS, this one as worker INDEX. The scenario's result is pickled
to OUT.pkl.
"""

from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np


def plain_fit(index: int, count: int):
    """Plain Keras `fit` under `MultiWorkerMirroredStrategy`: the losses."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x @ np.ones((4, 1), "float32")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.05), "mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = model.fit(dataset, epochs=2, verbose=0)
    return {"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"]}


SCENARIOS = {"plain_fit": plain_fit}


def main(argv):
    scenario, index, count, ports, out = argv
    index, count = int(index), int(count)
    workers = [f"127.0.0.1:{port}" for port in ports.split(",")]
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    )
    result = SCENARIOS[scenario](index, count)
    with open(out, "wb") as file:
        pickle.dump(result, file)


if __name__ == "__main__":
    main(sys.argv[1:])
