"""The results document: JSON on disk, a markdown table of ratios, and a plot.

A results document is a dict: `machine`, `versions`, `settings`, `results` (one
row per config, peer and mode) and `skipped` (rows that did not run, with why).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from rnnscan.bench.peers import MODES, PEERS

_MODE_TITLES = {"forward": "forward", "train": "forward+backward"}


def write(doc: dict, out_dir: str, name: str, plot_too: bool = True) -> list[str]:
    """Writes `<name>.json`, `<name>.md` (and `<name>.png`) under `out_dir`; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(doc))
    paths = [base + ".json", base + ".md"]
    if plot_too and plot(doc, base + ".png"):
        paths.append(base + ".png")
    return paths


def merge(docs: list[dict], name: str) -> dict:
    """One document from several runs on one machine (e.g. one per group of configs):
    the first run's header and every run's rows. Where two runs measured the same
    config, peer and mode, the row with more timed calls is kept, and a peak
    memory measured by the other is carried over."""
    rows = {}
    for doc in docs:
        for row in doc["results"]:
            key = (row["config"], row["peer"], row["mode"])
            kept, other = row, rows.get(key)
            if other is not None and other["n"] >= row["n"]:
                kept, other = other, row
            if other is not None and "peak_bytes" not in kept and "peak_bytes" in other:
                kept = dict(kept, peak_bytes=other["peak_bytes"], how=other.get("how"))
            rows[key] = kept
    skipped = [s for doc in docs for s in doc["skipped"]]
    return dict(docs[0], name=name, results=list(rows.values()), skipped=skipped)


def _row(doc: dict, config: str, peer: str, mode: str) -> Optional[dict]:
    for row in doc["results"]:
        if (row["config"], row["peer"], row["mode"]) == (config, peer, mode):
            return row
    return None


def _configs(doc: dict) -> list[str]:
    return list(dict.fromkeys(row["config"] for row in doc["results"]))


def _peers(doc: dict) -> list[str]:
    present = {row["peer"] for row in doc["results"]}
    return [p for p in PEERS if p in present and p != "rnnscan"]


def ratio(doc: dict, config: str, peer: str, mode: str) -> Optional[float]:
    """Peer time / rnnscan time (above 1: rnnscan is faster), or None."""
    mine, theirs = _row(doc, config, "rnnscan", mode), _row(doc, config, peer, mode)
    if mine is None or theirs is None:
        return None
    return theirs["median_ms"] / mine["median_ms"]


def markdown(doc: dict) -> str:
    """The ratio tables (one per mode), compile times, memory, and what was skipped."""
    m, s = doc["machine"], doc["settings"]
    lines = [
        f"# rnnscan benchmark: {doc.get('name', '')}",
        "",
        f"Machine: {m.get('device')}; {m.get('cpu')}, {m.get('cores')} cores; load average "
        f"{m.get('load_average_1m')} at the start, {m.get('load_average_1m_at_end')} at the end. "
        + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v) + ".",
        "",
        f"Instruction sets: the CPU's level {m.get('isa')}; rnnscan's kernel variant "
        f"{m.get('kernel_variant')} ({m.get('kernel_why')}); environment "
        f"{m.get('isa_environment') or 'unset'}.",
        "",
        "Settings: " + "; ".join(f"{k}: {v}" for k, v in s.items()) + ".",
        "",
        "Each cell: median ms (ratio = peer time / rnnscan time; above 1 rnnscan is faster).",
    ]
    configs, peers = _configs(doc), _peers(doc)
    for mode in MODES:
        if not any(row["mode"] == mode for row in doc["results"]):
            continue
        lines += ["", f"## {_MODE_TITLES[mode]}", "",
                  "| config | shape | rnnscan ms | rnnscan tokens/s | " + " | ".join(peers) + " |",
                  "|---" * (4 + len(peers)) + "|"]
        for config in configs:
            mine = _row(doc, config, "rnnscan", mode)
            shape = next(r["shape"] for r in doc["results"] if r["config"] == config)
            cells = [config, shape, _ms(mine), f"{mine['tokens_per_s']:.3g}" if mine else "—"]
            for peer in peers:
                row, r = _row(doc, config, peer, mode), ratio(doc, config, peer, mode)
                cells.append("—" if row is None else _ms(row) + (f" ({r:.2f})" if r else ""))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## compile s (forward / forward+backward) and peak memory MiB (forward+backward)", "",
              "| config | " + " | ".join(["rnnscan"] + peers) + " |", "|---" * (2 + len(peers)) + "|"]
    for config in configs:
        cells = [config]
        for peer in ["rnnscan"] + peers:
            fwd, train = _row(doc, config, peer, "forward"), _row(doc, config, peer, "train")
            compile_s = "/".join(_num(r and r.get("compile_s"), ".1f") for r in (fwd, train))
            peak = train and train.get("peak_bytes")
            cells.append(f"{compile_s}; {_num(peak and peak / 2**20, '.0f')}")
        lines.append("| " + " | ".join(cells) + " |")
    if doc["skipped"]:
        lines += ["", "## skipped", ""]
        reasons = {}
        for sk in doc["skipped"]:
            reasons.setdefault((sk["peer"], sk["reason"]), []).append(sk["config"])
        for (peer, reason), where in reasons.items():
            lines.append(f"- {peer}: {reason} ({', '.join(dict.fromkeys(where))})")
    if m.get("cpu_flags"):
        lines += ["", "CPU flags: " + " ".join(m["cpu_flags"])]
    return "\n".join(lines) + "\n"


def _ms(row: Optional[dict]) -> str:
    return "—" if row is None else f"{row['median_ms']:.3g}"


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def plot(doc: dict, path: str) -> bool:
    """Bar chart of the ratios per config, one panel per mode; False without matplotlib
    or without any ratio to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    configs, peers = _configs(doc), _peers(doc)
    modes = [m for m in MODES if any(r["mode"] == m for r in doc["results"])]
    if not peers or not modes:
        return False
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    width = 0.8 / len(peers)
    for ax, mode in zip(axes[0], modes):
        for i, peer in enumerate(peers):
            values = [ratio(doc, c, peer, mode) or 0.0 for c in configs]
            ax.bar([k + i * width for k in range(len(configs))], values, width, label=peer)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(configs))], configs, rotation=30)
        ax.set_yscale("log")
        ax.set_ylabel("peer time / rnnscan time")
        ax.set_title(f"{_MODE_TITLES[mode]} (above 1: rnnscan faster)")
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc.get('name', '')}: {doc['machine'].get('device')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
