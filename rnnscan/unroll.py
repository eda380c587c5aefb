"""`unroll` and `truncated_unroll`: a cell run over the time axis (`dynamic_rnn`,
under TF1's names, is in `rnnscan.tf1_names`).

Semantics follow TF1's `dynamic_rnn` and torch's packed sequences: past a row's
length the state is carried through unchanged and the output is zero; `reverse`
reads each row from its own last valid step back to its first.

Each call is validated and turned into a `Plan` (`make_plan`): which strategy
runs it, with which settings. `execute` runs a plan, jit-compiled once per plan
and shape. See docs/ARCHITECTURE.md for the path of a call.
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from rnnscan import associative, chunked, masks, newton, scan, tree, tuning
from rnnscan.batch import Names, over_batch
from rnnscan.cell import as_cell, initial_state_of, split_step
from rnnscan.newton_options import Newton, newton_options
from rnnscan.plan import Operands, Plan, Request
from rnnscan.validation import (
    check_bool, check_cell_params, check_positive_int, check_recurrent_kernel, check_remat, check_same_structure, check_step, check_unroll, is_chunk_size,
)
from rnnscan.sequence_args import check_lengths, check_step_mask, check_xs

METHODS = ("auto", "sequential", "scan", "kernel", "associative", "newton")


def check_method(method):
    """Raises unless `method` is one of `METHODS` or an `rs.Newton` (the check of
    `unroll` and `layers.layer` alike)."""
    if not (isinstance(method, Newton) or isinstance(method, str) and method in METHODS):
        raise ValueError(f"method must be one of {METHODS} or an rnnscan.Newton; got {method!r}")
    return method


def unroll(cell, params, xs, *, initial_state=None, lengths=None, resets=None, reset_state=None,
           mask=None, reverse: bool = False, time_major: bool = False,
           unroll: Optional[Union[int, bool]] = None, remat=False,
           return_all_states: bool = False, method: str = "auto"):
    """Runs `cell` over the time axis of `xs`.

    Args:
      cell: a `Cell`, or a bare function `(params, h, x) -> (h, y)` (then
        `initial_state` is required).
      params: the cell's params pytree.
      xs: `(*batch, time, features)`, or `(time, *batch, features)` with
        `time_major`, a floating array with any number (at least one) of
        leading batch axes; or a pytree of arrays `(*batch, time, ...)` (its
        batch axes: `rnnscan.sequence_args.sequence_axes`). The shapes below are
        for `(batch, time)`; with several batch axes, `*batch` goes in place
        of `batch` everywhere, in the arguments and the results.
      initial_state: the state before the first step, leaves `(batch, size)`;
        default `cell.initial_state(params, (batch,))` (zeros).
      lengths: int `(batch,)` in `[0, time]`. For `t >= lengths[b]` the state of
        row `b` is carried through unchanged and its output is zero; the final
        state is the one after its last valid step.
      resets: bool `(batch, time)` (`(time, batch)` with `time_major`): where
        true, the state is set to `reset_state` before reading that step (an
        episode boundary: haiku's `ResetCore`).
      reset_state: the state a reset goes back to, leaves `(batch, size)`;
        default a fresh state (the cell's zeros), whatever `initial_state` is:
        that one is only the state before step 0 (from the previous rollout).
      mask: bool `(batch, time)` (`(time, batch)` with `time_major`), holes
        allowed: a false step is skipped, as a step past the length is (the
        state carried through unchanged, a reset on it included; output zero).
        With `lengths`, a step runs where both allow it. The final state is the
        state after the row's last step that ran.
      reverse: run from the last step to the first. Outputs stay aligned with
        their inputs (`ys[:, t]` comes from `xs[:, t]`), and with `lengths` each
        row starts at its own last valid step: padding never enters the state.
        With `mask`, the steps run backwards and false ones are skipped.
      time_major: layout of `xs`, `ys` (and `resets`, the returned states).
      unroll: steps per scan iteration (`True` unrolls fully); default per
        backend (`rnnscan.tuning`).
      remat: recompute on the backward pass to save memory: `True` or `"carry"`
        keeps only the carry per step; `"dots"` also keeps the matmul outputs; an
        int `k` checkpoints every `k` steps (one carry per chunk of `k` steps is
        kept, and a chunk is recomputed when its gradient is needed; `k` near
        `sqrt(time)` holds the least; `k` need not divide `time`).
      return_all_states: also return the state after every step.
      method: `"scan"`: `lax.scan`, one step after another. `"kernel"`: the
        cell's compiled kernel (`rs.lstm`'s and `rs.gru`'s float32 kernels on a
        CPU), an error where it cannot run. `"sequential"`: the kernel where it can run and was
        measured faster here, else the scan. `"associative"`: every step at once
        with `lax.associative_scan`, O(log time) deep, for cells linear in their
        state (`rs.mingru`, `rs.minlstm`, `rs.lru`); every option but `unroll`
        and `remat`. `"auto"` (default): the associative scan for linear cells on
        sequences long enough for it to be faster on the backend, else as
        `"sequential"`. `"newton"` or `rs.Newton(...)` (its options): any cell
        parallel over time, by Newton iterations each a linear recurrence on
        the associative scan (`rnnscan.newton`); with `rs.Newton(return_info=True)`
        a last element `rs.NewtonInfo` says how it converged. Every method gives
        the same results (Newton's to its tolerance).

    Returns:
      `(ys, final_state)`, or `(ys, final_state, states)` with
      `return_all_states`: `ys` `(batch, time, out)` and `states` (leaves
      `(batch, time, size)`) in the layout of `xs`, `final_state` `(batch, size)`.

    Raises:
      TypeError, ValueError: at trace time, for inputs of the wrong structure,
      shape or dtype, for concrete `lengths` outside `[0, time]`, and for a
      method that cannot run this call. Lengths only known under `jit` are
      checked when the call is wrapped in `jax.experimental.checkify.checkify`.
    """
    options = dict(reverse=reverse, time_major=time_major, unroll=unroll, remat=remat,
                   return_all_states=return_all_states, method=method)
    return _run(Names(), cell, params, xs, initial_state, lengths, resets, reset_state,
                options, mask)


def truncated_unroll(cell, params, xs, chunk_size: int, *, initial_state=None, lengths=None,
                     resets=None, reset_state=None, mask=None, reverse: bool = False,
                     time_major: bool = False, unroll: Optional[Union[int, bool]] = None,
                     remat: Union[bool, str] = False, return_all_states: bool = False):
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
    if is_chunk_size(remat):
        raise ValueError("remat must be False, True, 'carry' or 'dots' in truncated_unroll (its "
                         f"chunks are already checkpointed); got {remat!r}")
    options = dict(reverse=reverse, time_major=time_major, unroll=unroll, remat=remat,
                   return_all_states=return_all_states, method="scan", truncate=chunk_size)
    return _run(Names(), cell, params, xs, initial_state, lengths, resets, reset_state,
                options, mask)


def _run(names, cell, params, xs, initial_state, lengths, resets, reset_state, options,
         mask=None):
    """The call planned and executed on one batch axis (`rnnscan.batch`)."""
    cell = as_cell(cell)

    def check(batch_shape):  # the states against the cell's, at the batch shape as passed
        h0 = jax.eval_shape(lambda p, s: initial_state_of(cell, p, s, batch_shape), params,
                            initial_state)
        if reset_state is not None:
            check_same_structure("reset_state", reset_state, h0, "the cell's state")

    def run(xs, lengths, resets, mask, states):
        as_array = lambda a: None if a is None else jnp.asarray(a)  # checked by plan_request
        plan = plan_request(Request(cell, params, xs, states["initial_state"], lengths, resets,
                                    states["reset_state"], mask, names=names, **options))
        return execute(plan, params, xs, states["initial_state"], as_array(lengths),
                       as_array(resets), states["reset_state"], as_array(mask))

    timed = (True, False, True) if options.get("return_all_states") is True else (True, False)
    return over_batch(run, xs, options.get("time_major", False), lengths=lengths, resets=resets,
                      mask=mask, states=dict(initial_state=initial_state, reset_state=reset_state),
                      timed=timed, names=names, check=check)


def make_plan(cell, params, xs, **options) -> Plan:
    """`plan_request(Request(cell, params, xs, **options))`."""
    return plan_request(Request(cell, params, xs, **options))


def plan_request(request: Request) -> Plan:
    """The `Plan` that `unroll` (or `truncated_unroll` with `truncate=chunk_size`)
    runs for `request`, after checking every argument. Arrays may be abstract
    (`jax.ShapeDtypeStruct`s): only their shapes and dtypes are read."""
    (cell, params, xs, initial_state, lengths, resets, reset_state, mask, reverse, time_major,
     unroll, remat, return_all_states, method, truncate, backend, names) = request
    cell = as_cell(cell)
    reverse = check_bool("reverse", reverse)
    time_major = check_bool("time_major", time_major)
    return_all_states = check_bool("return_all_states", return_all_states)
    batch, time = check_xs(names.xs, xs, time_major)
    check_lengths(names.lengths, lengths, batch, time)
    check_step_mask(names.resets, resets, batch, time, time_major)
    check_step_mask(names.mask, mask, batch, time, time_major)
    check_unroll(unroll)
    check_remat(remat)
    check_method(method)
    check_cell_params(cell, params)

    h0 = jax.eval_shape(lambda p, s: initial_state_of(cell, p, s, batch), params, initial_state)
    if reset_state is not None:
        check_same_structure("reset_state", reset_state, h0, "the cell's state")
    split = split_step(cell)
    project = split.project_inputs if split else (lambda p, x: x)
    xp = jax.eval_shape(project, params, tree.one_step(xs, time_major))
    check_step(split.recurrent_step if split else cell.step, params, h0, xp)
    if split is not None and split.recurrent_kernel is not None:
        check_recurrent_kernel(split.recurrent_kernel, params, h0, xp)

    chunk = truncate or (remat if is_chunk_size(remat) else None)
    backend = tuning.for_backend(backend)
    settings = dict(cell=cell, reverse=reverse, time_major=time_major,
                    return_all_states=return_all_states,
                    unroll=backend.unroll if unroll is None else unroll)
    if isinstance(method, Newton) or method == "newton":
        options = newton_options(method)
        for name, value, unset in (("remat", remat, False), ("unroll", unroll, None)):
            if value is not unset:
                raise ValueError(f"{name}={value!r} sets the sequential scan; method='newton' "
                                 f"has no scan steps: leave {name} unset")
        return Plan("newton", newton=options, **settings)
    strategy, derivatives = _strategy(request, split, h0, time, chunk, backend)
    if strategy == "associative" or strategy == "kernel" and derivatives is None:
        return Plan(strategy, **settings)
    remat_policy = False if chunk is not None else remat
    groups = 1
    if split is not None and split.rowwise:
        # The step's recurrent product: (state size) x (projected input size).
        row_macs = tree.first_leaf(h0).shape[-1] * tree.first_leaf(xp).shape[-1]
        groups = tuning.batch_groups(batch, row_macs, backend)
    if chunk is not None:
        return Plan("chunked", remat=remat_policy, chunk=chunk, truncate=bool(truncate),
                    groups=groups, **settings)
    return Plan(strategy, remat=remat_policy, segments=max(1, min(backend.time_segments, time)),
                groups=groups, derivatives=derivatives, **settings)


def _strategy(request: Request, split, h0, time: int, chunk, backend) -> tuple[str, Optional[str]]:
    """The strategy `request.method` names for this call, `"kernel"`,
    `"associative"` or `"scan"` (the planner turns that into the plain or the
    chunked scan), and the one whose derivatives replace its own
    (`Plan.derivatives`), or None. `chunk`: `remat=k`'s or `truncate`'s steps per
    chunk, or None."""
    method, remat = request.method, request.remat
    linear = split.linear if split else None
    kernel = split.kernel if split else None
    if method == "associative":
        if linear is None:
            raise ValueError(
                "method='associative' needs a cell that is linear in its state, one whose step "
                "has linear set (rs.mingru, rs.minlstm, rs.lru, or rnnscan.cells.linear_recurrent"
                ".linear_cell); this cell has none: use method='sequential' or 'auto'")
        if remat is not False or chunk is not None:
            raise ValueError(f"remat={remat!r} checkpoints the sequential scan; method="
                             "'associative' has no steps to checkpoint: pass remat=False, or "
                             "method='sequential'")
        if request.unroll is not None:
            raise ValueError(f"unroll={request.unroll!r} sets the sequential scan's steps per "
                             "iteration; method='associative' has none: leave unroll unset")
        return "associative", None
    if method == "scan":
        return "scan", None
    why_not = "the cell has no compiled kernel" if kernel is None else (
        "remat checkpoints the scan" if remat is not False or chunk is not None else
        "a mask with holes needs the scan (the kernel reads lengths only)"
        if request.mask is not None else
        kernel.unsupported(request.params, h0, tree.abstract(request.xs), lengths=request.lengths,
                           resets=request.resets))
    if method == "kernel":
        if why_not is not None:
            raise ValueError(f"method='kernel' cannot run this call: {why_not}; use "
                             "method='sequential' or 'auto'")
        return "kernel", None
    if (method == "auto" and linear is not None and remat is False and chunk is None
            and backend.associative_min_time is not None and time >= backend.associative_min_time):
        return "associative", None
    if why_not is not None:
        return "scan", None
    # Values and derivatives each where measured faster (say, on AVX2 the scan
    # for a forward pass, the kernel for training).
    values, derivatives = ("kernel" if kernel.faster(request.params, h0, tree.abstract(request.xs),
                                                     time_major=request.time_major,
                                                     derivatives=d)
                           else "scan" for d in (False, True))
    return values, None if derivatives == values else derivatives


@functools.partial(jax.jit, static_argnums=0)
def execute(plan: Plan, params, xs, initial_state=None, lengths=None, resets=None,
            reset_state=None, mask=None):
    """Runs `plan` (from `make_plan`, for the same arguments): what `unroll` returns."""
    cell, batch = plan.cell, check_xs("xs", xs, plan.time_major)[0]
    h0 = initial_state_of(cell, params, initial_state, batch)
    if resets is not None and reset_state is None:
        reset_state = (jax.tree_util.tree_map(jnp.zeros_like, h0) if cell.initial_state is None
                       else cell.initial_state(params, (batch,)))
    operands = (params, xs, h0, lengths, resets, reset_state, mask)
    if plan.derivatives is None:
        return _RUN[plan.strategy](plan, *operands)
    # The values from one strategy, every derivative from the other's.
    values = jax.custom_jvp(functools.partial(_RUN[plan.strategy], plan))
    derivatives = functools.partial(_RUN[plan.derivatives], plan)
    values.defjvp(lambda primals, tangents: jax.jvp(derivatives, primals, tangents))
    return values(*operands)


def _kernel(plan: Plan, params, xs, h0, lengths, resets, reset_state, mask):
    """The cell's `SequenceKernel` (the plan checked it), in the caller's layout:
    the kernels read and write batch-major arrays too."""
    h_final, ys, states = split_step(plan.cell).kernel.run(
        params, h0, xs, lengths=lengths, resets=resets, reset_state=reset_state,
        reverse=plan.reverse, time_major=plan.time_major, all_states=plan.return_all_states)
    return (ys, h_final, states) if plan.return_all_states else (ys, h_final)


def _time_major(run):
    """A strategy `run(plan, params, Operands)` on time-major operands, called as
    `_kernel` is: with the resolved initial and reset states, in the caller's layout."""

    def in_layout(plan: Plan, params, xs, h0, lengths, resets, reset_state, mask):
        time = check_xs("xs", xs, plan.time_major)[1]
        if lengths is not None:
            checkify.debug_check(
                jnp.all((lengths >= 0) & (lengths <= time)), "lengths must lie in [0, time]")
        valid = masks.step_validity(
            lengths, None if mask is None else tree.time_to_front(mask, plan.time_major), time)
        ops = Operands(tree.time_to_front(xs, plan.time_major), h0, valid,
                       None if resets is None else tree.time_to_front(resets, plan.time_major),
                       None if resets is None else reset_state)
        h_final, out, *info = run(plan, params, ops)  # info: Newton's, if asked
        if plan.return_all_states:
            ys, states = out
            return (tree.time_to_front(ys, plan.time_major), h_final,
                    tree.time_to_front(states, plan.time_major), *info)
        return (tree.time_to_front(out, plan.time_major), h_final, *info)

    return in_layout


# The strategies (`plan.STRATEGIES`), each called the same way.
_RUN = {"scan": _time_major(scan.run), "chunked": _time_major(chunked.run),
        "associative": _time_major(associative.run), "newton": _time_major(newton.run),
        "kernel": _kernel}
