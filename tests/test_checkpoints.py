"""Checkpoints under a user's mistakes and a disk's faults: nothing lost, nothing silent."""

import hashlib
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnscan as rs
from rnnscan import train
from rnnscan.train.checkpoint import CheckpointError


def fresh_state(hidden=8, optimizer=None):
    model = train.sequence_model(rs.lstm(3, hidden), 3, 2)
    key = jax.random.PRNGKey(0)
    return train.init_state(model.init(key), optimizer or optax.adam(1e-2), key)


def saved_states(checkpoints, like, steps) -> dict:
    """Saves a distinct state as each of `steps`; returns host copies of what was saved."""
    saved = {}
    for step in steps:
        state = like._replace(step=jnp.int32(step), params=jax.tree_util.tree_map(lambda a: a + step, like.params))
        saved[step] = jax.device_get(state)
        checkpoints.save(state)
    checkpoints.wait()
    return saved


def assert_bit_identical(restored, saved):
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(saved)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(saved)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def snapshot(directory: Path) -> dict:
    """Every path under `directory` and the sha256 of each file's bytes."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in directory.rglob("*")}


def flip_bytes(path: Path, at: float = 0.5, count: int = 8):
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    path.write_bytes(bytes(data))


def test_a_mismatched_model_is_named_and_nothing_on_disk_changes(tmp_path):
    like = fresh_state(hidden=8)
    checkpoints = train.Checkpoints(tmp_path)
    saved = saved_states(checkpoints, like, (1, 2))
    before = snapshot(tmp_path)

    wider = fresh_state(hidden=16)  # `--hidden` changed
    with pytest.raises(ValueError, match=r"like does not match checkpoint 2 .*"
                       r"\.params\['core'\]\['w_hh'\]: float32\[8, 32\] in the checkpoint, float32\[16, 64\] in like"):
        checkpoints.restore(wider)
    half = like._replace(params=jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), like.params))
    with pytest.raises(ValueError, match=r"\.params\['readout'\]\['b'\]: float32\[2\] in the checkpoint, bfloat16\[2\] in like"):
        checkpoints.restore(half)
    other_optimizer = fresh_state(optimizer=optax.sgd(1e-2, momentum=0.9))  # another opt_state
    with pytest.raises(ValueError, match=r"\.opt_state\[0\]\.mu\['core'\]\['b'\]: float32\[32\] in the checkpoint, missing in like.*"
                       r"\.opt_state\[0\]\.trace\['core'\]\['b'\]: missing in the checkpoint, float32\[32\] in like"
                       r".*; and 4 more\."):  # 16 differ: count, mu and nu of 5 leaves, trace of 5
        checkpoints.restore(other_optimizer)
    assert snapshot(tmp_path) == before

    assert_bit_identical(checkpoints.restore(like), saved[2])  # the right model still restores
    assert snapshot(tmp_path) == before
    checkpoints.close()


def test_flipped_bytes_set_the_checkpoint_aside_and_restore_the_one_before(tmp_path):
    # A leaf large enough to be stored in a compressed chunk that orbax reads without complaint when 8 bytes flip.
    like = train.init_state({"w": jax.random.normal(jax.random.PRNGKey(1), (256, 1024))},
                            optax.adam(1e-2), jax.random.PRNGKey(0))
    checkpoints = train.Checkpoints(tmp_path)
    saved = saved_states(checkpoints, like, (1, 2))
    before = snapshot(tmp_path / "1")
    data_file = max((p for p in (tmp_path / "2").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    flip_bytes(data_file)

    with pytest.warns(UserWarning, match="checkpoint 2 .* does not restore.*restored checkpoint 1 instead"):
        restored = checkpoints.restore(like)
    assert_bit_identical(restored, saved[1])
    assert (tmp_path / "2.damaged").is_dir() and not (tmp_path / "2").exists()
    assert snapshot(tmp_path / "1") == before
    checkpoints.close()


def test_values_that_do_not_hash_to_the_digest_are_damage(tmp_path):
    # A state item orbax reads as valid, but of other values than the ones saved as checkpoint 2.
    like = fresh_state()
    checkpoints = train.Checkpoints(tmp_path / "run")
    saved = saved_states(checkpoints, like, (1, 2))
    other = train.Checkpoints(tmp_path / "other")
    other.save(like._replace(step=jnp.int32(2)))
    other.close()
    shutil.rmtree(tmp_path / "run" / "2" / "state")
    shutil.copytree(tmp_path / "other" / "2" / "state", tmp_path / "run" / "2" / "state")

    with pytest.warns(UserWarning, match=r"checkpoint 2 .* the sha256 of \.params\['core'\]\['b'\], .* differs"):
        restored = checkpoints.restore(like)
    assert_bit_identical(restored, saved[1])
    checkpoints.close()


def test_params_that_are_not_finite_are_damage(tmp_path):
    like = fresh_state()
    checkpoints = train.Checkpoints(tmp_path)
    saved = saved_states(checkpoints, like, (1,))
    nan = like._replace(step=jnp.int32(2), params=jax.tree_util.tree_map(lambda a: a * jnp.nan, like.params))
    checkpoints.save(nan)
    with pytest.warns(UserWarning, match=r"checkpoint 2 .*params\['core'\]\['b'\] holds NaN or inf"):
        assert_bit_identical(checkpoints.restore(like), saved[1])
    checkpoints.close()


def test_one_missing_item_folder_sets_aside_only_that_checkpoint_and_saving_goes_on(tmp_path):
    like = fresh_state()
    checkpoints = train.Checkpoints(tmp_path)
    saved = saved_states(checkpoints, like, (1, 2, 3))
    shutil.rmtree(tmp_path / "3" / "state")
    healthy = {step: snapshot(tmp_path / step) for step in ("1", "2")}

    with pytest.warns(UserWarning) as warned:
        restored = checkpoints.restore(like)
    assert len(warned) == 1 and "checkpoint 3 " in str(warned[0].message)
    assert_bit_identical(restored, saved[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "3.damaged"]
    assert {step: snapshot(tmp_path / step) for step in ("1", "2")} == healthy

    # The run goes on: it saves step 3 again and then 4, and the newest restores.
    saved |= saved_states(checkpoints, like, (3, 4))
    assert checkpoints.latest_step() == 4
    checkpoints.close()
    again = train.Checkpoints(tmp_path)
    assert_bit_identical(again.restore(like), saved[4])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "3", "3.damaged", "4"]  # max_to_keep=3
    again.close()


def test_every_checkpoint_damaged_refuses_to_start_over_unless_asked(tmp_path):
    like = fresh_state()
    checkpoints = train.Checkpoints(tmp_path)
    saved_states(checkpoints, like, (1, 2))
    shutil.rmtree(tmp_path / "2" / "state")
    shutil.rmtree(tmp_path / "1" / "digest")
    before = snapshot(tmp_path)

    with pytest.raises(CheckpointError, match=r"no checkpoint in .* restores: checkpoint 2 \(.*\); checkpoint 1 "
                       r"\(its digest does not read.*Refusing to start the run over from step 0; nothing was changed"):
        checkpoints.restore(like)
    assert snapshot(tmp_path) == before

    with pytest.warns(UserWarning) as warned:
        assert checkpoints.restore(like, fresh_if_damaged=True) is like
    assert [str(w.message).split(" in ")[0] for w in warned] == ["checkpoint 2", "checkpoint 1", "no checkpoint"]
    assert "STARTING THE RUN OVER FROM STEP 0" in str(warned[-1].message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.damaged", "2.damaged"]
    with pytest.raises(CheckpointError, match=r"1\.damaged, set aside before; 2\.damaged, set aside before"):
        checkpoints.restore(like)  # only damaged ones left: still not a silent fresh start
    with pytest.warns(UserWarning, match="STARTING THE RUN OVER FROM STEP 0"):
        assert checkpoints.restore(like, fresh_if_damaged=True) is like

    saved = saved_states(checkpoints, like, (1,))
    assert_bit_identical(checkpoints.restore(like), saved[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "1.damaged", "2.damaged"]
    checkpoints.close()


def test_a_checkpoint_set_aside_twice_never_overwrites_the_first(tmp_path):
    like = fresh_state()
    checkpoints = train.Checkpoints(tmp_path)
    for _ in range(2):
        saved = saved_states(checkpoints, like, (1, 2))
        shutil.rmtree(tmp_path / "2" / "state")
        with pytest.warns(UserWarning, match="checkpoint 2 "):
            assert_bit_identical(checkpoints.restore(like), saved[1])
        shutil.rmtree(tmp_path / "1")
        checkpoints.close()
        checkpoints = train.Checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.damaged", "2.damaged.2"]
    checkpoints.close()


def nan_after_step_6(params, batch, key):
    return jnp.mean((params["w"] * batch["x"]) ** 2) * jnp.mean(batch["scale"])


def nan_batches(step):  # the update after step 6 sees a NaN
    return {"x": np.ones((4, 3), np.float32), "scale": np.full((4,), np.nan if step == 6 else 1, np.float32)}


def test_non_finite_loss_waits_for_the_pending_write_of_the_last_good_checkpoint(tmp_path):
    optimizer = optax.adam(1e-2)
    state = train.init_state({"w": jnp.ones(3)}, optimizer, jax.random.PRNGKey(0))
    checkpoints = train.Checkpoints(tmp_path)
    with pytest.raises(train.NonFiniteLossError, match="at step 7.*last good checkpoint is step 6"):
        train.fit(state, train.make_train_step(nan_after_step_6, optimizer), nan_batches, steps=20,
                  checkpoints=checkpoints, checkpoint_every=1, log_every=100, progress=False)
    # No wait here: what `fit` names must already be on disk, whole.
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["4", "5", "6"] and (tmp_path / "6" / "commit_success.txt").is_file(), names
    assert int(checkpoints.restore(state).step) == 6
    checkpoints.close()


def test_params_that_become_inf_stop_fit_before_they_are_saved(tmp_path):
    loss_fn = lambda params, batch, key: jnp.mean(params["w"] * batch)  # gradient 1: w falls by lr each step
    optimizer = optax.sgd(1e38)
    state = train.init_state({"w": jnp.ones(1)}, optimizer, jax.random.PRNGKey(0))
    checkpoints = train.Checkpoints(tmp_path)
    with pytest.raises(train.NonFiniteLossError, match="at step 4.*last good checkpoint is step 3"):
        train.fit(state, train.make_train_step(loss_fn, optimizer, clip_norm=None), lambda s: jnp.ones(1),
                  steps=10, checkpoints=checkpoints, checkpoint_every=1, log_every=100, progress=False)
    assert float(checkpoints.restore(state).params["w"][0]) == pytest.approx(-3e38, rel=1e-6)
    checkpoints.close()


def test_ctrl_c_in_fit_saves_the_step_under_way_and_raises_keyboard_interrupt(tmp_path):
    optimizer = optax.adam(1e-2)
    state = train.init_state({"w": jnp.ones(3)}, optimizer, jax.random.PRNGKey(0))

    def batches(step):
        if step == 4:  # while update 5 is under way: Ctrl-C, as fit's SIGINT handler receives it
            # Called here, not sent with signal.raise_signal: a real signal's handler runs at
            # whatever Python code comes next, a gc callback (jax's _xla_gc_callback) included,
            # where its KeyboardInterrupt (under pytest's default handler) would be unraisable.
            # The real signal is tested end to end in a subprocess (test_cli.py's Ctrl-C test).
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return nan_batches(0)

    checkpoints = train.Checkpoints(tmp_path)
    with pytest.raises(KeyboardInterrupt, match="interrupted after step 5"):
        train.fit(state, train.make_train_step(nan_after_step_6, optimizer), batches, steps=20,
                  checkpoints=checkpoints, checkpoint_every=100, progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5"]
    assert int(checkpoints.restore(state).step) == 5
    checkpoints.close()
