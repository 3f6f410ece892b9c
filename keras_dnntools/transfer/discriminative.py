"""discriminative_optimizer: per-layer-group learning rates on MultiOptimizer."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import keras
import numpy as np

from keras_dnntools._distribution import strategy_scope
from keras_dnntools._registry import public
from keras_dnntools._validation import (
    check_float,
    check_int,
    check_sequence,
    invalid_type,
    invalid_value,
)
from keras_dnntools.transfer import _weighted_layers as wl


@public("transfer")
def discriminative_optimizer(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer | str,
    *,
    learning_rate_range: Sequence[float],
    num_groups: int = 3,
) -> keras.optimizers.MultiOptimizer:
    """An optimizer with lower learning rates for the lower layers.

    Discriminative fine-tuning (Howard & Ruder, 2018; fastai's
    `slice(low, high)`): the bottom layers of a reused network hold general
    features that need little change, the top ones task-specific features that
    need more. The weighted layers (layers with trainable weights of their own,
    bottom to top through nested models) are split into `num_groups`
    consecutive groups of nearly equal size (lower groups take the extra
    layers). Each group gets a copy of `optimizer` whose rate is spaced
    geometrically from `learning_rate_range[0]` (bottom group) to
    `learning_rate_range[1]` (top group). A normalization layer belongs to the
    group of the weighted layer below it (the bottom group when there is none).

    The result is a `keras.optimizers.MultiOptimizer` whose variables are
    mapped by their paths. The top group's optimizer is the default one (it
    also takes any variable created later). The `kdt.callbacks` schedulers
    drive every sub-optimizer and keep the ratios between them: the top
    group follows the schedule, the others are scaled by their rate relative
    to it.

    Reference: Howard & Ruder, "Universal Language Model Fine-tuning for Text
    Classification", ACL 2018 (https://arxiv.org/abs/1801.06146).

    Args:
        model: a built `keras.Model`.
        optimizer: a Keras optimizer (an instance or a name such as `"adam"`);
            it is copied (class and config), never used itself.
        learning_rate_range: `(low, high)`, the rates of the bottom and top
            groups, with `0 < low <= high`.
        num_groups: the number of groups, from 1 (everything at `high`) to
            the number of weighted layers.

    Returns:
        A `keras.optimizers.MultiOptimizer`, to pass to `model.compile`.

    Raises:
        TypeError: if `model` is not a `keras.Model` or `optimizer` is not an
            optimizer, or is a `MultiOptimizer` or `LossScaleOptimizer`.
        ValueError: if `learning_rate_range` is not two rates with
            `0 < low <= high`, `num_groups` is out of range, the model has no
            weighted layer or is not built, or two variables in different groups
            share a path.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(8), keras.layers.Dense(1)])
    >>> optimizer = kdt.transfer.discriminative_optimizer(
    ...     model, keras.optimizers.Adam(), learning_rate_range=(1e-5, 1e-3))
    >>> [float(sub.learning_rate) for sub in optimizer.optimizers]
    [1e-05, 0.0001, 0.001]
    >>> model.compile(optimizer=optimizer, loss="mse")
    """
    model = wl.check_model(model)
    optimizer = _check_optimizer(optimizer)
    low, high = _check_learning_rate_range(learning_rate_range)
    all_leaves = wl.leaves(model)
    weighted = wl.weighted_leaf_indices(model, all_leaves)
    num_groups = check_int(
        "num_groups",
        num_groups,
        low=1,
        high=len(weighted),
        expected=(
            f"an integer from 1 to the number of weighted layers ({len(weighted)})"
        ),
    )
    if not model.built:
        raise invalid_value("model", "a built model (with weights)", model.name)
    rates = group_learning_rates(low, high, num_groups)
    groups_of_leaves = _leaf_groups(len(all_leaves), weighted, num_groups)
    paths_by_group = _paths_by_group(all_leaves, groups_of_leaves, num_groups)
    # Under a MirroredStrategy, the model's optimizers are made in its scope.
    with strategy_scope(model):
        copies = [_copy(optimizer, rate, group) for group, rate in enumerate(rates)]
        optimizer_map = keras.optimizers.OptimizerMap(default_optimizer=copies[-1])
        for group in range(num_groups - 1):
            if paths_by_group[group]:
                optimizer_map[_pattern(paths_by_group[group])] = copies[group]
        return keras.optimizers.MultiOptimizer(optimizer_map)


def group_learning_rates(low: float, high: float, num_groups: int) -> list[float]:
    """Rates spaced geometrically from `low` to `high` (just `high` for one group)."""
    if num_groups == 1:
        return [high]
    ratio = math.log(high / low)
    return [
        float(low * math.exp(ratio * group / (num_groups - 1)))
        for group in range(num_groups)
    ]


def _check_optimizer(optimizer: object) -> keras.optimizers.Optimizer:
    if isinstance(optimizer, str):
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError as error:
            raise invalid_value(
                "optimizer", "a Keras optimizer or the name of one", optimizer
            ) from error
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer,
        (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer),
    ):
        raise invalid_type(
            "optimizer",
            "a Keras optimizer or its name (not a MultiOptimizer or "
            "LossScaleOptimizer)",
            optimizer,
        )
    return optimizer


def _check_learning_rate_range(learning_rate_range: object) -> tuple[float, float]:
    expected = "a pair (low, high) of learning rates with 0 < low <= high"
    pair = check_sequence(
        "learning_rate_range",
        learning_rate_range,
        lambda name, value: check_float(name, value, expected=expected),
        expected=expected,
    )
    if len(pair) != 2:
        raise invalid_value("learning_rate_range", expected, learning_rate_range)
    low, high = pair
    if not 0 < low <= high:
        raise invalid_value("learning_rate_range", expected, learning_rate_range)
    return low, high


def _leaf_groups(num_leaves: int, weighted: list[int], num_groups: int) -> list[int]:
    """The group of every leaf: that of the last weighted leaf at or below it."""
    group_of_weighted = np.concatenate(
        [
            np.full(len(chunk), group)
            for group, chunk in enumerate(
                np.array_split(np.arange(len(weighted)), num_groups)
            )
        ]
    )
    groups, current = [], 0
    position = 0
    for index in range(num_leaves):
        if position < len(weighted) and weighted[position] == index:
            current = int(group_of_weighted[position])
            position += 1
        groups.append(current)
    return groups


def _paths_by_group(
    all_leaves: list[wl.Leaf], groups: list[int], num_groups: int
) -> list[list[str]]:
    """Each group's variables, as path patterns that survive save and load.

    A variable's path starts with the name scopes it was created in, which
    differ between a model built in Python and the same model loaded from a
    file ("sequential/dense/kernel" against "dense/kernel"); from the layer's
    own name on it is the same. So each variable is matched by that tail,
    after any prefix.
    """
    group_of_tail: dict[str, int] = {}
    tails: list[list[str]] = [[] for _ in range(num_groups)]
    for leaf, group in zip(all_leaves, groups, strict=True):
        for variable in leaf.layer.weights:
            tail = _path_tail(variable.path, leaf.layer.name)
            previous = group_of_tail.setdefault(tail, group)
            if previous != group:
                raise invalid_value(
                    "model",
                    "a model whose layers have distinct names (MultiOptimizer "
                    f"maps variables by path; {tail!r} names variables in "
                    "different groups: rename one of the layers)",
                    leaf.layer.name,
                )
            if tail not in tails[group]:
                tails[group].append(tail)
    return tails


def _path_tail(path: str, layer_name: str) -> str:
    if path.startswith(f"{layer_name}/"):
        return path
    position = path.rfind(f"/{layer_name}/")
    return path if position < 0 else path[position + 1 :]


def _pattern(tails: list[str]) -> str:
    """A regex matching any of `tails`, after any name-scope prefix."""
    alternatives = "|".join(re.escape(tail) for tail in tails)
    return f"(?:.*/)?(?:{alternatives})"


def _copy(
    optimizer: keras.optimizers.Optimizer, learning_rate: float, group: int
) -> keras.optimizers.Optimizer:
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    config["name"] = f"{optimizer.name}_group_{group}"
    return type(optimizer).from_config(config)
