"""The matrix covers every public object, and every cell is decided."""

import pytest

from keras_dnntools._registry import public_objects
from tests.reliability.matrix import CHECKS, MATRIX, markdown_table

PUBLIC = public_objects()


@pytest.mark.parametrize("key", sorted(PUBLIC))
def test_every_public_object_has_a_row(key):
    assert key in MATRIX, (
        f"kdt.{key} is public but has no row in tests/reliability/matrix.py: "
        "say which reliability checks apply to it and how to build it"
    )


@pytest.mark.parametrize("key", sorted(MATRIX))
def test_every_row_is_a_public_object(key):
    assert key in PUBLIC, (
        f"tests/reliability/matrix.py has a row for kdt.{key}, which is not in "
        "keras_dnntools._registry.public_objects() (missing, renamed or not "
        "decorated with @public)"
    )


@pytest.mark.parametrize("key", sorted(MATRIX))
def test_every_cell_is_decided_once(key):
    row = MATRIX[key]
    applies, skipped = set(row.checks), set(row.na)
    assert applies | skipped == set(CHECKS), f"{key}: undecided checks"
    assert not applies & skipped, f"{key}: both checked and n.a.: {applies & skipped}"
    assert set(row.xfail) <= applies, f"{key}: xfail on a check that does not apply"
    assert all(reason for reason in row.na.values()), f"{key}: n.a. without a reason"


def test_bad_input_covers_every_public_object_with_arguments():
    # Everything public takes arguments, so everything gets invalid calls.
    missing = [key for key, row in MATRIX.items() if "bad_input" not in row.checks]
    assert not missing


def test_markdown_table_has_a_line_per_row():
    assert len(markdown_table().splitlines()) == len(MATRIX) + 2
