"""What the kernels' JAX wrappers (`lstm_primitives`, `gru_primitives`) and
adapters (`lstm`, `gru`) share: the call of an FFI target and its threads, the
panel layouts of the weights, the per-step arrays' helpers, the pair of linear
primitives (a tangent map and its transpose) each kernel is differentiated
through, and the checks and padding of an adapter's operands."""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from rnnscan import masks
from rnnscan.kernels import loader
from rnnscan.tree import time_to_front
from rnnscan.tuning import cpu_cores


def last_step(states, reverse: bool, batch_major: bool):
    """The last step's entry of a per-step array (the first with `reverse`):
    also with lengths, as the states are carried past them."""
    return jnp.take(states, 0 if reverse else -1, axis=int(batch_major))


def step_inputs(states, first, reset_to, resets, reverse, batch_major):
    """The state each step started from: `first` `(batch, ...)`, then `states`
    (per step) but for the last step's; `reset_to` `(batch, ...)` where `resets`."""
    axis = 1 if batch_major else 0
    shifted = jax.lax.slice_in_dim(states, 1, None, axis=axis) if reverse else (
        jax.lax.slice_in_dim(states, 0, -1, axis=axis))
    pieces = [shifted, jnp.expand_dims(first, axis)]
    inputs = jnp.concatenate(pieces if reverse else pieces[::-1], axis)
    return jnp.where(resets[..., None], jnp.expand_dims(reset_to, axis), inputs)


def time_major(batch_major: bool, tree):
    """`tree` time-major from `batch_major` layout, or back (a swap is its own inverse)."""
    return time_to_front(tree, time_major=not batch_major)


def states(xs, h0):
    """`[hs]`'s shape: `xs`'s but for its last axis, `h0`'s."""
    return [jax.ShapeDtypeStruct(xs.shape[:2] + h0.shape[1:], jnp.float32)]


def panels(lib, gates: int, *kernels):
    """Each `(K, gates * H)` kernel as the forward kernels read it: `(H/L, K,
    gates * L)` (`L` the variant's lanes), panel `p` holding the columns of
    units `Lp..Lp+L-1` of every gate side by side."""
    return [w.reshape(w.shape[0], gates, -1, lib.lanes).transpose(2, 0, 1, 3).reshape(
        -1, w.shape[0], gates * lib.lanes) for w in kernels]


def panels_transposed(lib, w_hh):
    """`w_hh.T` `(G, H)` as the backward kernels read it: `(ceil(H/4L), G, 4L)`,
    panel `p` holding columns `4Lp..4Lp+4L-1` (the last one zero-padded)."""
    hidden, gates = w_hh.shape
    width = 4 * lib.lanes
    count = -(-hidden // width)
    w_t = jnp.pad(w_hh.T, ((0, 0), (0, count * width - hidden)))
    return w_t.reshape(gates, count, width).transpose(1, 0, 2)


def call(lib, target: str, results, *operands, hidden: int, gates: int, reverse: bool,
         batch_major: bool, aliases=None, **attributes):
    """Kernel `target` of `hidden` units and `gates` gates on `operands`, in
    `lib`'s variant; `results[0]` is per step."""
    time, batch = results[0].shape[:2][::-1] if batch_major else results[0].shape[:2]
    run = jax.ffi.ffi_call(lib.target(target), tuple(results), vmap_method="sequential",
                           input_output_aliases=aliases)
    return run(*operands, reverse=np.int32(reverse), batch_major=np.int32(batch_major),
               threads=np.int32(threads(time, batch, hidden, gates)), **attributes)


def threads(time: int, batch: int, hidden: int, gates: int = 4) -> int:
    """Threads for a kernel: one per core, but at least 4M multiply-adds apiece
    (handing work to another thread costs microseconds). From 8 rows, each
    owns a block of at least 4 rows for the whole sequence; below, they split
    the units of every step and meet once a step (`cpu_common.h`'s
    `over_parts`), so each needs 64K multiply-adds a step too."""
    step = batch * gates * hidden * hidden
    split = batch // 4 if batch >= 8 else step // 65_536
    return max(1, min(cpu_cores(), split, time * step // 4_000_000))


def primitive(name, in_jax, shapes=None, run=None):
    """A primitive that runs `run` (default `in_jax`) and is differentiated and
    batched through `in_jax`'s definition; `shapes(*avals, **params)` its
    results' avals (default: `in_jax`'s, by `jax.eval_shape`).

    It lowers per platform, whatever the process's backend: `run` (a kernel's
    FFI call) for the CPU, `in_jax` (a scan, the same numbers) for every other
    (`jax.export` for an accelerator from a CPU, or for several platforms at
    once)."""
    prim = Primitive(name)
    prim.multiple_results = True
    if shapes is None:
        shapes = lambda *avals, **params: [
            jax.core.ShapedArray(r.shape, r.dtype)
            for r in jax.eval_shape(functools.partial(in_jax, **params), *avals)]
    run = run or in_jax
    prim.def_impl(run)
    prim.def_abstract_eval(shapes)
    mlir.register_lowering(prim, mlir.lower_fun(in_jax, multiple_results=True))
    if run is not in_jax:
        mlir.register_lowering(prim, mlir.lower_fun(run, multiple_results=True), platform="cpu")

    def jvp(primals, tangents, **params):
        tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
        return jax.jvp(functools.partial(in_jax, **params), tuple(primals), tangents)

    def batch(operands, dims, **params):
        # One problem after another: lax.map keeps the primitive (and its transpose).
        size = next(x.shape[d] for x, d in zip(operands, dims) if d is not None)
        operands = [batching.bdim_at_front(x, d, size) for x, d in zip(operands, dims)]
        outs = jax.lax.map(lambda xs: prim.bind(*xs, **params), operands)
        return outs, [0] * len(outs)

    ad.primitive_jvps[prim] = jvp
    batching.primitive_batchers[prim] = batch
    return prim


_LAYOUT = ("reverse", "batch_major", "lib")


def linear_pair(name, residuals: int, tangent, tangent_shapes, cotangent, cotangent_shapes,
                run_cotangent, prepare=None):
    """`(tangent_p, cotangent_p)`: a kernel's tangent map and its transpose,
    each the other's transpose, so that reverse mode runs `run_cotangent` (the
    backward kernel) and forward mode `tangent` (a scan). Both take `residuals`
    operands first, then the linear ones, and the params `reverse`,
    `batch_major`, `lib`. `prepare(cts, residuals) -> (cts, params)` turns the
    tangent's cotangents into the cotangent primitive's operands and any
    params of its own (default: zeros instantiated, none)."""
    tangent_p = primitive(f"{name}_tangent", tangent, tangent_shapes)
    cotangent_p = primitive(f"{name}_cotangent", cotangent, cotangent_shapes, run=run_cotangent)

    def transpose_tangent(cts, *operands, **layout):
        fixed = operands[:residuals]
        assert not any(ad.is_undefined_primal(r) for r in fixed)
        cts, extra = prepare(cts, fixed) if prepare else (
            [ad.instantiate_zeros(ct) for ct in cts], {})
        g = cotangent_p.bind(*fixed, *cts, **extra, **layout)
        return [None] * residuals + list(g)

    def transpose_cotangent(cts, *operands, **params):
        fixed, linear = operands[:residuals], operands[residuals:]
        assert not any(ad.is_undefined_primal(r) for r in fixed)
        cts = [ad.instantiate_zeros(ct) for ct in cts]
        d = tangent_p.bind(*fixed, *cts, **{k: params[k] for k in _LAYOUT})
        return [None] * residuals + [t if ad.is_undefined_primal(x) else None
                                     for t, x in zip(d, linear)]

    ad.primitive_transposes[tangent_p] = transpose_tangent
    ad.primitive_transposes[cotangent_p] = transpose_cotangent
    return tangent_p, cotangent_p


def why_not(source: str, arrays, xs, h) -> Optional[str]:
    """Why kernel `source` cannot run here on `xs` (an array of rank 3), state
    `h` `(batch, H)` and the other float32 `arrays`, or None: a CPU with a
    built variant, everything float32, `H` a multiple of the variant's lanes."""
    lib = loader.load(source)
    if lib is None:
        return "the kernel is unavailable here: " + loader.info()["why"]
    if not hasattr(xs, "shape"):
        return f"the kernel needs xs, one array; got {type(xs).__name__}"
    arrays = [xs, h, *arrays]
    if any(jnp.dtype(a.dtype) != jnp.float32 for a in arrays):
        return ("the kernel runs float32 alone; got "
                f"{sorted({str(jnp.dtype(a.dtype)) for a in arrays})}")
    if len(xs.shape) != 3 or 0 in xs.shape:
        return f"the kernel needs xs of rank 3, not empty; got shape {tuple(xs.shape)}"
    if len(h.shape) != 2 or h.shape[-1] % lib.lanes:
        return (f"the {lib.variant} kernel needs a multiple of {lib.lanes} units in a state "
                f"(batch, units); got state.h of shape {tuple(h.shape)}")
    return None


def check_lengths(lengths) -> Optional[str]:
    if lengths is not None and not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
        return f"lengths must be integers; got {jnp.result_type(lengths)}"
    return None


def padding(xs, lengths, resets, batch_major: bool):
    """`(lengths, valid, resets)` as the kernels read them: int32
    lengths (every step by default), the per-step validity, and the resets
    (none by default) on valid steps alone (a reset past a row's length
    changes nothing)."""
    time, batch = jnp.shape(xs)[:2][::-1] if batch_major else jnp.shape(xs)[:2]
    per_step = (batch, time) if batch_major else (time, batch)
    lengths = (jnp.full(batch, time, jnp.int32) if lengths is None
               else jnp.asarray(lengths, jnp.int32))
    valid = masks.valid_steps(lengths, time, time_major=not batch_major)
    resets = jnp.zeros(per_step, bool) if resets is None else jnp.asarray(resets, bool) & valid
    return lengths, valid, resets
