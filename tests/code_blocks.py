"""The ```python blocks of a Markdown file, run as a reader would: in order, in one namespace.

A block that names an optional peer (`torch`, `flax`, `haiku`, ...) is skipped when
that peer is not installed; so a block that uses one must name it (import it).
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shlex

OPTIONAL = ("torch", "flax", "equinox", "haiku", "keras", "tensorflow", "flatbuffers")


def python_blocks(path: pathlib.Path) -> list[tuple[int, str]]:
    """`(line, code)` of each ```python block, `line` the block's first line in the file."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m[1])
            for m in re.finditer(r"```python\n(.*?)```", text, flags=re.S)]


def shell_commands(path: pathlib.Path, program: str) -> list[list[str]]:
    """The commands of `program` in the file's ```sh blocks, split as a shell splits them
    (`pip install . && rnnscan train` gives `["rnnscan", "train"]`; comments dropped)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == [program]:
                    commands.append(words)
    return commands


def missing_peers(code: str) -> list[str]:
    """The optional peers that `code` names and that are not installed."""
    return [name for name in OPTIONAL
            if re.search(rf"\b{name}\b", code) and importlib.util.find_spec(name) is None]


def run_blocks(path: pathlib.Path, stop_at_skip: bool = False) -> list[str]:
    """Runs the file's Python blocks in order in one namespace; returns the peers whose
    absence made blocks skip (empty when every block ran). Tracebacks show the
    Markdown file's own line numbers."""
    namespace: dict = {}
    skipped: list[str] = []
    for line, code in python_blocks(path):
        missing = missing_peers(code)
        if missing:
            skipped += missing
            if stop_at_skip:  # later blocks read what the skipped one defines
                break
            continue
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
    return sorted(set(skipped))
