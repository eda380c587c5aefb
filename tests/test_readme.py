"""The README's Python examples run as written (in order, sharing one namespace)."""

import pathlib

import pytest

from tests.code_blocks import python_blocks, run_blocks

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_has_examples():
    assert len(python_blocks(README)) >= 5


def test_readme_examples_run():
    skipped = run_blocks(README)
    if skipped:
        pytest.skip(f"examples that need {', '.join(skipped)} were skipped: not installed")
