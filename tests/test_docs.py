"""Each migration guide in docs/ runs as written: its Python blocks in order, in one
namespace; blocks that need a peer that is not installed are skipped."""

import pathlib

import pytest

from tests.code_blocks import python_blocks, run_blocks

GUIDES = sorted((pathlib.Path(__file__).parent.parent / "docs").glob("migrating-*.md"))


def test_guides_exist():
    assert [g.stem for g in GUIDES] == ["migrating-from-flax", "migrating-from-haiku",
                                        "migrating-from-keras", "migrating-from-tf1",
                                        "migrating-from-torch"]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda g: g.stem)
def test_guide_runs(guide):
    assert len(python_blocks(guide)) >= 2
    skipped = run_blocks(guide, stop_at_skip=True)
    if skipped:
        pytest.skip(f"blocks that need {', '.join(skipped)} were skipped: not installed")
