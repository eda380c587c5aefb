"""The options of `method="newton"` (`rnnscan.newton`) and what it reports."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import numpy as np

from rnnscan.validation import check_number, check_positive_int

JACOBIANS = ("auto", "full", "diagonal")

# The largest flat state for which "auto" forms the full Jacobian (and "diagonal"
# does, for the exact adjoint): T B n^2 numbers, 2 GiB in float32 at T = 16384, B = 8.
AUTO_FULL_MAX = 64
DEFAULT_MAX_ITERATIONS = 100

class Newton(NamedTuple):
    """The options of `method="newton"` (`rs.Newton()` are its defaults).

    Attributes:
      jacobian: `"full"`: the exact `n x n` Jacobian (quadratic convergence;
        small states). `"diagonal"`: its diagonal (quasi-Newton), or the exact
        per-unit blocks of a cell that declares them (`rs.paragru`,
        `rs.paralstm`). `"auto"`: the declared structure where there is one,
        else full up to `AUTO_FULL_MAX` state numbers per row, else diagonal.
      damping: `λ_min >= 0`: the step uses `J_t / (1 + λ)`, `λ` adapting per row
        above it (module doc); 0: plain Newton while it makes progress.
      max_iterations: a cap, at most T (more are never needed); default
        `min(T, DEFAULT_MAX_ITERATIONS)`. If the iterations reach it without
        meeting `tolerance`, the states are computed by the sequential scan
        instead (never a wrong answer; `NewtonInfo.converged` is then False).
      tolerance: stop once `max |h_t - f(h_{t-1}, x_t)| <= tolerance * max(1,
        max |h_t|)` over all steps and rows (scaled, so rounding cannot keep it
        above); default `8 * eps` of the state dtype (9.5e-7 in float32).
      return_info: also return a `NewtonInfo`.
    """

    jacobian: str = "auto"
    damping: float = 0.0
    max_iterations: Optional[int] = None
    tolerance: Optional[float] = None
    return_info: bool = False


class NewtonInfo(NamedTuple):
    """How the solve went, scalars over the batch: `iterations` (int32), the last
    iterate's `residual` `max |h_t - f(h_{t-1}, x_t)|`, and whether it
    `converged` (met `Newton.tolerance`; if not, the sequential scan ran)."""

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def newton_options(method) -> Newton:
    """`"newton"` or a `Newton` as checked options; errors name the bad field."""
    if isinstance(method, str) and method == "newton":
        return Newton()
    if not isinstance(method, Newton):
        raise TypeError(f"method must be 'newton' or an rnnscan.Newton; got {method!r}")
    if method.jacobian not in JACOBIANS:
        raise ValueError(f"Newton.jacobian must be one of {JACOBIANS}; got {method.jacobian!r}")
    check_number("Newton.damping", method.damping, non_negative=True)
    if method.max_iterations is not None:
        check_positive_int("Newton.max_iterations", method.max_iterations)
    if method.tolerance is not None:
        check_number("Newton.tolerance", method.tolerance, positive=True)
    if not isinstance(method.return_info, (bool, np.bool_)):
        raise TypeError(f"Newton.return_info must be a bool; got {method.return_info!r}")
    return method

