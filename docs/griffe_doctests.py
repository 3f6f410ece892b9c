"""A griffe extension for the API pages: doctest examples as code blocks.

Our docstrings follow Keras's layout, where the `>>>` lines of an `Example:`
section are not indented under it. Markdown would render them as text (and read
`[0.1, 0.01]` in their output as links), so this wraps each run of doctest
lines, up to the next blank line, in a `pycon` code fence.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        stripped = line.strip()
        if not inside and stripped.startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not stripped:
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Wraps doctest examples in code fences."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
