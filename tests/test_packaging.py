"""The source distribution can run its own tests; metadata shows the license and
the project's URLs."""

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    out = tmp_path_factory.mktemp("sdist")
    code = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.build_sdist(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out / result.stdout.strip().splitlines()[-1]


def test_sdist_holds_the_tests_and_their_data(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for required in (
        "conftest.py",
        "tests/test_docs.py",
        "tests/layer_contract.py",
        "tests/schedules/data/torch_one_cycle.json",
        "tests/reliability/matrix.py",
        "README.md",
        "mkdocs.yml",
        "docs/index.md",
        "LICENSE",
    ):
        assert required in names, required
    assert not [name for name in names if "__pycache__" in name]


def test_metadata_has_license_and_urls(sdist):
    with tarfile.open(sdist) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/PKG-INFO"))
        info = archive.extractfile(member).read().decode()
    assert "License-Expression: Apache-2.0" in info
    for label in ("Documentation", "Source", "Issues", "Changelog"):
        assert f"Project-URL: {label}, https://" in info, label
