"""rnnscan.train: masked losses, the train step, fit, checkpoints and data parallelism."""

import functools
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnscan as rs
from rnnscan import tasks, train

REPO = Path(__file__).resolve().parents[1]


class Tiny(NamedTuple):
    task: tasks.Task
    model: rs.Layer
    optimizer: optax.GradientTransformation
    loss_fn: Callable
    train_step: Callable

    def fresh_state(self):
        key = jax.random.PRNGKey(0)
        return train.init_state(self.model.init(key), self.optimizer, key)


@functools.cache  # one compilation per setup for the whole module
def tiny(task_name="copy", hidden=16, lr=1e-2, cell=rs.lstm) -> Tiny:
    """A small model on a task, Adam, and its (not yet compiled) train step."""
    task = tasks.get(task_name)
    model = train.sequence_model(cell(task.input_size, hidden), task.input_size, task.output_size)
    optimizer = optax.adam(lr)
    loss_fn = tasks.loss_fn(task, model)
    return Tiny(task, model, optimizer, loss_fn, train.make_train_step(loss_fn, optimizer))


def losses_of(run: Tiny, state, batches, steps, **fit_options):
    """Trains to `steps`; returns `(state, [(step, loss), ...])`."""
    records = []
    state = train.fit(state, run.train_step, batches, steps=steps, log_every=1,
                      on_log=records.append, progress=False, **fit_options)
    return state, [(r["step"], r["loss"]) for r in records]


def test_masked_mean_matches_numpy_and_ignores_what_is_masked():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 6)).astype(np.float32)
    mask = (rng.random((4, 6)) < 0.5).astype(np.float32)
    expected = values[mask == 1].mean()
    values[mask == 0] = np.nan
    np.testing.assert_allclose(train.masked_mean(jnp.asarray(values), jnp.asarray(mask)), expected, rtol=1e-6)
    assert train.masked_mean(jnp.ones((2, 3)), jnp.zeros((2, 3))) == 0


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_padded_batch_loss_is_the_numpy_cross_entropy_over_valid_tokens():
    task, model, _, loss_fn, _ = run = tiny("copy")
    state = run.fresh_state()
    batch = task.batch(0, 0, 8, 11)
    assert (batch.lengths < 11).any()
    logits = np.asarray(model.apply(state.params, task.encode(batch.inputs), lengths=batch.lengths)[0])
    b, t = np.nonzero(batch.mask)
    expected = -log_softmax(logits.astype(np.float64))[b, t, batch.targets[b, t]].mean()
    np.testing.assert_allclose(loss_fn(state.params, batch, None), expected, rtol=1e-5)

    # Padding (past each row's length) and unmasked targets do not reach the loss.
    t = np.arange(11)
    padded = t[None] >= batch.lengths[:, None]
    noisy = batch._replace(
        inputs=np.where(padded, 5, batch.inputs).astype(np.int32),
        targets=np.where(batch.mask == 0, 7, batch.targets).astype(np.int32),
    )
    assert not np.array_equal(noisy.inputs, batch.inputs)
    np.testing.assert_array_equal(loss_fn(state.params, noisy, None), loss_fn(state.params, batch, None))


def test_train_step_clips_the_global_gradient_norm():
    params = {"w": jnp.array([3.0, 4.0])}
    loss_fn = lambda p, batch, key: jnp.sum(p["w"] * batch)  # gradient = batch
    optimizer = optax.sgd(1.0)
    step = train.make_train_step(loss_fn, optimizer, clip_norm=0.5)
    state = train.init_state(params, optimizer, jax.random.key(0))  # a typed key is stored raw
    state, metrics = step(state, jnp.array([6.0, 8.0]))
    assert metrics["grad_norm"] == 10.0 and bool(metrics["finite"])
    np.testing.assert_allclose(state.params["w"], [3.0 - 0.3, 4.0 - 0.4], rtol=1e-6)
    assert int(state.step) == 1


def test_clipping_is_an_argument_none_turns_it_off_and_bad_values_are_named():
    assert inspect.signature(train.make_train_step).parameters["clip_norm"].default == 1.0
    params = {"w": jnp.array([3.0, 4.0])}
    loss_fn = lambda p, batch, key: jnp.sum(p["w"] * batch)
    optimizer = optax.sgd(1.0)
    state = train.init_state(params, optimizer, jax.random.PRNGKey(0))
    state, _ = train.make_train_step(loss_fn, optimizer, clip_norm=None)(state, jnp.array([6.0, 8.0]))
    np.testing.assert_array_equal(state.params["w"], [3.0 - 6.0, 4.0 - 8.0])
    for bad in (0, -1.0, float("inf"), float("nan"), "1", True):
        with pytest.raises(ValueError, match=f"clip_norm must be a positive finite number or None; got {bad!r}"):
            train.make_train_step(loss_fn, optimizer, clip_norm=bad)


@pytest.mark.parametrize("key, shown", [(0, "got int"), (jax.random.split(jax.random.PRNGKey(0)), "got an array of uint32[2, 2]")])
def test_init_state_names_a_key_that_is_not_one_prng_key(key, shown):
    with pytest.raises(TypeError, match="key must be .*" + re.escape(shown)):
        train.init_state({"w": jnp.ones(2)}, optax.sgd(1.0), key)


@pytest.mark.parametrize("steps", [-5, 2.5, None, True])
def test_fit_names_steps_that_are_not_a_count(steps):
    optimizer = optax.sgd(1.0)
    state = train.init_state({"w": jnp.ones(2)}, optimizer, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=re.escape(f"fit: steps must be a non-negative integer, the total number of updates; got {steps!r}")):
        train.fit(state, lambda s, b: (s, {}), lambda s: None, steps=steps, progress=False)


@pytest.mark.parametrize("name, hidden, batch_size, seq_len, steps, below", [
    ("copy", 32, 32, 7, 150, 0.4),
    ("adding", 16, 32, 10, 250, 0.5),
    ("charlm", 64, 16, 32, 100, 0.65),
])
def test_each_task_learns_well_below_chance(name, hidden, batch_size, seq_len, steps, below):
    run = tiny(name, hidden)
    task = run.task
    state, _ = losses_of(run, run.fresh_state(), lambda s: task.batch(0, s, batch_size, seq_len), steps)
    eval_loss = train.make_eval_step(run.loss_fn)(state.params, task.batch(0, 0, 256, seq_len, "eval"))
    assert eval_loss < below * task.chance, (float(eval_loss), task.chance)


def test_resumed_fit_gives_bit_identical_losses(tmp_path):
    run = tiny()
    batches = lambda s: run.task.batch(0, s, 8, 9)
    _, straight = losses_of(run, run.fresh_state(), batches, 12)

    checkpoints = train.Checkpoints(tmp_path)
    _, first = losses_of(run, run.fresh_state(), batches, 7, checkpoints=checkpoints, checkpoint_every=5)
    restored = checkpoints.restore(run.fresh_state())
    assert int(restored.step) == 7
    _, rest = losses_of(run, restored, batches, 12, checkpoints=checkpoints)
    assert first + rest == straight
    checkpoints.close()


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    state = tiny().fresh_state()
    checkpoints = train.Checkpoints(tmp_path)
    for step in (1, 2):
        checkpoints.save(state._replace(step=jnp.int32(step), params=jax.tree_util.tree_map(lambda a: a + step, state.params)))
    checkpoints.wait()
    for f in (tmp_path / "2").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\0" * 3)
    with pytest.warns(UserWarning, match="checkpoint 2 .* does not restore"):
        restored = checkpoints.restore(state)
    assert int(restored.step) == 1 and (tmp_path / "2.damaged").is_dir()
    np.testing.assert_array_equal(restored.params["readout"]["b"], state.params["readout"]["b"] + 1)
    assert checkpoints.latest_step() == 1
    checkpoints.close()


def test_nan_loss_stops_fit_and_keeps_the_last_good_checkpoint(tmp_path):
    def loss_fn(params, batch, key):
        return jnp.mean((params["w"] * batch["x"]) ** 2) * jnp.mean(batch["scale"])

    def batches(step):  # the update after step 6 sees a NaN
        return {"x": np.ones((4, 3), np.float32), "scale": np.full((4,), np.nan if step == 6 else 1, np.float32)}

    optimizer = optax.adam(1e-2)
    state = train.init_state({"w": jnp.ones(3)}, optimizer, jax.random.PRNGKey(0))
    checkpoints = train.Checkpoints(tmp_path)
    with pytest.raises(train.NonFiniteLossError, match="between steps 7 and 8.*last good checkpoint is step 6"):
        train.fit(state, train.make_train_step(loss_fn, optimizer), batches, steps=20,
                  checkpoints=checkpoints, checkpoint_every=2, log_every=100, progress=False)
    checkpoints.wait()
    assert checkpoints.latest_step() == 6
    restored = checkpoints.restore(state)
    assert int(restored.step) == 6 and bool(jnp.isfinite(restored.params["w"]).all())
    checkpoints.close()


def test_fit_rejects_a_batch_the_devices_do_not_divide():
    parallel = train.data_parallel()
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        parallel.shard(np.zeros(()))


def loss_curve(steps=15):
    """The per-step losses of a small charlm run on every local device."""
    run = tiny("charlm", hidden=32, cell=rs.gru)
    return losses_of(run, run.fresh_state(), lambda s: run.task.batch(0, s, 8, 16), steps)[1]


def test_four_devices_match_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(REPO))
    script = "import json, jax; from tests.test_train import loss_curve; print(json.dumps([jax.device_count(), loss_curve()]))"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    devices, four = json.loads(out.stdout.splitlines()[-1])
    one = loss_curve()
    assert devices == 4 and jax.device_count() == 1
    np.testing.assert_allclose([l for _, l in four], [l for _, l in one], rtol=1e-5)
    assert [s for s, _ in four] == [s for s, _ in one]


def pty_of_columns(columns: int):
    """A pseudo-terminal's `(master fd, slave file)` whose size says `columns` (0: `script` run
    from a non-terminal)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return master, os.fdopen(slave, "w")


def drain(master: int) -> str:
    import select
    text = b""
    while select.select([master], [], [], 0)[0]:
        text += os.read(master, 65536)
    return text.decode(errors="replace")


@pytest.mark.parametrize("columns", [0, 80])
def test_progress_shows_under_a_terminal_of_0_columns_as_plain_lines(monkeypatch, capsys, columns):
    run = tiny()
    master, terminal = pty_of_columns(columns)
    try:
        monkeypatch.setattr(sys, "stderr", terminal)  # where tqdm draws its bar
        train.fit(run.fresh_state(), run.train_step, lambda s: run.task.batch(0, s, 8, 9), steps=2,
                  log_every=1)
        terminal.flush()
        bar = drain(master)
    finally:
        terminal.close()
        os.close(master)
    printed = capsys.readouterr().out
    if columns == 0:  # tqdm's bar would be empty: a plain line per record on stdout
        assert re.fullmatch(r"step 1/2  loss \S+\nstep 2/2  loss \S+\n", printed), printed
    else:  # a bar on the terminal, nothing on stdout
        assert printed == "" and "2/2" in bar and "loss" in bar, bar
