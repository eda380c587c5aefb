"""The layering of docs/ARCHITECTURE.md: imports run downwards only, no cycles,
no module over 350 lines, and `import rnnscan` loads none of the training extras."""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rnnscan"

# docs/ARCHITECTURE.md's picture, bottom first: a module may import modules of
# its own layer or of the layers below it.
LAYERS = [
    ("tree", "masks", "validation", "sequence_args", "tuning", "batch"),
    ("cell", "plan"),
    ("scan", "chunked", "associative", "newton", "newton_options", "kernels", "shards"),
    ("cells",),
    ("unroll", "tf1_names", "sequence_parallel"),
    ("dropout", "layers"),
    ("interop", "train", "tasks", "bench", "cli", "train_options", "arguments", "flax", "equinox", "sampling", "__main__"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def modules():
    """`{dotted name: path}` of every module in the package but the `__init__`s."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] != "__init__":
            found[".".join(parts)] = path
    return found


def rnnscan_imports(path):
    """The `rnnscan.*` modules a file imports, at any depth (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("rnnscan")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnscan"):
            # `from rnnscan import tree` imports the module rnnscan.tree.
            subs = {f"{node.module}.{a.name}" for a in node.names}
            names |= {s for s in subs if s in modules() or (PACKAGE.parent / s.replace(".", "/")).is_dir()} or {node.module}
    return names


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer():
    assert {top(m) for m in modules()} <= set(RANK), set(top(m) for m in modules()) - set(RANK)


def test_imports_run_downwards():
    wrong = []
    for name, path in modules().items():
        for imported in rnnscan_imports(path):
            if top(imported) and RANK[top(imported)] > RANK[top(name)]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_no_import_cycles():
    graph = {name: {i for i in rnnscan_imports(path) if i in modules()}
             for name, path in modules().items()}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", " -> ".join(trail + [node])
        state[node] = "open"
        for nxt in graph[node]:
            visit(nxt, trail + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


def test_no_module_over_350_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > 350}
    assert not long, long


def test_import_rnnscan_loads_no_training_extras():
    code = ("import sys, rnnscan; print(sorted(m for m in ('orbax', 'matplotlib', 'tqdm', "
            "'tensorstore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout


def test_rnnscan_info_and_bench_need_no_training_extras():
    # `pip install .` without `[train]` still gives `rnnscan info` and `rnnscan bench`.
    code = ("import contextlib, io, sys\n"
            "from rnnscan import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert cli.main(['info']) == 0\n"
            "    try:\n"
            "        cli.main(['bench', '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('orbax', 'matplotlib', 'tqdm', 'tensorstore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout
