"""`python -m keras_dnntools demo` runs offline and writes its table and plots."""

import json
import os
import subprocess
import sys

import pytest

from keras_dnntools.__main__ import main


def _run(*args, **kwargs):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the demo must quiet TensorFlow itself
    return subprocess.run(
        [sys.executable, "-m", "keras_dnntools", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kwargs,
    )


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--epochs", "--output", "--seed", "--quick"):
        assert option in out


def test_bad_options_are_named(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "--epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_writes_table_and_plots(tmp_path):
    output = tmp_path / "out"
    result = _run("demo", "--quick", "--output", str(output), "--seed", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| model | test accuracy | NLL | ECE | wall time (s) |" in result.stdout
    # A smoke run says so and makes no claim about the models.
    assert "SMOKE RUN (--quick" in result.stdout
    assert "transfer rows" not in result.stdout
    assert "SMOKE RUN" in (output / "results.md").read_text()
    # TensorFlow's start-up noise (cuInit "errors" without a GPU) is silenced.
    for noise in ("E0000", "cuInit", "I0000", "absl::InitializeLog"):
        assert noise not in result.stderr, result.stderr[-2000:]
    rows = json.loads((output / "results.json").read_text())
    names = [row["name"] for row in rows]
    assert names[0] == "baseline" and "B on A (fine_tune)" in names
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["nll"] >= 0.0
    for plot in (
        "lr_finder.png",
        "one_cycle.png",
        "uncertainty_histogram.png",
        "reliability_diagram.png",
    ):
        assert (output / plot).stat().st_size > 1000, plot


def test_missing_examples_extra_gives_a_clear_message(tmp_path):
    code = (
        "import sys; sys.modules['sklearn'] = None; "
        "sys.modules['sklearn.datasets'] = None\n"
        "from keras_dnntools.__main__ import main\n"
        f"sys.exit(main(['demo', '--quick', '--output', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "keras-dnntools[examples]" in result.stderr
