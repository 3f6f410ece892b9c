"""Saving a random layer's generator state with its weights."""

from __future__ import annotations

from typing import Any

_STATE_KEY = "seed_generator_state"


class SeedStateMixin:
    """Saves and restores `self.seed_generator`'s state with the weights.

    Keras saves no `SeedGenerator` state: a loaded model, or a `fit` resumed by
    `keras.callbacks.BackupAndRestore`, would restart its random stream from
    the seed and draw other masks than the run it continues. With this mixin
    the state is saved under the layer's variables (`model.save`,
    `save_weights`, checkpoints), so a resumed `fit` ends exactly where an
    uninterrupted one does. Files without the state (older saves) load as
    before.
    """

    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)  # type: ignore[misc]
        generator = getattr(self, "seed_generator", None)
        if generator is not None:
            store[_STATE_KEY] = generator.state

    def load_own_variables(self, store: Any) -> None:
        generator = getattr(self, "seed_generator", None)
        if _STATE_KEY in store:
            if generator is not None:
                generator.state.assign(store[_STATE_KEY])
            store = {key: store[key] for key in store.keys() if key != _STATE_KEY}
        super().load_own_variables(store)  # type: ignore[misc]
