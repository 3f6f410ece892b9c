"""Every ```python block of README.md and docs/**/*.md runs, as written.

Each block runs on its own, in a fresh namespace, from a temporary working
folder (blocks that save a plot write there), with matplotlib's Agg backend.
A block that cannot run says so, visibly, on the line right above its fence:

    <!-- test: skip (why it cannot run) -->
    <!-- test: backends tensorflow (why only there) -->
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keras
import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*test:\s*(skip|backends ([\w, ]+?))\s*\((.+)\)\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    source: str
    skip: str | None = None
    backends: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with their test markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index].strip())
        if not opening or not opening.group(1):
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening.group(1) == "python":
            indent = len(lines[index]) - len(lines[index].lstrip())
            source = "\n".join(line[indent:] for line in lines[index + 1 : end])
            previous = lines[index - 1].strip() if index else ""
            marker = MARKER.match(previous)
            skip = backends = None
            if marker and marker.group(1) == "skip":
                skip = marker.group(3)
            elif marker:
                backends = tuple(b.strip() for b in marker.group(2).split(","))
                skip = None if keras.backend.backend() in backends else marker.group(3)
            blocks.append(Block(path, index + 1, source, skip, backends))
        index = end + 1
    return blocks


BLOCKS = [block for path in markdown_files() for block in python_blocks(path)]


def test_the_readme_and_docs_have_blocks_to_run():
    readme = [block for block in BLOCKS if block.path.name == "README.md"]
    assert len(readme) >= 7, [block.id for block in readme]
    skipped = [block.id for block in readme if block.backends is None and block.skip]
    assert not skipped, f"README blocks skipped on every backend: {skipped}"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.id)
def test_block_runs_as_written(block, tmp_path, monkeypatch):
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip}")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    code = compile(block.source, block.id, "exec")
    try:
        exec(code, {"__name__": "__main__"})
    finally:
        plt.close("all")


def test_markers_are_well_formed():
    """A typo in a marker must not silently turn into a block that runs or not."""
    for path in markdown_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "<!--" in line and "test:" in line:
                assert MARKER.match(line.strip()), f"{path.name}:{number}: {line}"


def test_api_pages_cover_every_public_name():
    """A public object without an API entry fails here (add it to its page)."""
    from keras_dnntools._registry import public_objects

    missing = []
    for key in public_objects():
        namespace, name = key.split(".")
        page = ROOT / "docs" / "api" / f"{namespace}.md"
        text = page.read_text() if page.exists() else ""
        if f"::: keras_dnntools.{namespace}.{name}\n" not in text:
            missing.append(f"{key} (docs/api/{namespace}.md)")
    assert not missing, f"no API entry for: {missing}"


def test_every_docs_page_is_in_the_navigation():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!", ""))["nav"]

    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    listed = set(pages(nav))
    present = {
        p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
    }
    assert present == listed, (sorted(present - listed), sorted(listed - present))


def test_the_first_screen_keeps_its_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "python -m keras_dnntools demo" in head
    assert 'pip install -e ".[examples]"' in head
    assert 'pip install -e ".[test]"' in head
    assert "KERAS_BACKEND=torch pytest" in head
    ci = (ROOT / ".ci" / "run").read_text()
    # CI runs the README's test command: the same installs, pytest per backend.
    assert 'pip install -q -e ".[test]"' in ci
    assert 'pip install -q "torch==2.13.0+cpu" "jax[cpu]"' in ci
    assert 'pip install "torch==2.13.0+cpu" "jax[cpu]"' in head
    assert "for backend in tensorflow jax torch" in ci
    assert "KERAS_BACKEND=$backend pytest\n" in ci
    assert "mkdocs build --strict" in ci
