"""Issue 22: loads that verify what they read, a run's history never erased, a full disk
said in one line, and no noise at exit. Every fault is made here, on a small run."""

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from rnnscan import train
from rnnscan.cli import main
from rnnscan.train.checkpoint import CheckpointError, CheckpointSaveError
from tests.test_checkpoints import assert_bit_identical, fresh_state, saved_states

REPO = Path(__file__).resolve().parents[1]
NOISE = ("Traceback", "Event loop is closed", "sys.meta_path is None", "Exception ignored")


def by_path(tree) -> dict:
    """Leaves by path, lists and tuples alike (orbax reads tuples back as lists)."""
    return {jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def same_bits(a, b) -> bool:
    a, b = by_path(a), by_path(b)
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.fixture
def run_dir(charlm_run, tmp_path) -> Path:
    """A copy of tests/conftest.py's charlm run (checkpoints 2 and 4) to damage."""
    shutil.copytree(charlm_run.out, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def saved(run_dir) -> dict:
    """The params of each checkpoint as orbax reads them by its own metadata, before any damage."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        return {step: checkpointer.restore(run_dir / "checkpoints" / str(step) / "state")["params"] for step in (2, 4)}


def flip_a_bit(rng: random.Random, files: dict) -> None:
    """Writes back `files` ({path: bytes}) as they were, then flips one random bit of one of them."""
    for path, data in files.items():
        path.write_bytes(data)
    path = rng.choice(sorted(files))
    data = bytearray(files[path])
    bit = rng.randrange(8 * len(data))
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # `saved`: on the one device
def test_load_run_never_returns_params_that_a_flipped_bit_changed(run_dir, saved):
    # Case 1: the data is compressed, so a flipped bit may scramble values that orbax reads without complaint.
    files = {p: p.read_bytes() for p in (run_dir / "checkpoints/4/state/ocdbt.process_0/d").iterdir()}
    rng, outcomes = random.Random(22), []
    while "sha256" not in outcomes and len(outcomes) < 80:
        flip_a_bit(rng, files)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            run = train.load_run(run_dir)
        if run.step == 4:  # a bit of what load_run does not read (the optimizer's state), or of no value
            assert same_bits(run.params, saved[4]) and not warned
            outcomes.append("intact")
        else:  # checkpoint 4 is damaged: said, and checkpoint 2 loaded whole
            assert run.step == 2 and same_bits(run.params, saved[2])
            [message] = [str(w.message) for w in warned]
            assert message.startswith(f"checkpoint 4 in {run_dir / 'checkpoints'} is damaged (")
            assert message.endswith("; loaded checkpoint 2 instead")
            outcomes.append("sha256" if "sha256 of .params" in message else "read")
    assert outcomes[-1] == "sha256", outcomes  # values orbax read as valid, caught by the digest only
    # Nothing on disk changed: the damaged checkpoint is still there, for training to set aside.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["2", "4"]
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* verifies: checkpoint 4 \(ValueError: "
                       r"the sha256 of \.params\[.*differs"):
        train.load_run(run_dir, step=4)  # the one asked for, and no other


def test_rnnscan_sample_warns_and_uses_the_checkpoint_before_or_refuses_in_one_line(run_dir, capfd):
    # Case 1 through the command; case 8: no traceback at exit after the failed read.
    assert main(["sample", "--run", str(run_dir), "--step", "2", "--length", "30", "--top-k", "1"]) == 0
    from_2 = capfd.readouterr().out
    data = max((run_dir / "checkpoints/4/state").rglob("d/*"), key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:100])  # truncated: the read fails
    command = [sys.executable, "-m", "rnnscan", "sample", "--run", str(run_dir), "--length", "30", "--top-k", "1"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONPATH": str(REPO)}
    fell_back = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert fell_back.returncode == 0 and fell_back.stdout == from_2, fell_back.stderr
    assert "UserWarning: checkpoint 4 in" in fell_back.stderr and "loaded checkpoint 2 instead" in fell_back.stderr
    assert not any(noise in fell_back.stderr for noise in NOISE), fell_back.stderr
    refused = subprocess.run(command + ["--step", "4"], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"rnnscan sample: error: --run {run_dir}: no checkpoint in ")
    assert len(refused.stderr.splitlines()) == 1, refused.stderr


def test_a_digest_of_the_wrong_shape_is_damage_and_the_checkpoint_before_restores(tmp_path):
    # Case 7: a digest that still parses, its shapes changed, and the state it describes intact.
    like = fresh_state()
    checkpoints = train.Checkpoints(tmp_path)
    saved = saved_states(checkpoints, like, (1, 2))
    digest_file = tmp_path / "2" / "digest" / "metadata"
    digest = json.loads(digest_file.read_text())
    digest[".params['core']['w_hh']"]["shape"] = [8, 33]
    digest_file.write_text(json.dumps(digest))
    with pytest.warns(UserWarning, match=r"checkpoint 2 .* damaged \(its digest does not match its state's shapes\)"
                      r".*restored checkpoint 1 instead"):
        assert_bit_identical(checkpoints.restore(like), saved[1])
    checkpoints.close()


@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # `saved`: on the one device
def test_load_run_passes_over_a_latest_checkpoint_that_does_not_read_or_whose_digest_lies(run_dir, saved):
    # Case 7, read-only: a file of the latest checkpoint replaced by a directory, then its digest's shapes wrong.
    # Every data file, so that whichever holds the params does not read.
    originals = {p: p.read_bytes() for p in (run_dir / "checkpoints/4/state").rglob("d/*")}
    for data in originals:
        data.unlink()
        data.mkdir()
    with pytest.warns(UserWarning, match=r"checkpoint 4 in .* is damaged \(.*\); loaded checkpoint 2 instead"):
        run = train.load_run(run_dir)
    assert run.step == 2 and same_bits(run.params, saved[2])
    for data, original in originals.items():
        data.rmdir()
        data.write_bytes(original)
    assert same_bits(train.load_run(run_dir).params, saved[4])

    digest_file = run_dir / "checkpoints/4/digest/metadata"
    digest = json.loads(digest_file.read_text())
    digest[".params['readout']['b']"]["shape"] = [78]
    digest_file.write_text(json.dumps(digest))
    with pytest.warns(UserWarning, match=r"its digest gives \.params\['readout'\]\['b'\] another shape.*"
                      r"loaded checkpoint 2 instead"):
        assert train.load_run(run_dir).step == 2


def records_file(path: Path, steps) -> list[str]:
    lines = [json.dumps({"step": step, "loss": 1.0 / step}) + "\n" for step in steps]
    path.write_text("".join(lines))
    return lines


def test_an_unparsable_line_keeps_every_record_after_it_and_is_set_aside(tmp_path):
    # Case 4: line 21 of 60 replaced by garbage, then the run resumes from step 60.
    path = tmp_path / "metrics.jsonl"
    lines = records_file(path, range(1, 61))
    lines[20] = "{garbage\n"
    path.write_text("".join(lines))
    with pytest.warns(UserWarning, match=r"metrics.jsonl: line 21 of 60 does not parse as a record; copied the "
                      r"file as it was to .*metrics.jsonl.damaged and kept the 59 records that parse"):
        log = train.MetricsLog(path, resume_step=60)
    expected = [{"step": step, "loss": 1.0 / step} for step in range(1, 61) if step != 21]
    assert log.records == expected
    assert [json.loads(line) for line in path.read_text().splitlines()] == expected
    assert (tmp_path / "metrics.jsonl.damaged").read_text() == "".join(lines)


def test_only_a_torn_last_line_is_dropped_and_silently(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = records_file(path, range(1, 11))
    path.write_text("".join(lines) + '{"step": 11, "lo')  # the write of a killed process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log = train.MetricsLog(path, resume_step=8)
    assert [r["step"] for r in log.records] == list(range(1, 9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


async def disk_full_at_step_6(self, item, directory):
    """`JsonCheckpointHandler._save_fn` on a disk that fills up at checkpoint 6."""
    if "/6.orbax-checkpoint-tmp" in str(directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    return await ORIGINAL_SAVE(self, item, directory)


ORIGINAL_SAVE = json_checkpoint_handler.JsonCheckpointHandler._save_fn


def test_a_full_disk_names_the_last_good_checkpoint_which_restores(monkeypatch, tmp_path):
    # Case 6, in `fit`: the write of checkpoint 6 fails in orbax's background thread.
    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", disk_full_at_step_6)
    optimizer = optax.sgd(0.1)
    loss_fn = lambda params, batch, key: jnp.sum((params["w"] - batch) ** 2)
    state = train.init_state({"w": jnp.zeros(3)}, optimizer, jax.random.PRNGKey(0))
    checkpoints = train.Checkpoints(tmp_path)
    with pytest.raises(CheckpointSaveError, match=r"^checkpoint 6 could not be written to .* \(OSError: \[Errno 28\] "
                       r"No space left on device: .*\); the last good checkpoint is step 4\.$"):
        train.fit(state, train.make_train_step(loss_fn, optimizer, clip_norm=None), lambda s: jnp.ones(3), steps=10,
                  checkpoints=checkpoints, checkpoint_every=2, progress=False)
    checkpoints.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "4"]
    monkeypatch.undo()
    again = train.Checkpoints(tmp_path)
    restored = again.restore(state)
    again.close()
    w = 0.0
    for _ in range(4):  # plain SGD on (w - 1)^2 by hand: w <- w - 0.1 * 2 (w - 1)
        w = np.float32(w - np.float32(0.1) * np.float32(2) * (np.float32(w) - 1))
    assert int(restored.step) == 4 and np.array_equal(restored.params["w"], np.full(3, w, np.float32))


TINY = ["train", "--task", "copy", "--hidden", "8", "--batch-size", "4", "--seq-len", "5",
        "--steps", "12", "--checkpoint-every", "4", "--log-every", "1"]


@pytest.mark.parametrize("remove", ["deleted", pytest.param("emptied", marks=pytest.mark.slow)])
def test_a_run_whose_checkpoints_are_gone_is_refused_and_its_metrics_kept(tmp_path, capsys, remove):
    # Case 3: the history of a finished run must not be erased by rerunning its command.
    out = tmp_path / "run"
    argv = TINY + ["--out", str(out)]
    assert main(argv) == 0
    history = (out / "metrics.jsonl").read_text()
    assert len(history.splitlines()) == 12
    curve = lambda text: [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, text.splitlines())]
    shutil.rmtree(out / "checkpoints")
    if remove == "emptied":
        (out / "checkpoints").mkdir()
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rnnscan train: error: {out / 'metrics.jsonl'} records the run up to step 12, but ")
    assert "holds no checkpoint (deleted?). Refusing to start the run over" in err and len(err.splitlines()) == 1
    assert (out / "metrics.jsonl").read_text() == history

    with pytest.warns(UserWarning, match=r"starting over from step 0 as --restart-if-damaged asks; its metrics "
                      r"up to step 12 are kept in .*metrics.jsonl.before-restart"):
        assert main(argv + ["--restart-if-damaged"]) == 0
    assert (out / "metrics.jsonl.before-restart").read_text() == history
    assert curve((out / "metrics.jsonl").read_text()) == curve(history)  # trained again from step 0: the same


def test_training_past_a_checkpoint_that_does_not_read_leaves_no_traceback_at_exit(tmp_path):
    # Case 8 in `rnnscan train`: the failed read of checkpoint 8 is named in a warning, and only there.
    out = tmp_path / "run"
    argv = TINY[:TINY.index("--steps")] + ["--steps", "8", "--checkpoint-every", "4", "--out", str(out)]
    assert main(argv) == 0
    for data in (out / "checkpoints/8/state").rglob("d/*"):  # every data file a directory: the read fails
        data.unlink()
        data.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"PYTHONPATH": str(REPO)}
    resumed = subprocess.run([sys.executable, "-m", "rnnscan", *argv], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "UserWarning: checkpoint 8 in" in resumed.stderr and "restored checkpoint 4 instead" in resumed.stderr
    assert not any(noise in resumed.stderr for noise in NOISE), resumed.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["4", "8", "8.damaged"]
