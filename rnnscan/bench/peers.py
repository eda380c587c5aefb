"""rnnscan and its peers, each built into a ready-to-call `Program` for one config.

Every peer runs the same computation on the same inputs: `config.layers` LSTM (or
GRU) layers over `x` `(batch, time, input)`, returning the top layer's outputs;
for a `padded` config, row `b` holds `lengths(config)[b]` steps (each peer's own
way of saying so: `lengths=`, packed sequences, `seq_lengths=`).
`"forward"` computes the outputs; `"train"` the gradient of their sum with respect
to the params and the inputs. Peers that cannot run here raise `Unavailable`.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnscan.bench.configs import Config

PEERS = ("rnnscan", "torch", "flax", "haiku", "jax_cudnn", "plain_scan")
MODES = ("forward", "train")
DTYPES = ("float32", "bfloat16")


class Unavailable(Exception):
    """The peer cannot run here; the message says why (the row is skipped)."""


class Program(NamedTuple):
    """One peer's forward or forward+backward on one config, compiled and ready.

    Attributes:
      call: runs the computation once and waits for its result.
      compile_s: seconds spent in tracing and XLA compilation (None: eager peer).
      xla_bytes: XLA's buffer assignment for the program, arguments + outputs +
        temporaries (JAX peers only): the peak device memory XLA plans for.
    """

    call: Callable[[], None]
    compile_s: Optional[float]
    xla_bytes: Optional[int]


def inputs(config: Config) -> np.ndarray:
    """The input batch every peer reads: `(batch, time, input)` float32, seeded."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((config.batch, config.time, config.input), np.float32)


def lengths(config: Config) -> Optional[np.ndarray]:
    """Each row's length, int32 `(batch,)` in `[time / 2, time]`, seeded; None
    unless `config.padded`."""
    if not config.padded:
        return None
    rng = np.random.default_rng(1)
    return rng.integers(config.time // 2, config.time + 1, config.batch).astype(np.int32)


def on_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def build(peer: str, config: Config, mode: str, dtype: str = "float32") -> Program:
    """Builds (and for JAX peers compiles) `peer`'s `mode` program for `config`.

    `dtype` is the matmul operand dtype: `"bfloat16"` runs bf16 matmuls with f32
    params and carry where the peer supports it.

    Raises:
      Unavailable: the peer is not installed, or cannot run this config here.
    """
    if peer not in _BUILDERS:
        raise ValueError(f"peer must be one of {PEERS}; got {peer!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}; got {dtype!r}")
    return _BUILDERS[peer](config, mode, dtype)


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed")


def _compute_dtype(dtype: str):
    return None if dtype == "float32" else jnp.dtype(dtype)


def jax_program(apply, params, x, mode: str, row_lengths=None) -> Program:
    """Compiles `apply(params, x, row_lengths) -> ys` (or its gradient w.r.t.
    params and `x`, for `"train"`) ahead of time; `row_lengths` (None, or int
    `(batch,)`) is an argument, not a constant, as in a training loop."""
    if mode == "train":
        loss = lambda p, xs, n: jnp.sum(apply(p, xs, n).astype(jnp.float32))
        fn = jax.grad(loss, argnums=(0, 1))
    else:
        fn = apply
    x = jnp.asarray(x)
    n = None if row_lengths is None else jnp.asarray(row_lengths)
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params, x, n).compile()
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    xla_bytes = None if stats is None else int(
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return Program(lambda: jax.block_until_ready(compiled(params, x, n)), compile_s, xla_bytes)


def _rnnscan(config: Config, mode: str, dtype: str) -> Program:
    import rnnscan as rs

    make = {"lstm": rs.lstm, "gru": rs.gru}[config.cell]
    cells = [
        make(config.input if i == 0 else config.hidden, config.hidden,
             compute_dtype=_compute_dtype(dtype))
        for i in range(config.layers)
    ]
    key = jax.random.PRNGKey(0)
    if config.layers == 1:
        cell = cells[0]
        params = cell.init(key)
        apply = lambda p, x, n: rs.unroll(cell, p, x, lengths=n)[0]
    else:
        model = rs.stack(cells)
        params = model.init(key)
        apply = lambda p, x, n: model.apply(p, x, lengths=n)[0]
    return jax_program(apply, params, inputs(config), mode, lengths(config))


def plain_init(config: Config, key) -> list:
    """Params of `plain_apply`: per layer `w_ih` `(in, G)`, `w_hh` `(H, G)`, `b` `(G,)`
    (and a GRU's `b_hn` `(H,)`), uniform in `±1/sqrt(H)` like torch."""
    gates = {"lstm": 4, "gru": 3}[config.cell] * config.hidden
    bound = 1.0 / np.sqrt(config.hidden)
    params = []
    for i, k in enumerate(jax.random.split(key, config.layers)):
        k_ih, k_hh, k_b, k_n = jax.random.split(k, 4)
        fan_in = config.input if i == 0 else config.hidden
        layer = {
            "w_ih": jax.random.uniform(k_ih, (fan_in, gates), jnp.float32, -bound, bound),
            "w_hh": jax.random.uniform(k_hh, (config.hidden, gates), jnp.float32, -bound, bound),
            "b": jax.random.uniform(k_b, (gates,), jnp.float32, -bound, bound),
        }
        if config.cell == "gru":
            layer["b_hn"] = jax.random.uniform(k_n, (config.hidden,), jnp.float32, -bound, bound)
        params.append(layer)
    return params


def plain_apply(cell: str, params: list, xs, compute_dtype=None, row_lengths=None):
    """The obvious `lax.scan` LSTM (torch gate order, no forget bias) or GRU (torch's,
    reset after the recurrent matmul): the input projection hoisted out of the
    loop as one product, the recurrent one inside the step, batch-major input
    swapped to time-major for the scan and back. With `row_lengths`, a row keeps
    its state past its length and outputs zeros there. Returns the top layer's
    outputs `(batch, time, hidden)`."""

    def mm(a, w):
        dt = compute_dtype or a.dtype
        return jnp.matmul(a.astype(dt), w.astype(dt), preferred_element_type=jnp.float32)

    def lstm_step(p, carry, xp):
        h, c = carry
        i, f, g, o = jnp.split(xp + mm(h, p["w_hh"]), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru_step(p, h, xp):
        x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(mm(h, p["w_hh"]), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * (h_n + p["b_hn"]))
        h = (1 - z) * n + z * h
        return h, h

    step = {"lstm": lstm_step, "gru": gru_step}[cell]
    time_ = xs.shape[1]
    valid = (jnp.ones((time_, xs.shape[0]), bool) if row_lengths is None
             else jnp.arange(time_)[:, None] < row_lengths[None, :])

    def masked_step(p, carry, inputs):
        xp, ok = inputs
        new, y = step(p, carry, xp)
        keep = lambda a, b: jnp.where(ok[:, None], a, b)
        return jax.tree_util.tree_map(keep, new, carry), keep(y, 0.0)

    for p in params:
        h0 = jnp.zeros((xs.shape[0], p["w_hh"].shape[0]), jnp.float32)
        carry = (h0, h0) if cell == "lstm" else h0
        xp = mm(jnp.swapaxes(xs, 0, 1), p["w_ih"]) + p["b"]
        run = masked_step if row_lengths is not None else lambda p, c, i: step(p, c, i[0])
        _, ys = jax.lax.scan(lambda c, i, p=p: run(p, c, i), carry, (xp, valid))
        xs = jnp.swapaxes(ys, 0, 1)
    return xs


def _plain_scan(config: Config, mode: str, dtype: str) -> Program:
    params = plain_init(config, jax.random.PRNGKey(0))
    apply = lambda p, x, n: plain_apply(config.cell, p, x, _compute_dtype(dtype), n)
    return jax_program(apply, params, inputs(config), mode, lengths(config))


def _flax(config: Config, mode: str, dtype: str) -> Program:
    if config.padded and config.layers > 1:
        raise Unavailable("nn.Sequential passes no seq_lengths to its layers")
    _require("flax")
    import flax.linen as nn

    cell = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}[config.cell]
    layers = [nn.RNN(cell(config.hidden, dtype=_compute_dtype(dtype))) for _ in range(config.layers)]
    model = nn.Sequential(layers) if config.layers > 1 else layers[0]
    x = inputs(config)
    params = model.init(jax.random.PRNGKey(0), x)
    apply = lambda p, x, n: model.apply(p, x, **({} if n is None else {"seq_lengths": n}))
    return jax_program(apply, params, x, mode, lengths(config))


def _haiku(config: Config, mode: str, dtype: str) -> Program:
    # What haiku cannot run is said whether or not it is installed.
    if config.padded:
        raise Unavailable("hk.dynamic_unroll takes no sequence lengths")
    if dtype != "float32":
        raise Unavailable("haiku's LSTM and GRU have no compute dtype option")
    _require("haiku")
    import haiku as hk

    make = {"lstm": hk.LSTM, "gru": hk.GRU}[config.cell]

    def forward(x):
        core = hk.DeepRNN([make(config.hidden) for _ in range(config.layers)])
        ys, _ = hk.dynamic_unroll(core, x, core.initial_state(x.shape[0]), time_major=False)
        return ys

    model = hk.without_apply_rng(hk.transform(forward))
    x = inputs(config)
    params = model.init(jax.random.PRNGKey(0), x)
    return jax_program(lambda p, x, n: model.apply(p, x), params, x, mode)


def _jax_cudnn(config: Config, mode: str, dtype: str) -> Program:
    if not on_gpu():
        raise Unavailable("jax.experimental.rnn runs cuDNN: GPU only")
    if config.cell != "lstm":
        raise Unavailable("jax.experimental.rnn has an LSTM only")
    if dtype != "float32":
        raise Unavailable("jax.experimental.rnn is benchmarked in float32 only")
    from jax.experimental import rnn

    L, B, H = config.layers, config.batch, config.hidden
    weights = rnn.init_lstm_weight(jax.random.PRNGKey(0), config.input, H, L, False)
    zeros = jnp.zeros((L, B, H), jnp.float32)
    row_lengths = lengths(config)
    if row_lengths is None:
        row_lengths = np.full((B,), config.time, np.int32)

    def apply(w, x, n):
        ys, _, _ = rnn.lstm(x, zeros, zeros, w, n, input_size=config.input,
                            hidden_size=H, num_layers=L, dropout=0.0, bidirectional=False)
        return ys

    return jax_program(apply, weights, inputs(config), mode, row_lengths)


def _torch(config: Config, mode: str, dtype: str) -> Program:
    _require("torch")
    import torch

    if on_gpu() and not torch.cuda.is_available():
        raise Unavailable("torch has no CUDA here; a CPU row next to GPU rows would mislead")
    device = "cuda" if on_gpu() else "cpu"
    make = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[config.cell]
    module = make(config.input, config.hidden, num_layers=config.layers, batch_first=True)
    module = module.to(device)
    x = torch.from_numpy(inputs(config)).to(device)
    x_leaf = x.clone().requires_grad_(True)
    wrt = list(module.parameters()) + [x_leaf]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    row_lengths = lengths(config)

    def run(x):  # padded rows as packed sequences, the outputs padded back
        if row_lengths is None:
            return module(x)[0]
        rnn = torch.nn.utils.rnn
        packed = rnn.pack_padded_sequence(x, torch.from_numpy(row_lengths).long(),
                                          batch_first=True, enforce_sorted=False)
        return rnn.pad_packed_sequence(module(packed)[0], batch_first=True,
                                       total_length=config.time)[0]

    def forward():
        with torch.no_grad(), autocast():
            run(x)
        sync()

    def train():
        with autocast():
            ys = run(x_leaf)
        torch.autograd.grad(ys.float().sum(), wrt)
        sync()

    return Program(forward if mode == "forward" else train, None, None)


_BUILDERS = {
    "rnnscan": _rnnscan,
    "torch": _torch,
    "flax": _flax,
    "haiku": _haiku,
    "jax_cudnn": _jax_cudnn,
    "plain_scan": _plain_scan,
}
