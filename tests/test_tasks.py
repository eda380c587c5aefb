"""The shipped tasks: pure batches of the documented structure, and the charlm text."""

import numpy as np
import pytest

from rnnscan import tasks
from rnnscan.tasks import adding, charlm, copy


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_batches_are_pure_functions_of_seed_and_step(name):
    task = tasks.get(name)
    same = [task.batch(3, 7, 4, 12), task.batch(3, 7, 4, 12)]
    for a, b in zip(*same):
        np.testing.assert_array_equal(a, b)
    for other in (task.batch(3, 8, 4, 12), task.batch(4, 7, 4, 12), task.batch(3, 7, 4, 12, "eval")):
        assert not np.array_equal(other.inputs, same[0].inputs)
    batch = same[0]
    assert batch.targets.shape == batch.mask.shape == (4, 12) and batch.lengths.shape == (4,)
    assert batch.inputs.shape[:2] == (4, 12)


def test_unknown_task_and_split():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        tasks.get("nope")
    with pytest.raises(ValueError, match="split must be one of"):
        copy.batch(0, 0, 2, 9, split="test")
    with pytest.raises(ValueError, match="seq_len must be at least 3"):
        copy.batch(0, 0, 2, 2)


def test_copy_recalls_the_symbols_it_read_after_the_go_marker():
    batch = copy.batch(0, 0, 64, 15)
    for inputs, targets, mask, length in zip(*batch):
        n = (length - 1) // 2
        symbols = inputs[:n]
        assert ((1 <= symbols) & (symbols <= copy.NUM_SYMBOLS)).all()
        assert inputs[n] == copy.GO and (inputs[n + 1:] == copy.BLANK).all()
        np.testing.assert_array_equal(targets[n + 1:2 * n + 1], symbols)
        np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(n + 1, 2 * n + 1))
    assert len(set(batch.lengths.tolist())) > 1  # rows are padded to different lengths


def test_adding_targets_the_sum_of_the_two_marked_values():
    batch = adding.batch(0, 0, 32, 20)
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
    np.testing.assert_allclose(batch.targets[:, -1], (values * markers).sum(1), rtol=1e-6)
    assert (batch.mask[:, -1] == 1).all() and batch.mask.sum() == 32


def test_charlm_text_is_shipped_public_domain_austen():
    text = charlm.text()
    assert 1_000_000 < len(text) < 1_300_000
    assert text.startswith("PRIDE AND PREJUDICE") and "Persuasion" in text
    assert "Gutenberg" not in text  # headers stripped
    assert charlm.decode(charlm.encode("Mr. Darcy")) == "Mr. Darcy"
    with pytest.raises(ValueError, match="not in the charlm vocabulary"):
        charlm.encode("\u00e9")


def test_charlm_predicts_the_next_character_and_holds_out_its_tail():
    batch = charlm.batch(0, 0, 8, 40)
    np.testing.assert_array_equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    text = charlm.text()
    held_out = text[int(len(text) * (1 - charlm.EVAL_FRACTION)):]
    for row in charlm.batch(0, 0, 8, 40, "eval").inputs:
        assert charlm.decode(row) in held_out
