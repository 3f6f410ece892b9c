"""`TrainingMonitor`: gradient, update and activation statistics of every layer."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_dnntools import _keras_compat
from keras_dnntools._distribution import replica_context
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_bool,
    check_int,
    check_sequence,
    element_of_type,
    invalid_type,
)
from keras_dnntools.callbacks import _replica_stats
from keras_dnntools.diagnostics import _inspection

STATS = (
    "gradient_norm",
    "update_ratio",
    "activation_mean",
    "activation_std",
    "dead_fraction",
    "saturated_fraction",
)
NUM_BINS = 40
NUM_GRADIENT_BINS = 30
_HEAD = 3  # step, learning rate, momentum


def activation_range(kind: str) -> tuple[float, float]:
    """The fixed range of the activation histograms of a layer."""
    if kind in ("sigmoid", "hard_sigmoid", "softmax"):
        return 0.0, 1.0
    if kind in ("tanh", "hard_tanh", "softsign"):
        return -1.0, 1.0
    if kind in ("relu", "relu6"):
        return 0.0, 4.0
    if kind in ("selu", "elu"):
        return -2.0, 4.0
    return -4.0, 4.0


def _histogram(values, low, high, bins):
    values = ops.reshape(ops.cast(values, "float32"), (-1,))
    scaled = (values - low) / (high - low) * bins
    index = ops.cast(ops.clip(ops.floor(scaled), 0, bins - 1), "int32")
    return ops.sum(ops.one_hot(index, bins, dtype="float32"), axis=0)


def _activation_histogram(activation, kind):
    return _histogram(activation, *activation_range(kind), NUM_BINS)


def _hyperparameter(optimizer, name):
    value = getattr(optimizer, name, None)
    if value is None:
        return None
    if callable(value):
        value = value()
    return ops.cast(ops.convert_to_tensor(value), "float32")


@public("callbacks")
class TrainingMonitor(keras.callbacks.Callback):
    """Per-layer gradient, update and activation statistics, measured in the step.

    Every ``frequency`` optimizer steps, inside the train step (so exact with
    ``steps_per_execution > 1``), records for each weighted layer (or each
    layer of ``layers``):

    - ``"gradient_norm"``: L2 norm of the gradients of the layer's trainable
      weights, of the unscaled loss (mixed precision's loss scale removed);
    - ``"update_ratio"``: ``||w_after - w_before|| / ||w_before||`` of the
      kernel over that step;
    - ``"activation_mean"``, ``"activation_std"``: of the layer's output over
      the batch (after the activation layers that directly follow it);
    - ``"dead_fraction"``: units whose output is <= 0 for every example of the
      batch (ReLU-family outputs; 0 otherwise);
    - ``"saturated_fraction"``: outputs in the flat tails of sigmoid/tanh-like
      activations, where the derivative is below 10% of its peak (0 otherwise);

    and the learning rate and momentum (``momentum``, or ``beta_1`` for the
    Adam family) of that step. The gradients and activations come from one
    extra forward and backward pass on the step's batch with the weights the
    step starts from, in a `keras.StatelessScope` (it changes no
    BatchNormalization statistics nor dropout seed): the gradient is the
    step's own gradient for deterministic models. Only logged steps pay for
    it.

    Keras offers no public hook inside the compiled step: for the duration of
    `fit`, the monitor trains with an instrumented train step (see
    `keras_dnntools._keras_compat.install_train_step`), removed at the end of
    `fit`, and by the next train call if that `fit` raised.

    With ``log_dir``, the values are also written as TensorBoard scalars
    tagged ``"<layer_name>/<stat_name>"``, ``"learning_rate"`` and
    ``"momentum"`` (needs the ``tensorboard`` package, or TensorFlow), plus,
    with ``histograms=True``, histograms tagged
    ``"<layer_name>/activations"`` and ``"<layer_name>/gradients"``.

    Args:
        frequency: log every this many optimizer steps (step 0 included).
        log_dir: a directory for TensorBoard event files, or None.
        histograms: also write activation and gradient histograms to
            TensorBoard.
        layers: the layers to watch (layers or names); None for every
            weighted layer.

    Attributes:
        steps: int array, the 0-based optimizer step of each record.
        layer_stats: ``{layer_name: {stat_name: float array}}`` aligned with
            ``steps``.
        learning_rate: float array aligned with ``steps``.
        momentum: float array, or None when the optimizer has none.
        activation_histograms: ``{layer_name: (edges, counts)}`` with counts of
            shape ``(len(steps), 40)`` over the fixed ``edges``.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8,
    ...     activation="relu"), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    >>> monitor = kdt.callbacks.TrainingMonitor(frequency=2)
    >>> x, y = np.ones((16, 4), "float32"), np.zeros((16, 1), "float32")
    >>> _ = model.fit(x, y, batch_size=4, epochs=1, callbacks=[monitor], verbose=0)
    >>> monitor.steps.tolist()
    [0, 2]
    >>> sorted(monitor.layer_stats[model.layers[0].name])[:3]
    ['activation_mean', 'activation_std', 'dead_fraction']
    >>> monitor.momentum.tolist()
    [0.9..., 0.9...]
    """

    def __init__(
        self,
        frequency: int = 1,
        *,
        log_dir: str | os.PathLike | None = None,
        histograms: bool = False,
        layers: Any = None,
    ):
        super().__init__()
        self.frequency = check_int("frequency", frequency, low=1)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise invalid_type("log_dir", "None, a str or a path", log_dir)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.histograms = check_bool("histograms", histograms)
        if self.log_dir is not None:
            from keras_dnntools.callbacks._event_writer import require_tensorboard

            require_tensorboard()
        if layers is not None and not isinstance(layers, (str, keras.layers.Layer)):
            layers = list(
                check_sequence(
                    "layers",
                    layers,
                    element_of_type(
                        (str, keras.layers.Layer), "a layer or a layer name"
                    ),
                    min_length=1,
                    expected="None, a layer, a name, or a list of them",
                )
            )
        self.layers = layers
        self._reset()

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (layers given by name)."""
        layers = self.layers
        if layers is not None:
            items = (
                [layers] if isinstance(layers, (str, keras.layers.Layer)) else layers
            )
            layers = [item if isinstance(item, str) else item.name for item in items]
        return {
            "frequency": self.frequency,
            "log_dir": self.log_dir,
            "histograms": self.histograms,
            "layers": layers,
        }

    # -- results -------------------------------------------------------------

    def _reset(self):
        self._records: list[np.ndarray] = []
        self._monitored = None
        self._written = 0
        self._live = False
        self._token = False
        self._buffer = None
        self._watched: list = []
        self._has_momentum = False
        self.steps = np.zeros((0,), "int64")
        self.layer_stats: dict[str, dict[str, np.ndarray]] = {}
        self.learning_rate = np.zeros((0,), "float64")
        self.momentum = None
        self.activation_histograms: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _collect(self):
        if keras.backend.backend() == "jax":
            import jax

            jax.effects_barrier()
        if self._buffer is not None:
            self._drain()
        records = sorted(self._records, key=lambda r: r[0])
        table = np.array(records, "float64").reshape(len(records), self._width())
        self.steps = table[:, 0].astype("int64")
        self.learning_rate = table[:, 1]
        self.momentum = table[:, 2] if self._has_momentum else None
        offset = _HEAD
        num_layers = len(self._watched)
        stats = table[:, offset : offset + num_layers * len(STATS)]
        stats = stats.reshape(len(records), num_layers, len(STATS))
        offset += num_layers * len(STATS)
        self.layer_stats, self.activation_histograms = {}, {}
        for i, w in enumerate(self._watched):
            self.layer_stats[w.layer.name] = {
                name: stats[:, i, j] for j, name in enumerate(STATS)
            }
            low, high = activation_range(w.activation)
            counts = table[:, offset : offset + NUM_BINS]
            offset += NUM_BINS
            edges = np.linspace(low, high, NUM_BINS + 1)
            self.activation_histograms[w.layer.name] = (edges, counts)
        self._gradient_histograms = {}
        if self.histograms:
            for w in self._watched:
                block = table[:, offset : offset + 2 + NUM_GRADIENT_BINS]
                offset += 2 + NUM_GRADIENT_BINS
                self._gradient_histograms[w.layer.name] = block
        return table

    # -- measuring inside the step -------------------------------------------

    def _measure(self, x, y, sample_weight, state=None):
        """Flat vector of everything but the head and the update ratios."""
        loss, activations, grads = _inspection.forward_backward(
            self._monitored, self._probe, x, y, sample_weight, state=state
        )
        del loss
        stats = self._per_layer(_inspection.activation_stats, activations)
        hists = self._per_layer(_activation_histogram, activations)
        return self._summarize(grads, stats, hists)

    def _per_layer(self, measure, activations):
        """``measure(activation, kind)`` for each watched layer's activation."""
        return [
            measure(activation, w.activation)
            for w, activation in zip(self._watched, activations, strict=True)
        ]

    def _summarize(self, grads, stats, hists):
        """(per-layer stats, activation histograms, gradient histograms)."""
        model = self._monitored
        norms = _inspection.gradient_norms(model, self._watched, grads)
        parts, grad_parts = [], []
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        for w, (mean, std, dead, saturated), norm in zip(
            self._watched, stats, norms, strict=True
        ):
            parts.append(ops.stack([norm, mean, std, dead, saturated]))
            if self.histograms:
                flat = [
                    ops.reshape(ops.cast(grads[index[id(v)]], "float32"), (-1,))
                    for v in w.layer.trainable_weights
                    if id(v) in index
                ]
                flat = ops.concatenate(flat) if flat else ops.zeros((1,), "float32")
                low, high = ops.min(flat), ops.max(flat)
                span = ops.maximum(high - low, 1e-12)
                scaled = (flat - low) / span * NUM_GRADIENT_BINS
                bins = ops.cast(
                    ops.clip(ops.floor(scaled), 0, NUM_GRADIENT_BINS - 1), "int32"
                )
                counts = ops.sum(
                    ops.one_hot(bins, NUM_GRADIENT_BINS, dtype="float32"), axis=0
                )
                grad_parts.append(ops.concatenate([ops.stack([low, high]), counts]))
        return parts, hists, grad_parts

    def _measure_replica(self, should, x, y, sample_weight, context):
        """`_measure` for one replica of a `MirroredStrategy`: the sums of every
        replica are added after the `tf.cond` (see `_replica_stats`)."""
        import tensorflow as tf

        model = self._monitored
        widths = [int(w.output.shape[-1]) for w in self._watched]

        def local():
            loss, activations, grads = _inspection.forward_backward(
                model, self._probe, x, y, sample_weight
            )
            del loss
            moments = self._per_layer(_replica_stats.local_moments, activations)
            hists = self._per_layer(_activation_histogram, activations)
            return [ops.cast(g, "float32") for g in grads], moments, hists

        def nothing():
            grads = [ops.zeros(v.shape, "float32") for v in model.trainable_variables]
            moments = [
                _replica_stats.no_moments(w.activation, width)
                for w, width in zip(self._watched, widths, strict=True)
            ]
            hists = [ops.zeros((NUM_BINS,), "float32") for _ in self._watched]
            return grads, moments, hists

        grads, moments, hists = tf.cond(should, local, nothing)
        # One all-reduce per dtype (the tensors of one are concatenated).
        sums = context.all_reduce("sum", [sums for sums, _ in moments])
        grads, alive, hists = context.all_reduce(
            "sum", [grads, [alive for _, alive in moments], hists]
        )
        stats = [
            _replica_stats.global_stats(total, units, w.activation)
            for w, total, units in zip(self._watched, sums, alive, strict=True)
        ]
        return self._summarize(grads, stats, hists)

    @staticmethod
    def _kernel_of(watched):
        if watched.kernel is not None:
            return watched.kernel
        return watched.layer.weights[0]

    def _kernels(self, values=None, non_trainable_values=None):
        """The kernel (or first trainable weight) of each watched layer.

        With `values` (and `non_trainable_values`), the JAX train step's state:
        a kernel is taken from the list that holds it now (a layer frozen by
        `GradualUnfreezing` holds it in the non-trainable state).
        """
        model = self._monitored
        result = []
        lists = [(model.trainable_variables, values)]
        if non_trainable_values is not None:
            lists.append((model.non_trainable_variables, non_trainable_values))
        places = {
            id(variable): (state, i)
            for variables, state in lists
            for i, variable in enumerate(variables)
        }
        for w in self._watched:
            variable = self._kernel_of(w)
            if values is None:
                result.append(ops.cast(ops.convert_to_tensor(variable), "float32"))
            else:
                state, position = places.get(id(variable), (None, None))
                value = variable if state is None else state[position]
                result.append(ops.cast(value, "float32"))
        return result

    def _hyperparameters(self):
        optimizer = self._monitored.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        rate = ops.cast(ops.convert_to_tensor(optimizer.learning_rate), "float32")
        momentum = _hyperparameter(inner, "momentum")
        if momentum is None:
            momentum = _hyperparameter(inner, "beta_1")
        if momentum is None:
            momentum = ops.zeros((), "float32")
        return rate, momentum

    def _assemble(self, step, rate, momentum, parts, hists, grads, before, after):
        rows = []
        for part, old, new in zip(parts, before, after, strict=True):
            old_norm = ops.sqrt(ops.sum(ops.square(old)))
            change = ops.sqrt(ops.sum(ops.square(new - old)))
            ratio = ops.where(old_norm > 0, change / ops.maximum(old_norm, 1e-30), 0.0)
            rows.append(ops.concatenate([part[:1], ops.reshape(ratio, (1,)), part[1:]]))
        head = ops.stack([ops.cast(step, "float32"), rate, momentum])
        return ops.concatenate([head, *rows, *hists, *grads])

    def _make_step(self, original):
        backend = keras.backend.backend()
        if backend == "jax":
            return self._make_jax_step(original)
        if backend == "torch":
            return self._make_torch_step(original)
        return self._make_tensorflow_step(original)

    def _make_torch_step(self, original):
        def train_step(data):
            optimizer = self._monitored.optimizer
            step = int(ops.convert_to_numpy(optimizer.iterations))
            if step % self.frequency:
                return original(data)
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            parts, hists, grads = self._measure(x, y, sample_weight)
            rate, momentum = self._hyperparameters()
            before = [ops.copy(k) for k in self._kernels()]
            logs = original(data)
            after = self._kernels()
            vector = self._assemble(
                step, rate, momentum, parts, hists, grads, before, after
            )
            self._records.append(ops.convert_to_numpy(vector))
            return logs

        return train_step

    def _make_jax_step(self, original):
        import jax

        def host(vector):
            if self._live:
                self._records.append(np.asarray(vector))

        def train_step(state, data):
            trainable, non_trainable, optimizer_values = state[0], state[1], state[2]
            optimizer = self._monitored.optimizer
            mapping = list(zip(optimizer.variables, optimizer_values, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                step = ops.convert_to_tensor(optimizer.iterations)
                rate, momentum = self._hyperparameters()
            logs, new_state = original(state, data)

            def log():
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                parts, hists, grads = self._measure(
                    x, y, sample_weight, state=(trainable, non_trainable)
                )
                vector = self._assemble(
                    step,
                    rate,
                    momentum,
                    parts,
                    hists,
                    grads,
                    self._kernels(trainable, non_trainable),
                    self._kernels(new_state[0], new_state[1]),
                )
                jax.debug.callback(host, vector)

            jax.lax.cond(step % self.frequency == 0, log, lambda: None)
            return logs, new_state

        return train_step

    def _make_tensorflow_step(self, original):
        import tensorflow as tf

        def train_step(data):
            optimizer = self._monitored.optimizer
            step = tf.identity(optimizer.iterations.value)
            should = ops.equal(step % self.frequency, 0)
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

            def snapshot():
                rate, momentum = self._hyperparameters()
                # The weights before the update, for the update ratio: kept in
                # our own variables so that the other steps copy nothing.
                for copy, kernel in zip(self._snapshots, self._kernels(), strict=True):
                    copy.assign(kernel)
                return rate, momentum

            def skip_snapshot():
                zero = ops.zeros((), "float32")
                return zero, zero

            def measure():
                return (*self._measure(x, y, sample_weight), *snapshot())

            def skip():
                parts = [ops.zeros((5,), "float32") for _ in self._watched]
                hists = [ops.zeros((NUM_BINS,), "float32") for _ in self._watched]
                grads = (
                    [
                        ops.zeros((2 + NUM_GRADIENT_BINS,), "float32")
                        for _ in self._watched
                    ]
                    if self.histograms
                    else []
                )
                zero = ops.zeros((), "float32")
                return parts, hists, grads, zero, zero

            context = replica_context()
            if context is None:
                measured = tf.cond(should, measure, skip)
            else:  # MirroredStrategy: the statistics of the global batch
                measured = tf.cond(should, snapshot, skip_snapshot)
                measured = (
                    *self._measure_replica(should, x, y, sample_weight, context),
                    *measured,
                )
            parts, hists, grads, rate, momentum = measured
            # The step's reads of the weights and of `iterations` must happen
            # before its updates: order them explicitly.
            with tf.control_dependencies(tf.nest.flatten([measured, step])):
                logs = original(data)

            def emit():
                before = [snapshot.value for snapshot in self._snapshots]
                vector = self._assemble(
                    step, rate, momentum, parts, hists, grads, before, self._kernels()
                )
                count = self._count.value
                index = ops.minimum(count, self._buffer.shape[0] - 1)
                self._buffer.assign(
                    ops.scatter_update(
                        self._buffer.value, ops.reshape(index, (1, 1)), vector[None]
                    )
                )
                self._count.assign(count + 1)
                return ops.zeros((), "int32")

            if context is not None:  # the replicas hold the same values
                first = tf.equal(context.replica_id_in_sync_group, 0)
                should = tf.logical_and(should, first)
            tf.cond(should, emit, lambda: ops.zeros((), "int32"))
            return logs

        return train_step

    def _drain(self):
        count = int(ops.convert_to_numpy(self._count))
        if count:
            values = ops.convert_to_numpy(self._buffer)[:count]
            self._records.extend(np.array(row) for row in values)
            self._count.assign(0)

    # -- callback hooks ------------------------------------------------------

    def _width(self):
        per_layer = len(STATS) + NUM_BINS
        if self.histograms:
            per_layer += 2 + NUM_GRADIENT_BINS
        return _HEAD + len(self._watched) * per_layer

    def _is_live(self) -> bool:
        return self._live

    def _handshake(self) -> bool:
        token, self._token = self._token, False
        return self._live and token

    def on_train_begin(self, logs=None):
        self._reset()
        # Our own reference: on JAX, reading `Callback.model` syncs the model
        # state, which must not happen while a train step is being traced.
        self._monitored = model = self.model
        self._watched = _inspection.watched_layers(model, self.layers)
        self._probe = _inspection.build_probe(model, self._watched)
        inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        self._has_momentum = any(
            getattr(inner, name, None) is not None for name in ("momentum", "beta_1")
        )
        self._buffer = None
        self._pending = False
        self._skips_steps = isinstance(
            model.optimizer, keras.optimizers.LossScaleOptimizer
        )
        self._steps_per_execution = max(
            1, int(getattr(model, "steps_per_execution", 1) or 1)
        )
        if keras.backend.backend() == "tensorflow":
            capacity = self._steps_per_execution
            self._buffer = keras.Variable(
                np.zeros((capacity, self._width()), "float32"),
                trainable=False,
                name="kdt_monitor_buffer",
            )
            self._count = keras.Variable(0, dtype="int32", trainable=False)
            self._snapshots = [
                keras.Variable(
                    np.zeros(self._kernel_of(w).shape, "float32"), trainable=False
                )
                for w in self._watched
            ]
        self._writer = None
        if self.log_dir is not None:
            from keras_dnntools.callbacks._event_writer import EventWriter

            self._writer = EventWriter(self.log_dir)
        self._live = True
        _keras_compat.install_train_step(
            model, self._make_step, self._is_live, self._handshake
        )

    def _optimizer_step(self) -> int:
        return int(ops.convert_to_numpy(self._monitored.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_first_step = self._optimizer_step()

    def on_train_batch_begin(self, batch, logs=None):
        if self._pending:  # the previous execution logged steps
            self._drain()
        # Does this execution (at most `steps_per_execution` steps from the
        # optimizer step `first`) hold a step to log? If not, the plain train
        # step runs it. The step is counted from the epoch's first: reading
        # `iterations` here would wait for the previous execution (~0.7 ms a
        # step on TensorFlow) and, on JAX, read a value synced only between
        # epochs. A loss-scale optimizer may skip steps without counting
        # them: then every execution is instrumented.
        first = 0 if self._skips_steps else self._epoch_first_step + batch
        logs_a_step = (-first) % self.frequency < self._steps_per_execution
        self._pending = logs_a_step and self._buffer is not None
        self._token = True if logs_a_step else _keras_compat.PLAIN_STEP

    def on_epoch_end(self, epoch, logs=None):
        if self._pending:
            self._drain()
            self._pending = False
        if self._writer is not None:
            self._write()

    def on_train_end(self, logs=None):
        self._live = False
        _keras_compat.uninstall_train_step(self.model)
        self._collect()
        if self._writer is not None:
            self._write()
            self._writer.close()
            self._writer = None

    # -- TensorBoard ---------------------------------------------------------

    def _write(self):
        self._collect()
        writer = self._writer
        for i in range(self._written, len(self.steps)):
            step = int(self.steps[i])
            writer.scalar("learning_rate", float(self.learning_rate[i]), step)
            if self.momentum is not None:
                writer.scalar("momentum", float(self.momentum[i]), step)
            for name, stats in self.layer_stats.items():
                for stat, values in stats.items():
                    writer.scalar(f"{name}/{stat}", float(values[i]), step)
                if self.histograms:
                    edges, counts = self.activation_histograms[name]
                    writer.histogram(f"{name}/activations", edges, counts[i], step)
                    block = self._gradient_histograms[name][i]
                    low, high = block[0], block[1]
                    edges = np.linspace(low, high, NUM_GRADIENT_BINS + 1)
                    writer.histogram(f"{name}/gradients", edges, block[2:], step)
        self._written = len(self.steps)
        writer.flush()
