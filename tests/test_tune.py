"""`rnnscan tune`'s cache (`rnnscan.kernels.speed`): written under this CPU
model and rnnscan version, read by `method="auto"` before the shipped table,
ignored for another CPU or version; and the shipped table answers only within
its measured rows. No timing is asserted: which of kernel and scan wins is
whatever this machine measured."""

import json

import jax
import numpy as np
import pytest

import rnnscan
import rnnscan as rs
from rnnscan.cli import main
from rnnscan.kernels import loader, speed
from rnnscan.unroll import make_plan
from tests.kernel_helpers import skip_unless_built

ROW = (5, 7, 6, 16)  # batch, time, input, hidden


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNSCAN_CACHE_DIR", str(tmp_path))
    return tmp_path / "tune.json"


def entry(faster, shape=ROW, kernel="lstm", variant="avx2"):
    return dict(kernel=kernel, variant=variant, shape=shape, faster=faster)


def test_the_cache_is_written_under_this_cpu_and_version(cache):
    assert speed.record([entry((True, False))]) == cache
    speed.record([entry((False, True)), entry((True, True), kernel="gru")])  # replaces the first
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 2
    for e in entries:
        assert e["cpu"] == loader.cpu_model() and e["version"] == rnnscan.__version__
    assert speed.tuned("lstm", "avx2") == [(ROW, (False, True))]
    assert speed.tuned("gru", "avx2") == [(ROW, (True, True))]
    assert speed.tuned("lstm", "baseline") == []


def test_auto_reads_the_cache_before_the_shipped_table(cache, monkeypatch):
    monkeypatch.setattr(speed, "MEASURED", {"lstm": {"avx2": [(ROW, (False, False))]}})
    assert not speed.kernel_is_faster("lstm", "avx2", *ROW)
    speed.record([entry((True, False))])
    assert speed.kernel_is_faster("lstm", "avx2", *ROW)
    assert not speed.kernel_is_faster("lstm", "avx2", *ROW, derivatives=True)
    # A shape outside the tuned rows: the shipped table answers.
    monkeypatch.setattr(speed, "MEASURED", {"lstm": {"avx2": [((5, 7, 6, 32), (True, True))]}})
    assert speed.kernel_is_faster("lstm", "avx2", 5, 7, 6, 32)


@pytest.mark.parametrize("other", ["cpu", "version"])
def test_the_cache_of_another_cpu_or_version_is_ignored(cache, monkeypatch, other):
    monkeypatch.setattr(speed, "MEASURED", {})
    speed.record([entry((True, True))])
    assert speed.kernel_is_faster("lstm", "avx2", *ROW)
    if other == "cpu":
        monkeypatch.setattr(loader, "cpu_model", lambda: "Another CPU")
    else:
        monkeypatch.setattr(rnnscan, "__version__", rnnscan.__version__ + ".dev1")
    assert speed.tuned("lstm", "avx2") == []
    assert not speed.kernel_is_faster("lstm", "avx2", *ROW)


def test_a_damaged_cache_is_ignored(cache):
    cache.write_text("{not json")
    assert speed.tuned("lstm", "avx2") == []
    speed.record([entry((True, True))])  # and rewritten
    assert speed.tuned("lstm", "avx2") == [(ROW, (True, True))]


def test_no_answer_outside_the_measured_rows(monkeypatch):
    rows = [((1, 1024, 256, 256), (True, True)), ((64, 256, 512, 512), (False, True))]
    monkeypatch.setattr(speed, "MEASURED", {"lstm": {"avx2": rows}})
    assert speed.kernel_is_faster("lstm", "avx2", 2, 100, 256, 256)       # nearest: the first
    assert not speed.kernel_is_faster("lstm", "avx2", 48, 100, 512, 512)  # nearest: the second
    assert speed.kernel_is_faster("lstm", "avx2", 48, 100, 512, 512, derivatives=True)
    for shape in [(128, 25, 512, 512), (4, 25, 128, 256), (4, 25, 256, 1024)]:
        assert not speed.kernel_is_faster("lstm", "avx2", *shape, derivatives=True), shape


@skip_unless_built("lstm_cpu")
def test_rnnscan_tune_writes_what_auto_then_follows(cache, capsys):
    lib = loader.load("lstm_cpu")
    hidden = 2 * lib.lanes
    assert main(["tune", "--cell", "lstm", "--shape", f"3x5x4x{hidden}", "--rounds", "1"]) == 0
    (e,) = json.loads(cache.read_text())["entries"]
    assert (e["kernel"], e["variant"], e["shape"]) == ("lstm", lib.variant, [3, 5, 4, hidden])
    assert set(e["ms"]) == {"fwd", "fwd+bwd"} and all(isinstance(f, bool) for f in e["faster"])
    assert str(cache) in capsys.readouterr().out
    cell = rs.lstm(4, hidden)
    params = cell.init(jax.random.key(0))
    plan = make_plan(cell, params, np.zeros((3, 5, 4), np.float32))
    assert (plan.strategy == "kernel") == e["faster"][0]
    assert (plan.derivatives or plan.strategy) == ("kernel" if e["faster"][1] else "scan")


def test_rnnscan_tune_names_a_bad_shape(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--shape", "3x5x4"])
    assert "BATCHxTIMExINPUTxHIDDEN" in capsys.readouterr().err
