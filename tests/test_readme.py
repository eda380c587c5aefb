"""The README's Python examples run as written (in order, sharing one namespace), and so
do its `rnnscan` commands, relative paths included."""

import pathlib
import subprocess
import sys

import pytest

from tests.code_blocks import python_blocks, run_blocks, shell_commands
from tests.test_cli import subprocess_env

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_has_examples():
    assert len(python_blocks(README)) >= 5


def test_readme_examples_run():
    skipped = run_blocks(README)
    if skipped:
        pytest.skip(f"examples that need {', '.join(skipped)} were skipped: not installed")


# Appended to the README's `rnnscan train` commands (later options win): a run of seconds.
SMALL = ["--hidden", "8", "--batch-size", "4", "--seq-len", "16", "--steps", "4", "--log-every", "2",
         "--eval-every", "4", "--checkpoint-every", "4"]


def test_readme_commands_run_as_written_from_a_fresh_directory(tmp_path):
    """The quick start, the training section's command and `rnnscan sample --run runs/charlm`, in
    the order a reader meets them, from one working directory, through `python -m rnnscan`."""
    # Run elsewhere, as written: `rnnscan tune` times real shapes (tests/test_tune.py runs
    # it end to end), and the multi-host pair needs two processes at once (tests/test_multihost.py).
    elsewhere = lambda words: words[1] == "tune" or "--coordinator" in words
    commands = [words for words in shell_commands(README, "rnnscan") if not elsewhere(words)]
    assert [words[:2] for words in commands] == [["rnnscan", "train"], ["rnnscan", "info"],
                                                 ["rnnscan", "train"], ["rnnscan", "sample"]]
    cwd, env = tmp_path / "clone", subprocess_env(tmp_path / "jax-cache")
    cwd.mkdir()
    printed = []
    for words in commands:
        argv = words[1:] + (SMALL if words[1] == "train" else [])
        done = subprocess.run([sys.executable, "-m", "rnnscan", *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (words, done.stderr)
        printed.append(done.stdout)
    assert "eval loss" in printed[0] and (cwd / "runs" / "charlm" / "checkpoints" / "4").is_dir()
    assert "runs/charlm is already trained to step 4" in printed[2]  # the same run, as written
    sample = commands[-1]
    prompt, length = sample[sample.index("--prompt") + 1], int(sample[sample.index("--length") + 1])
    assert printed[3].startswith(prompt) and len(printed[3]) == len(prompt) + length + 1
