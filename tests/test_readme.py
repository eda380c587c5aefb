"""The README's Python examples run as written (in order, sharing one namespace)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 5


def test_readme_examples_run():
    namespace = {}
    skipped = []
    for block in python_blocks():
        if "torch." in block:
            try:
                import torch  # noqa: F401
            except ImportError:
                skipped.append(block)
                continue
        exec(compile(block, str(README), "exec"), namespace)
    if skipped:
        pytest.skip(f"{len(skipped)} example(s) need torch, which is not installed")
