"""The metrics of a run: one JSON object per logged step in `metrics.jsonl`, and its plot."""

from __future__ import annotations

import json
import os
from typing import Optional


class MetricsLog:
    """Appends records to a JSON-lines file, consistent with the run's checkpoint.

    On opening, records past `resume_step` (logged after the checkpoint that the
    run resumes from, so about to be logged again) and a line cut short by a
    killed process are dropped: the file then reads as if the run had never
    stopped.
    """

    def __init__(self, path: os.PathLike, resume_step: int = 0):
        self.path = os.fspath(path)
        self.records = [r for r in _read(self.path) if r["step"] <= resume_step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _read(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the last line of a killed process
    return records


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
