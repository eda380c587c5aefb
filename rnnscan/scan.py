"""The sequential scan: `lax.scan` of the step, one after another.

The default strategy for every cell that is not linear and has no kernel that
wins here. A cell with a `SplitStep` has its input projection hoisted out of the
loop: one `(steps*batch, in) x (in, gates)` matmul per time segment. The plan's
layout (`rnnscan.tuning`) splits the time axis into consecutive segments and a
step's batch into groups of rows, which XLA:CPU runs on separate cores; neither
changes the results. A `SplitStep.recurrent_kernel` has its gradient taken out
of the loop (`_hoisting_kernel_gradient`).
"""

from __future__ import annotations

import functools

import jax

from rnnscan import tree
from rnnscan.cell import split_step
from rnnscan.plan import Operands, Plan
from rnnscan.validation import REMAT_POLICIES


def halves(cell):
    """`(project_inputs, recurrent_step)` of `cell`: its `SplitStep`'s, or the
    identity and the whole step."""
    split = split_step(cell)
    return (split.project_inputs, split.recurrent_step) if split else (lambda p, x: x, cell.step)


def scan_steps(plan: Plan, advance, params, ops: Operands, record_inputs: bool = False):
    """`lax.scan` of `advance(params, h, xp)` over `ops` (time-major; `ops.xs`
    already projected) from `ops.h0`, each of the plan's groups of rows its own
    chain within a scan step.

    Returns `(final_state, outputs)` as `lax.scan` stacks them: `ys`, or `(ys,
    states)` with `return_all_states`; with `record_inputs`, each paired with
    the first state leaf each step read.
    """

    def body(h_reset, h_prev, inputs):
        x, valid_t, reset_t = inputs
        h = h_prev if reset_t is None else tree.where(reset_t, h_reset, h_prev)
        h_next, y = advance(params, h, x)
        if valid_t is not None:
            # A padded step leaves the state alone, a reset on it included.
            h_next = tree.where(valid_t, h_next, h_prev)
            y = tree.zero_where_not(valid_t, y)
        out = (y, h_next) if plan.return_all_states else y
        return h_next, ((out, tree.first_leaf(h)) if record_inputs else out)

    if plan.remat is True or plan.remat in REMAT_POLICIES:
        policy = REMAT_POLICIES["carry" if plan.remat is True else plan.remat]
        body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    inputs = (ops.xs, ops.valid, ops.resets)
    scan = functools.partial(jax.lax.scan, reverse=plan.reverse, unroll=plan.unroll)
    if plan.groups == 1:
        return scan(functools.partial(body, ops.reset_state), ops.h0, inputs)

    batch = tree.first_leaf(ops.h0).shape[0]
    cuts = [(batch * g // plan.groups, batch * (g + 1) // plan.groups) for g in range(plan.groups)]
    reset_groups = [tree.rows(ops.reset_state, *cut) for cut in cuts]

    def grouped_body(h_groups, inputs):
        return tuple(zip(*(body(h_reset, h, tree.rows(inputs, *cut))
                           for h_reset, h, cut in zip(reset_groups, h_groups, cuts))))

    h_groups, outs = scan(grouped_body, tuple(tree.rows(ops.h0, *cut) for cut in cuts), inputs)
    return tree.concatenate(h_groups, axis=0), tree.concatenate(outs, axis=1)


def run(plan: Plan, params, ops: Operands):
    """The `"scan"` strategy: `(final_state, outputs)` as `scan_steps` returns them."""
    project, advance = halves(plan.cell)
    time = tree.first_leaf(ops.xs).shape[0]
    # Per segment of the time axis, one (steps*batch, in) x (in, gates) matmul for
    # all its steps at once, off the sequential path.
    segments = []
    for i in range(plan.segments):
        cut = lambda a: None if a is None else a[time * i // plan.segments:
                                                 time * (i + 1) // plan.segments]
        segments.append(Operands(project(params, jax.tree_util.tree_map(cut, ops.xs)), None,
                                 cut(ops.valid), cut(ops.resets)))

    def scan_segments(params, h0, reset_state, segments, record_inputs=False):
        """The segments' scans one after another (last to first with `reverse`),
        and the outputs of each, in time order."""
        h, outs = h0, [None] * len(segments)
        for i in reversed(range(len(segments))) if plan.reverse else range(len(segments)):
            h, outs[i] = scan_steps(plan, advance, params,
                                    segments[i]._replace(h0=h, reset_state=reset_state),
                                    record_inputs)
        return h, outs

    split = split_step(plan.cell)
    if split is not None and split.recurrent_kernel is not None:
        h_final, outs = _hoisting_kernel_gradient(scan_segments, split.recurrent_kernel, params,
                                                  ops.h0, ops.reset_state, segments)
    else:
        h_final, outs = scan_segments(params, ops.h0, ops.reset_state, segments)
    return h_final, tree.concatenate(outs, axis=0)


def _hoisting_kernel_gradient(scan_segments, key: str, params, h0, reset_state, segments):
    """`scan_segments(params, h0, reset_state, segments)` for a step whose
    `recurrent_step` adds `h @ params[key]` to its `xp`
    (`SplitStep.recurrent_kernel`), with the kernel's tangent taken out of the loops.

    The step's tangent `dxp_t + dh_t @ W + h_t @ dW` is regrouped as
    `(dxp_t + h_t @ dW) + dh_t @ W`: the first term for every step of a segment
    at once is one `(steps*batch, P) x (P, G)` product of the recorded step
    inputs `h_t`, so that reverse mode, transposing it, sums `W`'s gradient in a
    matmul after each loop rather than in a rank-`batch` update of the whole `W`
    per step inside it.
    """

    @jax.custom_jvp
    def run(params, h0, reset_state, segments):
        return scan_segments(params, h0, reset_state, segments)

    def run_jvp(primals, tangents):
        params, h0, reset_state, segments = primals
        d_params, d_h0, d_reset_state, d_segments = tangents
        kernel = params[key]
        masks = [(s.valid, s.resets) for s in segments]

        def run_with_fixed_kernel(rest, h0, reset_state, xs):
            parts = [Operands(x, None, *mask) for x, mask in zip(xs, masks)]
            return scan_segments({**rest, key: kernel}, h0, reset_state, parts, record_inputs=True)

        rest = {k: v for k, v in params.items() if k != key}
        xs = [s.xs for s in segments]
        (h_final, outs), linear = jax.linearize(run_with_fixed_kernel, rest, h0, reset_state, xs)
        d_xs = [tree.instantiate(d.xs, x) for d, x in zip(d_segments, xs)]
        if not tree.is_symbolic_zero(d_params[key]):
            d_kernel = d_params[key]
            for i, (_, h_in) in enumerate(outs):
                # 2-D: contracting (time, batch) as two axes is slower on XLA:CPU.
                h_in = h_in.reshape(-1, h_in.shape[-1]).astype(d_kernel.dtype)
                d_xs[i] = d_xs[i] + (h_in @ d_kernel).reshape(d_xs[i].shape).astype(d_xs[i].dtype)
        instantiate = lambda d, p: jax.tree_util.tree_map(tree.instantiate, d, p)
        d_rest = instantiate({k: d_params[k] for k in rest}, rest)
        d_h_final, d_outs = linear(d_rest, instantiate(d_h0, h0),
                                   instantiate(d_reset_state, reset_state), d_xs)
        return (h_final, [out for out, _ in outs]), (d_h_final, [d_out for d_out, _ in d_outs])

    run.defjvp(run_jvp, symbolic_zeros=True)
    return run(params, h0, reset_state, segments)
