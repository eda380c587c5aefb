"""The metrics of a run: one JSON object per logged step in `metrics.jsonl`, and its plot."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from typing import Optional

DAMAGED = ".damaged"
SHOWN = 12  # bad line numbers named in a warning


class MetricsLog:
    """Appends records to a JSON-lines file, consistent with the run's checkpoint.

    On opening, records past `resume_step` (logged after the checkpoint that the
    run resumes from, so about to be logged again) and a last line cut short by
    a killed process are dropped: the file then reads as if the run had never
    stopped. Nothing else is ever dropped unsaid: a line that does not parse
    before the last (a damaged file) is reported with a warning and the file as
    it was kept beside it (`set_aside`); every record that parses is kept.
    """

    def __init__(self, path: os.PathLike, resume_step: int = 0):
        self.path = os.fspath(path)
        records, bad = read_records(self.path)
        if bad:
            kept = set_aside(self.path, DAMAGED)
            warnings.warn(f"{self.path}: line {', '.join(map(str, bad[:SHOWN]))} of {len(records) + len(bad)} "
                          f"{'do' if len(bad) > 1 else 'does'} not parse as a record; copied the file as it was "
                          f"to {kept} and kept the {len(records)} records that parse", stacklevel=2)
        self.records = [r for r in records if r["step"] <= resume_step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_records(path: os.PathLike) -> tuple[list[dict], list[int]]:
    """`(records, bad)`: the records of a metrics file (none if there is no file) and the
    numbers of its lines, from 1, that are not a record; a last line cut short (no
    newline: the write of a killed process) is neither."""
    if not os.path.exists(path):
        return [], []
    with open(path) as f:
        lines = f.read().split("\n")[:-1]  # the last: "" after a final newline, or a line cut short
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record")
            records.append(record)
        except ValueError:  # json.JSONDecodeError too
            bad.append(number)
    return records, bad


def set_aside(path: os.PathLike, suffix: str) -> str:
    """Copies the file `path` to `path + suffix` (or `.2`, `.3`, ...: never over another); returns that name."""
    target, n = f"{os.fspath(path)}{suffix}", 1
    while os.path.exists(target):
        n += 1
        target = f"{os.fspath(path)}{suffix}.{n}"
    shutil.copyfile(path, target)
    return target


def plot_losses(records: list[dict], path: os.PathLike, *, chance: Optional[float] = None,
                title: str = "", unit: Optional[str] = None) -> None:
    """Saves the train loss (and `eval_loss` where logged) against step as a PNG (Agg);
    `unit` (e.g. `"nats/char"`) labels the loss axis."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label="train")
    evals = [r for r in records if "eval_loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", label="chance")
    ax.set_xlabel("step (updates)")
    ax.set_ylabel(f"loss ({unit})" if unit else "loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
