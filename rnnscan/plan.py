"""One `unroll` call (`Request`), its plan, and the time-major operands its strategy runs on.

`rnnscan.unroll.make_plan` makes a `Plan` from a `Request` (validating it); the
strategy the plan names (`scan`, `chunked`, `associative`, `newton`, a
`SequenceKernel`) runs it. A `Plan` holds no arrays: it is a static argument
of the jitted call, and two calls with equal plans share one compilation.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

from rnnscan.batch import Names
from rnnscan.cell import Cell

STRATEGIES = ("scan", "chunked", "associative", "kernel", "newton")


class Request(NamedTuple):
    """One `unroll` call as the caller made it, what `make_plan` plans: the
    arguments of `rnnscan.unroll` (arrays may be abstract, `jax.ShapeDtypeStruct`s),
    and `truncate` (`truncated_unroll`'s chunk size, or None), `backend` (whose
    tuning the plan follows; default JAX's) and `names` (`Names`)."""

    cell: Any
    params: Any
    xs: Any
    initial_state: Any = None
    lengths: Any = None
    resets: Any = None
    reset_state: Any = None
    mask: Any = None
    reverse: bool = False
    time_major: bool = False
    unroll: Union[int, bool, None] = None
    remat: Union[bool, str, int] = False
    return_all_states: bool = False
    method: Any = "auto"
    truncate: Optional[int] = None
    backend: Optional[str] = None
    names: Names = Names()


class Plan(NamedTuple):
    """Which strategy runs an `unroll` call, with which settings.

    Attributes:
      strategy: one of `STRATEGIES`: `"scan"` (`rnnscan.scan`, `lax.scan` in
        time segments and row groups), `"chunked"` (`rnnscan.chunked`,
        checkpointed chunks: `remat=k` and `truncated_unroll`), `"associative"`
        (`rnnscan.associative`, linear cells), `"kernel"` (the cell's
        `SequenceKernel`), `"newton"` (`rnnscan.newton`).
      cell: the cell.
      reverse, time_major, return_all_states: as given to `unroll`.
      unroll: steps per scan iteration (`True`: all).
      remat: the per-step policy: False, True, "carry" or "dots".
      chunk: steps per checkpointed chunk (`"chunked"` only).
      truncate: stop gradients between chunks (TBPTT).
      segments: consecutive scans the time axis is split into (`"scan"`).
      groups: groups of rows each scan step runs separately (`"scan"`).
      newton: the `rnnscan.newton.Newton` options (`"newton"` only).
      derivatives: `"kernel"` or `"scan"`, the strategy whose derivatives
        (forward and reverse mode) replace `strategy`'s, where one was measured
        faster for the values and the other for forward+backward; None: the
        strategy's own.
      axis_name: the mesh axis the time axis is sharded over, inside
        `shard_map` (`"associative"` and `"newton"`; set by
        `rnnscan.sequence_parallel`); None: the whole sequence is here.
    """

    strategy: str
    cell: Cell
    reverse: bool = False
    time_major: bool = False
    return_all_states: bool = False
    unroll: Union[int, bool] = 1
    remat: Union[bool, str] = False
    chunk: Optional[int] = None
    truncate: bool = False
    segments: int = 1
    groups: int = 1
    newton: Any = None
    derivatives: Optional[str] = None
    axis_name: Optional[str] = None


class Operands(NamedTuple):
    """What a strategy runs on, time-major.

    Attributes:
      xs: the inputs, leaves `(time, batch, ...)`.
      h0: the state before the first step, leaves `(batch, size)`.
      valid: bool `(time, batch)`, false past each row's length; or None.
      resets: bool `(time, batch)`: where true, the state is `reset_state`
        before the step is read; or None.
      reset_state: the state a reset goes back to, leaves `(batch, size)`
        (None without `resets`).
    """

    xs: Any
    h0: Any
    valid: Any = None
    resets: Any = None
    reset_state: Any = None
