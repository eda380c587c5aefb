"""`unroll` and `dynamic_rnn`: a cell run over the time axis with `jax.lax.scan`.

Semantics follow TF1's `dynamic_rnn` and torch's packed sequences: past a row's
length the state is carried through unchanged and the output is zero; `reverse`
reads each row from its own last valid step back to its first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from rnnscan import parallel
from rnnscan.cell import Cell, as_cell, check_positive_int, check_same_structure
from rnnscan.cells._common import is_symbolic_zero
from rnnscan.kernels import native

RematOption = Union[bool, str, int]
REMAT_POLICIES = {
    "carry": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class _ArgNames(NamedTuple):
    xs: str
    lengths: str
    resets: str


_UNROLL_NAMES = _ArgNames("xs", "lengths", "resets")
_TF_NAMES = _ArgNames("inputs", "sequence_length", "resets")


def default_unroll(backend: Optional[str] = None) -> int:
    """The scan unroll factor used when `unroll=None`, per backend.

    Unrolling lets XLA fuse consecutive steps and amortises the loop's per-step
    overhead; on GPUs that overhead is a kernel launch, so more unrolling pays.
    On a 2-core CPU, 4 made the forward pass of a (32, 128, 256) -> 256 LSTM
    1.24x faster than 1 and left the other shapes measured, and forward+backward,
    level (`benchmarks/results/unroll_cpu.md`; `benchmarks/scan_layout.py` sweeps it).
    """
    backend = backend or jax.default_backend()
    return 8 if backend in ("gpu", "cuda", "rocm", "tpu") else 4


def time_segments(backend: Optional[str] = None) -> int:
    """How many consecutive scans `unroll` splits the time axis into, per backend.

    Each segment's input projection is its own matmul, which XLA:CPU runs on
    another core while the previous segment's loop runs (and in reverse mode,
    each segment's input gradients while the next segment back runs). On GPUs
    the loops already keep the device busy and each scan adds compile time.
    `remat=k` and `truncated_unroll` keep their own chunks instead.
    """
    backend = backend or jax.default_backend()
    return 4 if backend == "cpu" else 1


def batch_groups(batch: int, row_macs: int, backend: Optional[str] = None) -> int:
    """How many groups of rows a scan step runs its batch as, per backend.

    `row_macs` is the multiply-adds per batch row of the step's recurrent product
    (`state_size * gate_size`, `4H^2` for an LSTM). `unroll` groups only the rows
    of a `Cell.rowwise` cell. Each group's step is its own chain of ops (its rows'
    product and gate math) and XLA:CPU runs the chains on separate cores at once;
    a product split over the cores by XLA instead synchronises them several times
    a step. That pays for mid-sized products only: on a 2-core CPU, LSTMs with
    4M-17M multiply-adds a step ran 8-23% faster forward and 1-12% forward+backward
    in 2 groups; at 1M-2M the cores' hand-offs cost more than they save, at 34M
    and above XLA's own split of one product does as well
    (`benchmarks/scan_layout.py`, `benchmarks/results/layout_cpu*.md`; the 24M
    cut-off lies between the shapes measured). Each group keeps at least 8 rows
    and 2M multiply-adds a step, and there are at most 2 groups, the number
    measured. On GPUs one wide product fills the device better.
    """
    backend = backend or jax.default_backend()
    macs = batch * row_macs
    if backend != "cpu" or macs > 24_000_000:
        return 1
    return max(1, min(2, native.cpu_cores(), batch // 8, macs // 2_000_000))


def tree_where(mask: jax.Array, on_true, on_false):
    """`where(mask, a, b)` leafwise, `mask` `(batch,)` broadcast over trailing axes."""

    return jax.tree_util.tree_map(lambda a, b: jnp.where(_expand(mask, a), a, b), on_true, on_false)


def _expand(mask, a):
    """Reshapes `mask` `(batch,)` to broadcast against `a` `(batch, ...)`."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - mask.ndim))


def time_to_front(tree, time_major: bool):
    """Moves axis 1 (time, in batch-major layout) to the front; identity if time-major."""
    return tree if time_major else jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), tree)


def unroll(
    cell,
    params,
    xs,
    *,
    initial_state=None,
    lengths=None,
    resets=None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: Optional[Union[int, bool]] = None,
    remat: RematOption = False,
    return_all_states: bool = False,
    method: str = "auto",
):
    """Runs `cell` over the time axis of `xs`.

    Args:
      cell: a `Cell`, or a bare function `(params, h, x) -> (h, y)` (then
        `initial_state` is required).
      params: the cell's params pytree.
      xs: `(batch, time, ...)`, or `(time, batch, ...)` with `time_major`; an
        array or a pytree of arrays that share batch and time.
      initial_state: the state before the first step, leaves `(batch, size)`;
        default `cell.initial_state(params, (batch,))` (zeros).
      lengths: int `(batch,)` in `[0, time]`. For `t >= lengths[b]` the state of
        row `b` is carried through unchanged and its output is zero; the final
        state is the one after its last valid step.
      resets: bool `(batch, time)` (`(time, batch)` with `time_major`): where
        true, the state is set back to `initial_state` before reading that step.
      reverse: run from the last step to the first. Outputs stay aligned with
        their inputs (`ys[:, t]` comes from `xs[:, t]`), and with `lengths` each
        row starts at its own last valid step: padding never enters the state.
      time_major: layout of `xs`, `ys` (and `resets`, the returned states).
      unroll: steps per scan iteration (`True` unrolls fully); default
        `default_unroll()` for the backend.
      remat: recompute on the backward pass to save memory: `True` or `"carry"`
        keeps only the carry per step; `"dots"` also keeps the matmul outputs; an
        int `k` checkpoints every `k` steps (a two-level scan: one carry per chunk
        of `k` steps is kept, and a chunk's steps and input projection are
        recomputed when its gradient is needed; `k` near `sqrt(time)` holds the
        least; `k` need not divide `time`).
      return_all_states: also return the state after every step.
      method: `"sequential"`: `lax.scan`, one step after another; or, for a
        cell with a `Cell.sequence_kernel` that can run the operands (on a CPU,
        `rs.lstm`'s float32 kernel) and without `lengths`, `resets` or `remat`,
        that kernel, which ignores `unroll`.
        `"associative"`: for cells linear in their state (`cell.linear` set:
        `rs.mingru`, `rs.minlstm`, `rs.lru`), every step at once with
        `lax.associative_scan`, O(log time) deep; same results, all options
        above but `unroll` and `remat`. `"auto"` (default): associative for
        linear cells on sequences long enough for it to be faster on the backend
        (`rnnscan.parallel.AUTO_MIN_TIME`) and without `remat`, else sequential.

    Returns:
      `(ys, final_state)`, or `(ys, final_state, states)` with
      `return_all_states`; `ys` and `states` are stacked along the time axis in
      the layout of `xs`.

    Raises:
      TypeError, ValueError: at trace time, for inputs of the wrong structure,
      shape or dtype, and for concrete `lengths` outside `[0, time]`. Lengths
      only known under `jit` are checked when the call is wrapped in
      `jax.experimental.checkify.checkify`.
    """
    return _run(
        cell, params, xs, initial_state, lengths, resets, _UNROLL_NAMES,
        reverse=reverse, time_major=time_major, unroll=unroll, remat=remat,
        return_all_states=return_all_states, method=method,
    )


def truncated_unroll(
    cell,
    params,
    xs,
    chunk_size: int,
    *,
    initial_state=None,
    lengths=None,
    resets=None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: Optional[Union[int, bool]] = None,
    remat: Union[bool, str] = False,
    return_all_states: bool = False,
):
    """`unroll` with truncated backprop through time (TBPTT) in chunks of `chunk_size` steps.

    The forward values are those of `unroll`. The state is carried from chunk to
    chunk with its gradient stopped, so a step's gradient reaches back at most to
    the start of its chunk (`initial_state` still gets the first chunk's
    gradient). Each chunk is checkpointed: reverse mode holds one chunk's
    activations and one carry per chunk. For a sequence too long to hold at all,
    call `unroll` on successive slices instead, passing each call
    `initial_state=jax.lax.stop_gradient(state)` from the previous one.

    Args:
      chunk_size: steps per chunk, a positive int (need not divide `time`).
      remat: the per-step policy inside a chunk (`False`, `True`, `"carry"`,
        `"dots"`).
      The other arguments and the return value are those of `unroll`.
    """
    chunk_size = check_positive_int("chunk_size", chunk_size)
    if _is_chunk_size(remat):
        raise ValueError(
            "remat must be False, True, 'carry' or 'dots' in truncated_unroll (its chunks "
            f"are already checkpointed); got {remat!r}"
        )
    return _run(
        cell, params, xs, initial_state, lengths, resets, _UNROLL_NAMES,
        reverse=reverse, time_major=time_major, unroll=unroll, remat=remat,
        return_all_states=return_all_states, truncate=chunk_size,
    )


def dynamic_rnn(cell, params, inputs, sequence_length=None, initial_state=None, time_major=False):
    """TF1's `tf.nn.dynamic_rnn` under its own names: `unroll` with `lengths=sequence_length`.

    Returns `(outputs, state)`: outputs `(batch, time, output_size)` (time-major
    with `time_major`), zero past each row's `sequence_length`, and the state after
    each row's last valid step.
    """
    return _run(
        cell, params, inputs, initial_state, sequence_length, None, _TF_NAMES,
        reverse=False, time_major=time_major, unroll=None, remat=False, return_all_states=False,
    )


def _run(cell, params, xs, initial_state, lengths, resets, names: _ArgNames,
         method="sequential", **options):
    cell = as_cell(cell)
    batch, time = _check_xs(names.xs, xs, options["time_major"])
    lengths = _check_lengths(names.lengths, lengths, batch, time)
    resets = _check_resets(names.resets, resets, batch, time, options["time_major"])
    _check_options(options["unroll"], options["remat"])
    method = parallel.resolve_method(method, cell, time, remat=options["remat"])
    return _scan(params, xs, initial_state, lengths, resets, cell=cell, method=method,
                 segments=max(1, min(time_segments(), time)), **options)


@functools.partial(
    jax.jit,
    static_argnames=("cell", "reverse", "time_major", "unroll", "remat", "return_all_states",
                     "truncate", "method", "segments", "groups"),
)
def _scan(params, xs, initial_state, lengths, resets, *, cell: Cell, reverse, time_major,
          unroll, remat, return_all_states, truncate=None, method="sequential", segments=1,
          groups=None):
    caller_xs, xs = xs, time_to_front(xs, time_major)
    time, batch = jax.tree_util.tree_leaves(xs)[0].shape[:2]
    h0 = _initial_state(cell, params, initial_state, batch)

    valid = None
    if lengths is not None:
        checkify.debug_check(
            jnp.all((lengths >= 0) & (lengths <= time)), "lengths must lie in [0, time]"
        )
        valid = jnp.arange(time)[:, None] < lengths[None, :]
    if resets is not None:
        resets = time_to_front(resets, time_major)
    if method == "associative":
        h_final, out = parallel.associative_scan(
            cell.linear, params, xs, h0, valid, resets,
            reverse=reverse, return_all_states=return_all_states,
        )
        return _outputs(h_final, out, time_major, return_all_states)

    if cell.has_fast_path:
        project, step = cell.project_inputs, cell.recurrent_step
    else:
        project, step = (lambda p, x: x), cell.step
    chunk = truncate or (remat if _is_chunk_size(remat) else None)
    xp_shape = jax.eval_shape(project, params, xs)
    _check_step(step, params, h0, xp_shape)
    if cell.recurrent_kernel is not None:
        _check_recurrent_kernel(cell, params, h0, xp_shape)

    if (cell.sequence_kernel is not None and chunk is None and remat is False
            and lengths is None and resets is None and groups is None):
        # In the caller's layout: the kernel reads and writes batch-major arrays too.
        fused = cell.sequence_kernel(params, h0, caller_xs, reverse=reverse,
                                     time_major=time_major, all_states=return_all_states)
        if fused is not None:
            h_final, ys, states = fused
            return (ys, h_final, states) if return_all_states else (ys, h_final)

    if groups is None:
        groups = 1
        if cell.rowwise:
            # The step's product: (state size) x (projected input size).
            state_size = jax.tree_util.tree_leaves(h0)[0].shape[-1]
            row_macs = state_size * jax.tree_util.tree_leaves(xp_shape)[0].shape[-1]
            groups = batch_groups(batch, row_macs)
    # Row ranges of the batch's groups, each stepped as its own chain.
    cuts = [(batch * g // groups, batch * (g + 1) // groups) for g in range(groups)]

    def rows(tree, cut):
        """`tree`'s leaves `(batch, ...)` cut to the rows `cut`."""
        return jax.tree_util.tree_map(lambda a: jax.lax.slice_in_dim(a, *cut), tree)

    def scan_steps(params, h0, h_start, inputs, record_inputs=False):
        """`lax.scan` of `step` over `inputs = (xs, valid, resets)` from the carry
        `h_start` (a reset goes back to `h0`), each group of rows its own chain
        within a scan step. With `record_inputs`, the outputs also hold the first
        state leaf each step was given."""

        def body(h0, h_prev, inputs):
            x, valid_t, reset_t = inputs
            h = h_prev if reset_t is None else tree_where(reset_t, h0, h_prev)
            h_next, y = step(params, h, x)
            if valid_t is not None:
                # A padded step leaves the state alone, a reset on it included.
                h_next = tree_where(valid_t, h_next, h_prev)
                y = jax.tree_util.tree_map(lambda a: jnp.where(_expand(valid_t, a), a, 0), y)
            out = (y, h_next) if return_all_states else y
            return h_next, ((out, jax.tree_util.tree_leaves(h)[0]) if record_inputs else out)

        if remat is True or remat in REMAT_POLICIES:  # a chunk size checkpoints chunks instead
            policy = REMAT_POLICIES["carry" if remat is True else remat]
            body = jax.checkpoint(body, policy=policy, prevent_cse=False)
        unroll_steps = default_unroll() if unroll is None else unroll
        if groups == 1:
            return jax.lax.scan(functools.partial(body, h0), h_start, inputs, reverse=reverse,
                                unroll=unroll_steps)
        h0_groups = [rows(h0, cut) for cut in cuts]

        def grouped_body(h_groups, inputs):
            return tuple(zip(*(body(h0_g, h_g, rows(inputs, cut))
                               for h0_g, h_g, cut in zip(h0_groups, h_groups, cuts))))

        h_groups, outs = jax.lax.scan(
            grouped_body, tuple(rows(h_start, cut) for cut in cuts), inputs, reverse=reverse,
            unroll=unroll_steps,
        )
        return _concatenate_trees(h_groups, axis=0), _concatenate_trees(outs, axis=1)

    if chunk is not None:
        h_final, out = _scan_chunks(functools.partial(scan_steps, params, h0), project, params, h0,
                                    xs, valid, resets, time, chunk=chunk,
                                    truncate=bool(truncate), reverse=reverse)
        return _outputs(h_final, out, time_major, return_all_states)

    # Per segment of the time axis, one (steps*batch, in) x (in, gates) matmul for
    # all its steps at once, off the sequential path.
    parts = []
    for i in range(segments):
        cut = lambda a: None if a is None else a[time * i // segments:time * (i + 1) // segments]
        parts.append((project(params, jax.tree_util.tree_map(cut, xs)), cut(valid), cut(resets)))

    def scan_segments(params, h0, parts, record_inputs=False):
        """The segments' scans one after another (last to first with `reverse`);
        the outputs of each, in time order."""
        h, outs = h0, [None] * len(parts)
        for i in reversed(range(len(parts))) if reverse else range(len(parts)):
            h, outs[i] = scan_steps(params, h0, h, parts[i], record_inputs)
        return h, outs

    if cell.recurrent_kernel is not None:
        h_final, outs = _scan_hoisting_kernel_gradient(
            scan_segments, cell.recurrent_kernel, params, h0, parts
        )
    else:
        h_final, outs = scan_segments(params, h0, parts)
    out = _concatenate_trees(outs, axis=0)
    return _outputs(h_final, out, time_major, return_all_states)


def _concatenate_trees(trees, axis: int):
    """Pytrees of one structure joined leaf by leaf along `axis`."""
    return jax.tree_util.tree_map(lambda *pieces: jnp.concatenate(pieces, axis), *trees)


def _outputs(h_final, out, time_major: bool, return_all_states: bool):
    """`unroll`'s return value from the scan's time-major `(carry, outputs)`."""
    if return_all_states:
        ys, states = out
        return time_to_front(ys, time_major), h_final, time_to_front(states, time_major)
    return time_to_front(out, time_major), h_final


def _scan_hoisting_kernel_gradient(scan_segments, key: str, params: Mapping, h0, parts):
    """`scan_segments(params, h0, parts)` for a cell whose `recurrent_step`
    adds `h @ params[key]` to its `xp` (`Cell.recurrent_kernel`), with the
    kernel's tangent taken out of the loops.

    The step's tangent `dxp_t + dh_t @ W + h_t @ dW` is regrouped as
    `(dxp_t + h_t @ dW) + dh_t @ W`: the first term for every step of a segment
    at once is one `(steps*batch, P) x (P, G)` product of the recorded step
    inputs `h_t` (`G`: the projected inputs' size, `4H` for an LSTM), so that
    reverse mode, transposing it, sums `W`'s gradient in a matmul after each
    loop rather than in a rank-`batch` update of the whole `W` per step inside
    it (on a CPU, about a fifth of the backward loop's time).
    """

    @jax.custom_jvp
    def run(params, h0, parts):
        return scan_segments(params, h0, parts)

    def run_jvp(primals, tangents):
        params, h0, parts = primals
        d_params, d_h0, d_parts = tangents
        kernel = params[key]
        masks = [(valid, resets) for _, valid, resets in parts]

        def run_with_fixed_kernel(rest, h0, xs):
            parts = [(x, *mask) for x, mask in zip(xs, masks)]
            return scan_segments({**rest, key: kernel}, h0, parts, record_inputs=True)

        rest = {k: v for k, v in params.items() if k != key}
        xs = [x for x, _, _ in parts]
        (h_final, outs), linear = jax.linearize(run_with_fixed_kernel, rest, h0, xs)
        d_xs = [_instantiate(d[0], x) for d, x in zip(d_parts, xs)]
        if not is_symbolic_zero(d_params[key]):
            d_kernel = d_params[key]
            for i, (_, h_in) in enumerate(outs):
                # 2-D: contracting (time, batch) as two axes is slower on XLA:CPU.
                h_in = h_in.reshape(-1, h_in.shape[-1]).astype(d_kernel.dtype)
                d_xs[i] = d_xs[i] + (h_in @ d_kernel).reshape(d_xs[i].shape).astype(d_xs[i].dtype)
        d_rest = jax.tree_util.tree_map(_instantiate, {k: d_params[k] for k in rest}, rest)
        d_h_final, d_outs = linear(d_rest, jax.tree_util.tree_map(_instantiate, d_h0, h0), d_xs)
        return (h_final, [out for out, _ in outs]), (d_h_final, [d_out for d_out, _ in d_outs])

    run.defjvp(run_jvp, symbolic_zeros=True)
    return run(params, h0, parts)


def _instantiate(tangent, primal):
    """A custom JVP rule's tangent as an array: zeros for a symbolic zero (float0
    zeros for an integer or bool primal, as JAX's tangents are)."""
    if not is_symbolic_zero(tangent):
        return tangent
    if not jnp.issubdtype(jnp.result_type(primal), jnp.inexact):
        return np.zeros(np.shape(primal), jax.dtypes.float0)
    return jnp.zeros_like(primal)


def _scan_chunks(scan_steps, project, params, h0, xs, valid, resets, time, *, chunk, truncate,
                 reverse):
    """The two-level scan: an outer scan over chunks of `chunk` steps, each chunk
    checkpointed, so reverse mode keeps one carry per chunk and recomputes a
    chunk's projection and steps when its gradient is needed."""
    n_chunks = -(-time // chunk)
    pad = n_chunks * chunk - time
    if pad:
        # Steps past the end behave like steps past a row's length: no-ops.
        batch = jax.tree_util.tree_leaves(xs)[0].shape[1]
        valid = jnp.ones((time, batch), bool) if valid is None else valid
        xs, valid, resets = jax.tree_util.tree_map(
            lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), (xs, valid, resets)
        )
    first = n_chunks - 1 if reverse else 0

    def chunk_body(h, inputs):
        index, (x, valid_c, resets_c) = inputs
        if truncate:
            # TBPTT: no gradient into the previous chunk; the first chunk's still
            # reaches initial_state.
            h = jax.tree_util.tree_map(
                lambda a: jnp.where(index == first, a, jax.lax.stop_gradient(a)), h
            )
        return scan_steps(h, (project(params, x), valid_c, resets_c))

    split = lambda a: a.reshape((n_chunks, chunk) + a.shape[1:])
    h_final, out = jax.lax.scan(
        jax.checkpoint(chunk_body, prevent_cse=False), h0,
        (jnp.arange(n_chunks), jax.tree_util.tree_map(split, (xs, valid, resets))),
        reverse=reverse,
    )
    return h_final, jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:time], out)


def _is_chunk_size(remat) -> bool:
    return isinstance(remat, (int, np.integer)) and not isinstance(remat, bool)


def _initial_state(cell: Cell, params, initial_state, batch: int):
    if cell.initial_state is None:
        if initial_state is None:
            raise ValueError(
                "initial_state is required when the cell is a bare step function "
                "(it has no initial_state of its own); pass initial_state=... with "
                "leaves of shape (batch, size)"
            )
        return initial_state
    if initial_state is None:
        return cell.initial_state(params, (batch,))
    expected = jax.eval_shape(lambda p: cell.initial_state(p, (batch,)), params)
    check_same_structure(
        "initial_state", initial_state, expected, f"cell.initial_state(params, ({batch},))"
    )
    return initial_state


def _check_step(step, params, h0, xs) -> None:
    """Traces one step abstractly: the state it returns must match the one it got."""
    x0 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
    out = jax.eval_shape(step, params, h0, x0)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            f"cell.step must return a pair (state, output); got {type(out).__name__}"
        )
    check_same_structure(
        "the state returned by cell.step", out[0], h0, "the state it was given"
    )


def _check_recurrent_kernel(cell: Cell, params, h0, xp_shape) -> None:
    """`cell.recurrent_kernel` must name a `(P, G)` matrix of a params dict that takes
    the state's first leaf `(..., P)` to the projected inputs `(..., G)`."""
    key = cell.recurrent_kernel
    if not (cell.has_fast_path and isinstance(params, Mapping) and key in params):
        raise ValueError(
            f"cell.recurrent_kernel={key!r} needs a cell with project_inputs and "
            f"recurrent_step and a params dict holding {key!r}; got params keys "
            f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
        )
    expected = (jax.tree_util.tree_leaves(h0)[0].shape[-1],
                jax.tree_util.tree_leaves(xp_shape)[0].shape[-1])
    got = np.shape(params[key])
    if got != expected:
        raise ValueError(
            f"cell.recurrent_kernel={key!r} must name a matrix of shape (state, projected "
            f"inputs) = {expected}; params[{key!r}] has shape {got}"
        )


def _check_xs(name: str, xs, time_major: bool) -> tuple[int, int]:
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got {xs!r}")
    layout = "(time, batch, ...)" if time_major else "(batch, time, ...)"
    dims = None
    for leaf in leaves:
        if not hasattr(leaf, "shape") and not isinstance(leaf, (list, tuple, float, int)):
            raise TypeError(f"{name} must be an array or a pytree of arrays; got {type(leaf).__name__}")
        shape = np.shape(leaf)
        if len(shape) < 2:
            raise ValueError(f"{name} must have shape {layout}; got shape {shape}")
        leaf_dims = (shape[1], shape[0]) if time_major else (shape[0], shape[1])
        if dims is not None and leaf_dims != dims:
            raise ValueError(
                f"every array in {name} must share (batch, time) = {dims}; got {leaf_dims}"
            )
        dims = leaf_dims
    return dims


def _check_lengths(name: str, lengths, batch: int, time: int):
    if lengths is None:
        return None
    shape = np.shape(lengths)
    if shape != (batch,):
        raise ValueError(f"{name} must have shape (batch,) = ({batch},); got shape {shape}")
    dtype = jnp.result_type(lengths)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype; got {dtype}")
    if not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)
        bad = (values < 0) | (values > time)
        if bad.any():
            raise ValueError(
                f"{name} must lie in [0, time] = [0, {time}]; got {values[bad].tolist()} "
                f"at rows {np.flatnonzero(bad).tolist()}"
            )
    return jnp.asarray(lengths)


def _check_resets(name: str, resets, batch: int, time: int, time_major: bool):
    if resets is None:
        return None
    expected = (time, batch) if time_major else (batch, time)
    shape = np.shape(resets)
    if shape != expected:
        layout = "(time, batch)" if time_major else "(batch, time)"
        raise ValueError(f"{name} must have shape {layout} = {expected}; got shape {shape}")
    dtype = jnp.result_type(resets)
    if dtype != jnp.bool_:
        raise TypeError(f"{name} must be a bool mask; got dtype {dtype} (use resets.astype(bool))")
    return jnp.asarray(resets)


def _check_options(unroll, remat) -> None:
    if unroll is not None and not (unroll is True or (isinstance(unroll, int) and unroll >= 1)):
        raise ValueError(f"unroll must be a positive int, True or None; got {unroll!r}")
    if _is_chunk_size(remat):
        check_positive_int("remat", remat)
    elif remat is not False and remat is not True and remat not in REMAT_POLICIES:
        raise ValueError(
            f"remat must be False, True, one of {sorted(REMAT_POLICIES)} or a positive int "
            f"(checkpoint every k steps); got {remat!r}"
        )
