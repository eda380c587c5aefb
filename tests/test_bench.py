"""The benchmark harness end to end on a tiny config (no timing is ever asserted)."""

import json

import jax.numpy as jnp

from rnnscan.bench import CONFIGS, check, main, peers, run
from rnnscan.bench.configs import Config


def test_harness_writes_results(tmp_path):
    doc = run([CONFIGS["tiny"]], ["rnnscan", "plain_scan", "jax_cudnn"], rounds=1, reps=2,
              out_dir=str(tmp_path), name="tiny", log=lambda message: None)

    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert {"device", "cpu", "cores"} <= set(on_disk["machine"])
    assert on_disk["versions"]["jax"]
    rows = {(r["peer"], r["mode"]): r for r in on_disk["results"]}
    assert set(rows) == {(p, m) for p in ("rnnscan", "plain_scan") for m in ("forward", "train")}
    for row in rows.values():
        assert row["median_ms"] > 0 and row["n"] >= 1 and row["tokens_per_s"] > 0
        assert row["compile_s"] > 0 and row["xla_bytes"] > 0
    if on_disk["machine"]["device"].startswith("cpu"):
        assert [s["peer"] for s in on_disk["skipped"]] == ["jax_cudnn", "jax_cudnn"]

    markdown = (tmp_path / "tiny.md").read_text()
    assert "## forward+backward" in markdown and "| tiny | lstm 2x8x4->8 |" in markdown
    assert (tmp_path / "tiny.png").stat().st_size > 0


def test_report_merges_runs(tmp_path):
    doc = run([CONFIGS["tiny"]], ["rnnscan", "plain_scan"], ["forward"], rounds=1, reps=1,
              out_dir=str(tmp_path), name="a", log=lambda message: None)
    for row in doc["results"]:  # a second run, of another config
        row["config"] = "b"
    (tmp_path / "b.json").write_text(json.dumps(doc))
    assert main(["--report", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                 "--out", str(tmp_path), "--name", "ab"]) == 0
    markdown = (tmp_path / "ab.md").read_text()
    assert "| tiny |" in markdown and "| b |" in markdown


def test_rnnscan_matches_the_plain_reference():
    lines = []
    for cell in ("lstm", "gru"):
        config = Config("check", cell, 2, 5, 3, 4)
        assert check.against_plain(config, None, 1e-5, lines.append), lines
        assert check.against_plain(config, jnp.bfloat16, 3e-2, lines.append), lines


def test_padded_rows_match_the_plain_reference_and_the_python_loop():
    # The plain scan's padding (state kept, zero outputs) against rnnscan's, which
    # tests/test_unroll.py holds to a Python loop; and against that loop here.
    import jax
    import numpy as np

    from tests import reference as ref

    lines = []
    for cell in ("lstm", "gru"):
        config = Config("check", cell, 6, 9, 3, 4, padded=True)
        n = peers.lengths(config)
        assert n.min() >= 4 and n.max() <= 9 and len(set(n.tolist())) > 1
        assert check.against_plain(config, None, 1e-5, lines.append), lines
    config = Config("check", "lstm", 6, 9, 3, 4, padded=True)
    params = {k: np.asarray(v) for k, v in peers.plain_init(config, jax.random.PRNGKey(0))[0].items()}
    xs = np.random.default_rng(0).standard_normal((6, 9, 3)).astype(np.float32)
    n = peers.lengths(config)
    got = peers.plain_apply("lstm", [params], xs, row_lengths=n)
    zeros = np.zeros((6, 4), np.float32)
    want = ref.loop_unroll(lambda h, x: ref.lstm_step(params, h, x, forget_bias=0.0), xs,
                           (zeros, zeros), lengths=n)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_padded_config_runs_every_peer_that_takes_lengths(tmp_path):
    config = Config("tiny_padded", "lstm", 3, 8, 4, 8, padded=True)
    doc = run([config], ["rnnscan", "plain_scan", "torch", "flax", "haiku"], rounds=1, reps=1,
              log=lambda message: None)
    ran = {r["peer"] for r in doc["results"]}
    assert {"rnnscan", "plain_scan"} <= ran and "haiku" not in ran
    assert {s["peer"] for s in doc["skipped"] if "lengths" in s["reason"]} == {"haiku"}
    assert all("lengths [T/2, T]" in r["shape"] for r in doc["results"])


def test_results_record_the_instruction_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNSCAN_KERNEL_ISA", "baseline")
    doc = run([CONFIGS["tiny"]], ["rnnscan"], ["forward"], rounds=1, reps=1,
              out_dir=str(tmp_path), name="isa", log=lambda message: None)
    m = doc["machine"]
    assert m["isa_environment"]["RNNSCAN_KERNEL_ISA"] == "baseline"
    assert m["cpu_flags"] == sorted(m["cpu_flags"]) and "isa" in m and "kernel_why" in m
    markdown = (tmp_path / "isa.md").read_text()
    assert "kernel variant" in markdown and "RNNSCAN_KERNEL_ISA" in markdown


def test_rnnscan_bench_command(tmp_path, capsys):
    from rnnscan.cli import main as cli

    status = cli(["bench", "--configs", "tiny", "--peers", "rnnscan,plain_scan", "--modes", "forward",
                  "--rounds", "1", "--reps", "1", "--out", str(tmp_path), "--name", "cli"])
    assert status == 0
    rows = json.loads((tmp_path / "cli.json").read_text())["results"]
    assert {r["peer"] for r in rows} == {"rnnscan", "plain_scan"}
    assert cli(["bench", "--configs", "nope"]) == 2
    assert "unknown config, peer or mode: nope" in capsys.readouterr().err


def test_isa_avx2_reruns_the_benchmark_held_to_avx2(tmp_path):
    from rnnscan.bench.run import EMULATION
    from rnnscan.cli import main as cli

    assert cli(["bench", "--configs", "tiny", "--peers", "rnnscan", "--modes", "forward",
                "--rounds", "1", "--reps", "1", "--isa", "avx2", "--out", str(tmp_path),
                "--name", "avx2"]) == 0
    machine = json.loads((tmp_path / "avx2.json").read_text())["machine"]
    assert machine["isa_environment"] == EMULATION["avx2"]
