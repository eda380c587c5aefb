"""`rnnscan.sample` against a plain Python loop over `cell.step`, `step_model` against
`sequence_model`, `train.load_run` against the checkpoint as orbax reads it, and
`rnnscan sample`."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import rnnscan as rs
from rnnscan import tasks, train
from rnnscan.cli import main

V, B, P, N = 11, 3, 5, 12  # vocabulary, batch, prompt and generated lengths
CELLS = [rs.lstm(V, 12), rs.gru(12, 8)]
MODEL = train.sequence_model(rs.stack(CELLS), V, V)
CELL = train.step_model(rs.multi_cell(CELLS), V, V)
PROMPT = np.random.default_rng(0).integers(0, V, (B, P)).astype(np.int32)
KEY = jax.random.key(42)
STEP = jax.jit(CELL.step)  # one token at a time, compiled once


def embed(tokens):
    return jax.nn.one_hot(tokens, V)


@pytest.fixture(scope="module")
def params():
    """Random normal params: peaked logits, so that top-k matters."""
    shapes = jax.eval_shape(CELL.init, jax.random.key(0))
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), a.dtype), shapes)


def loop_sample(params, prompt, length, key, temperature, top_k=None):
    """The reference: one `CELL.step` per token in Python; each draw as documented,
    `jax.random.categorical(split(key, length)[t], logits / T)` with all but the
    top k logits (by a numpy sort) at -inf. Returns (tokens, state, logits per step)."""
    h = CELL.initial_state(params, (len(prompt),))
    for t in range(prompt.shape[1]):
        h, logits = STEP(params, h, embed(prompt[:, t]))
    keys = jax.random.split(key, length)
    tokens, seen = [], []
    for t in range(length):
        logits = np.asarray(logits)
        seen.append(logits)
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            if top_k is not None:
                kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
                logits = np.where(logits >= kth, logits, -np.inf).astype(np.float32)
            token = np.asarray(jax.random.categorical(keys[t], jnp.asarray(logits) / temperature))
        tokens.append(token)
        h, logits = STEP(params, h, embed(token))
    return np.stack(tokens, 1), h, np.stack(seen, 1)


def close(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5), a, b)


def test_step_model_is_the_sequence_model_one_step_at_a_time(params):
    leaves = jax.tree_util.tree_leaves
    key = jax.random.key(0)
    assert all(np.array_equal(a, b) for a, b in zip(leaves(MODEL.init(key)), leaves(CELL.init(key))))
    xs = embed(PROMPT)
    ys, state = MODEL.apply(params, xs)
    close(rs.unroll(CELL, params, xs), (ys, state))
    core_step = jax.jit(rs.multi_cell(CELLS).step)
    h = CELL.initial_state(params, (B,))
    for t in range(P):
        core_y = np.asarray(core_step(params["core"], h, xs[:, t])[1])
        h, y = STEP(params, h, xs[:, t])
        close(y, core_y @ np.asarray(params["readout"]["w"]) + np.asarray(params["readout"]["b"]))
    close((y, h), (ys[:, -1], state))


def test_greedy_is_the_argmax_of_a_python_loop_and_top_1(params):
    tokens, state = rs.sample(CELL, params, PROMPT, N, KEY, embed=embed, temperature=0)
    want, want_state, _ = loop_sample(params, PROMPT, N, KEY, 0)
    assert tokens.shape == (B, N) and tokens.dtype == jnp.int32
    np.testing.assert_array_equal(tokens, want)
    close(state, want_state)
    top_1, _ = rs.sample(CELL, params, PROMPT, N, KEY, embed=embed, temperature=1.0, top_k=1)
    np.testing.assert_array_equal(top_1, want)
    tiny_t, _ = rs.sample(CELL, params, PROMPT, N, jax.random.key(7), embed=embed, temperature=1e-6)
    np.testing.assert_array_equal(tiny_t, want)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, 3)])
def test_draws_are_those_of_a_python_loop_with_the_same_keys(params, temperature, top_k):
    tokens, _ = rs.sample(CELL, params, PROMPT, N, KEY, embed=embed, temperature=temperature, top_k=top_k)
    want, _, logits = loop_sample(params, PROMPT, N, KEY, temperature, top_k)
    np.testing.assert_array_equal(tokens, want)
    if top_k is not None:
        rank = (logits > np.take_along_axis(logits, np.asarray(tokens)[..., None], -1)).sum(-1)
        assert rank.max() < top_k  # every token among the k likeliest of its step
    other, _ = rs.sample(CELL, params, PROMPT, N, jax.random.key(43), embed=embed,
                         temperature=temperature, top_k=top_k)
    assert not np.array_equal(other, tokens)


def test_the_prompt_primes_the_state_as_the_sequence_model_reads_it(params):
    h0 = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, 0.3, a.dtype), CELL.initial_state(params, (B,)))
    tokens, state = rs.sample(CELL, params, PROMPT, N, KEY, embed=embed, temperature=0, initial_state=h0)
    ys, want_state = MODEL.apply(params, embed(np.concatenate([PROMPT, tokens], 1)), initial_state=h0)
    np.testing.assert_array_equal(tokens, np.argmax(ys[:, P - 1:-1], -1))  # teacher-forced argmax
    close(state, want_state)  # after the prompt and every generated token


def test_one_compiled_program_for_every_temperature_key_and_prompt(params):
    traced = []
    counting = lambda tokens: traced.append(1) or embed(tokens)
    rs.sample(CELL, params, PROMPT, N, KEY, embed=counting, temperature=0.5)
    first = len(traced)
    rs.sample(CELL, params, PROMPT[::-1], N, jax.random.key(1), embed=counting, temperature=1.5)
    assert first > 0 and len(traced) == first


@pytest.mark.parametrize("change, error, message", [
    (dict(length=0), ValueError, "length must be a positive int"),
    (dict(temperature=-1.0), ValueError, "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan")), ValueError, "temperature must be a finite number >= 0"),
    (dict(temperature="hot"), TypeError, "temperature must be a number"),
    (dict(top_k=0), ValueError, "top_k must be a positive int"),
    (dict(top_k=V + 1), ValueError, f"top_k must lie in [1, vocab] = [1, {V}]; got {V + 1}"),
    (dict(prompt=PROMPT[0]), ValueError, "prompt must be integer token ids of shape (batch, prompt_len)"),
    (dict(prompt=PROMPT[:, :0]), ValueError, "got int32[3, 0]"),
    (dict(prompt=PROMPT.astype(np.float32)), ValueError, "got float32[3, 5]"),
    (dict(embed=None), TypeError, "embed must be a function"),
    (dict(key=7), TypeError, "key must be one jax.random key"),
    (dict(key=jax.random.split(KEY)), TypeError, "key must be one jax.random key"),
])
def test_bad_input_names_the_argument(params, change, error, message):
    args = dict(prompt=PROMPT, length=N, key=KEY, embed=embed, temperature=1.0) | change
    with pytest.raises(error) as caught:
        rs.sample(CELL, params, args.pop("prompt"), args.pop("length"), args.pop("key"), **args)
    assert message in str(caught.value)


# -- a trained run ----------------------------------------------------------------

@pytest.fixture
def run_dir(charlm_run):
    """A charlm run of 4 steps, hidden 8, 2 layers, checkpoints 2 and 4 (tests/conftest.py)."""
    return charlm_run.out


def saved_params(run_dir, step):
    """The params as orbax reads the checkpoint by its own metadata (lists for tuples)."""
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(run_dir / "checkpoints" / str(step) / "state")["params"]


@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # saved_params: on the one device
def test_load_run_gives_the_checkpoints_params_and_the_trained_model(run_dir):
    run = train.load_run(run_dir)
    assert (run.step, run.task.name, run.config["hidden"], run.config["layers"]) == (4, "charlm", 8, 2)
    by_path = lambda tree: {jax.tree_util.keystr(path): np.asarray(leaf)  # lists and tuples alike
                            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    saved = {step: saved_params(run_dir, step) for step in (2, 4)}
    for step, params in (4, run.params), (2, train.load_run(run_dir, step=2).params):
        got, want = by_path(params), by_path(saved[step])
        assert got.keys() == want.keys()
        assert all(got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]) for k in want)
    w = "['readout']['w']"
    assert not np.array_equal(by_path(saved[2])[w], by_path(saved[4])[w])

    # The model as rnnscan train built it, by hand, on the saved params.
    V_ = len(tasks.charlm.vocab())
    model = train.sequence_model(rs.stack([rs.lstm(V_, 8), rs.lstm(8, 8)]), V_, V_)
    saved = saved[4] | {"core": tuple(saved[4]["core"])}
    xs = tasks.charlm.one_hot(tasks.charlm.encode("It is a truth universally")[None])
    logits = model.apply(saved, xs)[0]
    np.testing.assert_array_equal(run.model.apply(run.params, xs)[0], logits)
    close(rs.unroll(run.cell, run.params, xs)[0], logits)


def test_rnnscan_sample_prints_the_prompt_and_length_characters(run_dir, capsys):
    assert main(["sample", "--run", str(run_dir), "--prompt", "It is", "--length", "25", "--seed", "3",
                 "--temperature", "0.5", "--top-k", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("It is") and len(text) == len("It is") + 25 + 1  # print's newline
    run = train.load_run(run_dir)
    greedy = tasks.charlm.sample(run.cell, run.params, "It is", 25, jax.random.PRNGKey(0), temperature=0)
    assert text == greedy + "\n"


def test_rnnscan_sample_temperature_0_is_greedy_as_rs_sample_documents(run_dir, capsys):
    argv = ["sample", "--run", str(run_dir), "--prompt", "It is", "--length", "25"]
    assert main(argv + ["--temperature", "0", "--seed", "1"]) == 0
    greedy = capsys.readouterr().out
    assert main(argv + ["--top-k", "1", "--seed", "2"]) == 0  # the likeliest character, by top-k
    assert greedy == capsys.readouterr().out and len(greedy) == len("It is") + 25 + 1


@pytest.mark.slow  # the README commands test runs `rnnscan sample --run runs/charlm` as written
def test_a_relative_run_directory_loads_and_samples(run_dir, tmp_path, monkeypatch, capsys):
    # orbax refuses relative paths: the run directory's checkpoints are made absolute (rundir).
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run_dir, tmp_path / "runs" / "charlm")
    for relative in ("runs/charlm", "./runs/charlm", "runs/../runs/charlm"):
        run = train.load_run(relative)
        assert run.step == 4
        jax.tree_util.tree_map(np.testing.assert_array_equal, run.params, train.load_run(run_dir).params)
    assert main(["sample", "--run", "runs/charlm", "--length", "10", "--temperature", "0"]) == 0
    assert main(["sample", "--run", str(run_dir), "--length", "10", "--temperature", "0"]) == 0
    relative, absolute = capsys.readouterr().out.splitlines()
    assert relative == absolute and len(relative) == len("Elizabeth") + 10


def test_rnnscan_sample_refuses_bad_arguments_in_one_line(run_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    (corrupt / "run.json").write_text("{")
    other = tmp_path / "copy"  # a run of another task, its checkpoint made by hand
    config = {"task": "copy", "cell": "gru", "hidden": 4, "layers": 1}
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"config": config}))
    model, _ = train.build_model(tasks.get("copy"), config)
    checkpoints = train.Checkpoints(other / "checkpoints")
    checkpoints.save(train.init_state(model.init(KEY), optax.sgd(0.1), KEY))
    checkpoints.close()
    run = ["--run", str(run_dir)]
    for argv, message in [
        (["--run", str(tmp_path / "nope")], "is not a run directory: no such directory"),
        (["--run", str(corrupt)], "run.json is not a run.json of rnnscan train (JSONDecodeError"),
        (["--run", str(other)], "a copy run; rnnscan sample needs a charlm run"),
        (["--run", str(tmp_path)], "is not a run directory: it has no run.json"),
        (run + ["--step", "3"], "step must be one of the checkpoints [2, 4]; got 3"),
        (run + ["--temperature", "-1"], "argument --temperature: must be a non-negative finite number, got -1"),
        (run + ["--temperature", "inf"], "argument --temperature: must be a non-negative finite number, got inf"),
        (run + ["--length", "0"], "argument --length: must be a positive integer, got 0"),
        (run + ["--top-k", "78"], "--top-k: must be at most the vocabulary size, 77; got 78"),
        (run + ["--prompt", "caf\u00e9"], "--prompt: string has characters not in the charlm vocabulary: ['\u00e9']"),
        (run + ["--prompt", ""], "--prompt: must hold at least one character"),
    ]:
        with pytest.raises(SystemExit) as exit:
            main(["sample", *argv])
        err = capsys.readouterr().err
        assert exit.value.code == 2, argv
        assert message in err and err.count("error:") == 1 and "Traceback" not in err, (argv, err)


def test_load_run_refuses_a_run_json_it_cannot_build_from(run_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    run_json = json.loads((bad / "run.json").read_text())
    for change, message in [({"hidden": 16}, "its params differ (core/0/b: float32[32] there, float32[64] in"),
                            ({"layers": 0}, "positive ints hidden and layers; got layers=0"),
                            ({"cell": "lstmx"}, "config['cell'] must be one of"),
                            ({"task": None}, "must give a task name")]:
        (bad / "run.json").write_text(json.dumps(run_json | {"config": run_json["config"] | change}))
        with pytest.raises(ValueError) as caught:
            train.load_run(bad)
        assert message in str(caught.value)
