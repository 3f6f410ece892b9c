"""Every schedule: complete JSON config, round trip, and `.keras` save/load."""

import json

import keras
import numpy as np
import pytest

import keras_dnntools as kdt

SCHEDULES = [
    kdt.schedules.OneCycleSchedule(
        0.3, 500, pct_start=0.2, anneal_strategy="linear", three_phase=True
    ),
    kdt.schedules.OneCycleMomentum(500, base_momentum=0.8, max_momentum=0.9),
    kdt.schedules.PowerSchedule(0.01, 20, power=0.5),
    kdt.schedules.ExponentialSchedule(0.01, 20, decay_rate=0.5),
    kdt.schedules.PiecewiseConstantSchedule([10, 20], [0.1, 0.05, 0.01], name="steps"),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_config_round_trip_is_complete_and_json(schedule):
    config = schedule.get_config()
    assert json.loads(json.dumps(config)) == config
    assert "name" in config
    clone = type(schedule).from_config(config)
    assert clone.get_config() == config
    steps = np.array([0, 5, 10, 15, 20, 100, 499, 1000])
    np.testing.assert_array_equal(np.asarray(clone(steps)), np.asarray(schedule(steps)))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_keras_serialization_without_custom_objects(schedule):
    serialized = keras.saving.serialize_keras_object(schedule)
    assert serialized["registered_name"].startswith("keras_dnntools>")
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(clone) is type(schedule)
    assert clone.get_config() == schedule.get_config()


def test_saved_model_keeps_the_schedule(tmp_path):
    schedule = kdt.schedules.OneCycleSchedule(0.05, 64, pct_start=0.25)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9), "mse")
    model.fit(np.ones((16, 3)), np.ones((16, 1)), batch_size=4, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    restored = loaded.optimizer._learning_rate
    assert isinstance(restored, kdt.schedules.OneCycleSchedule)
    assert restored.get_config() == schedule.get_config()
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(schedule(4)))


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="`name`"):
        kdt.schedules.PowerSchedule(0.1, 10, name=3)
