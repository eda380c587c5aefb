"""The `Cell` type, the `SplitStep` a library cell's step is, and the traits it carries.

A cell is a NamedTuple of pure functions closed over static configuration (the
shape of optax's `GradientTransformation` and stax's `(init_fun, apply_fun)`): it
is hashable, can be a static argument to `jax.jit`, and holds no arrays.

`Cell.step` is always what runs. A library cell's step is a `SplitStep`: the
step split into a time-parallel input projection and a recurrent part, which
`unroll` runs separately (one large matmul for every step's projection). The
fast path is the step itself, so the two cannot drift; a cell whose `step` is
replaced (`cell._replace(step=wrapped)`) runs the new step, and every trait of
the old one (kernel, hoisted gradient, row groups) goes with it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, NamedTuple, Optional, Protocol

import jax

from rnnscan.validation import check_bool, check_callable, check_same_structure

Params = Any
State = Any
PRNGKey = jax.Array


class InitFn(Protocol):
    def __call__(self, key: PRNGKey) -> Params:
        """The cell's params, a pytree of arrays, drawn from the `jax.random` key."""


class InitialStateFn(Protocol):
    def __call__(self, params: Params, batch_shape: tuple = ()) -> State:
        """The state before the first step: zeros whose leaves are `(*batch_shape, size)`."""


class StepFn(Protocol):
    def __call__(self, params: Params, h: State, x: Any) -> tuple[State, Any]:
        """One step: `x` `(*batch, input_size)` and the state `h` to the next state
        (same structure, shapes and dtypes as `h`) and the output `(*batch, output_size)`."""


class ProjectInputsFn(Protocol):
    def __call__(self, params: Params, xs: Any) -> Any:
        """The part of a step that reads the input alone, for any leading shape of
        `xs` (`(time, batch, input_size)` in `unroll`: every step at once)."""


class RecurrentStepFn(Protocol):
    def __call__(self, params: Params, h: State, xp: Any) -> tuple[State, Any]:
        """The rest of the step, from one step's projected input `xp`."""


class LinearRecurrence(NamedTuple):
    """A recurrence linear in its state: `h_t = a_t * h_{t-1} + b_t`, elementwise.

    Attributes:
      coefficients: `coefficients(params, xs) -> (a, b)` for every step at once:
        `xs` `(*lead, input_size)` for any leading shape (`(time, batch)` in
        `unroll`); `a` and `b` have the state's structure, leaves `(*lead, size)`.
      readout: `readout(params, hs, xs) -> ys`, the outputs from the states after
        each step and the inputs that produced them, for any leading shape;
        `None`: the output is the state.
      log_space: `coefficients` returns `(log a, log b)`, real, for recurrences
        with `a, b > 0` (minGRU, minLSTM): the scan composes in log space, where
        products over thousands of steps neither underflow nor lose precision.
        The state itself stays in linear space and may take any sign.
    """

    coefficients: Callable[[Any, Any], tuple]
    readout: Optional[Callable[[Any, Any, Any], Any]] = None
    log_space: bool = False


class SequenceKernel(NamedTuple):
    """A compiled kernel that runs a cell's whole sequence at once.

    Attributes:
      run: `run(params, h0, xs, *, lengths, resets, reset_state, reverse,
        time_major, all_states) -> (final_state, ys, states)`: what `unroll`
        returns (`states` None unless `all_states`), in the layout of `xs`.
      unsupported: `unsupported(params, h0, xs, *, lengths, resets) -> str | None`:
        why the kernel cannot run these operands here (a sentence), or None.
      faster: `faster(params, h0, xs, *, time_major, derivatives) -> bool`:
        whether it was measured faster than the scan on this CPU for these
        shapes, forward or (`derivatives`) forward+backward; `method="auto"`
        and `"sequential"` take values, and derivatives, from it only then.
    """

    run: Callable
    unsupported: Callable
    faster: Callable


@dataclasses.dataclass(frozen=True)
class SplitStep:
    """A step split in two, `step(p, h, x) == recurrent_step(p, h, project_inputs(p, x))`,
    with what `unroll` may use to run it faster. Calling it runs the step. (A
    frozen dataclass, not a NamedTuple, so that `jax.jit(cell.step)` can hold
    a weak reference to it; equal fields make equal, same-hash steps.)

    Attributes:
      project_inputs: a `ProjectInputsFn`.
      recurrent_step: a `RecurrentStepFn`.
      recurrent_kernel: the key `k` of a params dict whose `W = params[k]`
        `recurrent_step` uses only in the term `h @ W` added to `xp`, `h` being
        the first leaf of its state. `unroll` then sums `W`'s gradient in one
        matmul after the loop (in float32 or the param dtype, whatever the
        compute dtype) instead of one small update per step inside it. The
        price: the step inputs `h` are kept (in reverse mode, beside what
        `remat=True` keeps), and forward mode runs a tangent loop after a primal
        one that saves every step. `remat=k` and `truncated_unroll` do not use it.
      rowwise: row `b` of a step's outputs depends only on row `b` of its state
        and input (no statistics over the batch, no arrays with a batch axis in
        the params): `unroll` may then step groups of rows separately.
      linear: a `LinearRecurrence` when the step is linear in its state, which
        lets `unroll` run it on `jax.lax.associative_scan`.
      kernel: a `SequenceKernel` that runs the whole sequence.
      diagonal_jacobian: the step's Jacobian in the state is diagonal per unit
        (its leaves all of size n; unit u of each new leaf depends only on unit
        u of each old leaf): `method="newton"` then solves exactly at O(n) a
        step (`rs.paragru`, `rs.paralstm`).
      state_dropout: per leaf of the state, whether variational state dropout
        (`rs.layer(state_dropout=...)`) applies to it; None: to every leaf. An
        LSTM drops `h`, not its memory cell `c` (as Keras and TF1 do).
    """

    project_inputs: Callable
    recurrent_step: Callable
    recurrent_kernel: Optional[str] = None
    rowwise: bool = False
    linear: Optional[LinearRecurrence] = None
    kernel: Optional[SequenceKernel] = None
    diagonal_jacobian: bool = False
    state_dropout: Optional[tuple] = None

    def __post_init__(self):
        check_callable("project_inputs", self.project_inputs)
        check_callable("recurrent_step", self.recurrent_step)
        check_bool("rowwise", self.rowwise)
        for name, kind in (("linear", LinearRecurrence), ("kernel", SequenceKernel)):
            if not isinstance(getattr(self, name), (kind, type(None))):
                raise TypeError(f"{name} must be a {kind.__name__} or None; got "
                                f"{type(getattr(self, name)).__name__}")

    def __call__(self, params, h, x):
        return self.recurrent_step(params, h, self.project_inputs(params, x))

    def _replace(self, **changes) -> "SplitStep":
        """A copy with `changes`, as a NamedTuple's `_replace`."""
        return dataclasses.replace(self, **changes)


class Cell(NamedTuple):
    """A recurrent cell: `step(params, h, x) -> (h, y)` and its companions.

    Attributes:
      init: an `InitFn`, or None for a cell whose params the user builds.
      initial_state: an `InitialStateFn`, or None (then `unroll` needs
        `initial_state`).
      step: a `StepFn`: reads `x` `(*batch, input_size)` and the state, returns
        the next state and the output `y` `(*batch, output_size)`. For library
        cells, a `SplitStep`.
      project_inputs, recurrent_step: the two halves of a `SplitStep` step, or
        None. Build a cell with a fast path with `Cell.split`.
    """

    init: Optional[Callable[[PRNGKey], Params]]
    initial_state: Optional[Callable[[Params, tuple], State]]
    step: Callable[[Params, State, Any], tuple]
    project_inputs: Optional[Callable[[Params, Any], Any]] = None
    recurrent_step: Optional[Callable[[Params, State, Any], tuple]] = None

    @classmethod
    def split(cls, init, initial_state, project_inputs, recurrent_step, **traits) -> "Cell":
        """The cell whose step is `SplitStep(project_inputs, recurrent_step, **traits)`."""
        check_callable("init", init, optional=True)
        check_callable("initial_state", initial_state, optional=True)
        return cls(init, initial_state, SplitStep(project_inputs, recurrent_step, **traits),
                   project_inputs, recurrent_step)

    @property
    def has_fast_path(self) -> bool:
        return split_step(self) is not None


def split_step(cell: Cell) -> Optional[SplitStep]:
    """The `SplitStep` that `cell.step` is, or None when it runs as one function.

    Raises:
      ValueError: when `project_inputs` or `recurrent_step` was replaced but the
        step still runs the old ones (`cell._replace(recurrent_step=...)`): which
        of the two should run is the caller's to say.
    """
    step = cell.step
    if not isinstance(step, SplitStep):
        return None
    if cell.project_inputs is None and cell.recurrent_step is None:
        return None  # the fast path was dropped: the step runs as one function
    if (cell.project_inputs, cell.recurrent_step) != (step.project_inputs, step.recurrent_step):
        raise ValueError(
            "cell.project_inputs and cell.recurrent_step must be the halves of cell.step (a "
            "SplitStep); one was replaced while the step still runs the old one. Rebuild the "
            "cell with rnnscan.Cell.split(init, initial_state, project_inputs, recurrent_step), "
            "or replace the step itself: cell._replace(step=...)"
        )
    return step


def as_cell(cell, name: str = "cell") -> Cell:
    """Returns `cell` as a `Cell`; a bare `(params, h, x) -> (h, y)` function is wrapped."""
    if isinstance(cell, Cell):
        return cell
    if callable(cell):
        return Cell(init=None, initial_state=None, step=cell)
    raise TypeError(
        f"{name} must be an rnnscan.Cell or a function (params, h, x) -> (h, y); "
        f"got {type(cell).__name__}"
    )


def same_for_same_arguments(constructor):
    """Decorates a constructor of cells or layers so that equal arguments give the
    same (equal, same-hash) object: `jax.jit` caches keyed on it then hit, also
    for a cell built anew inside every call of a function (flax's `nn.compact`).

    Arguments are compared after defaults are filled in (`rs.lstm(4, 8)` is
    `rs.lstm(4, 8, forget_bias=1.0)`) and with their types (`3` and `3.0`
    differ, and the second may be refused). Calls with an unhashable argument
    build a new object each time.
    """
    signature = inspect.signature(constructor)
    cache: dict = {}

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return constructor(*args, **kwargs)  # let the call raise its own error
        bound.apply_defaults()
        items = []
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                items += [(f"**{k}", type(v), v) for k, v in sorted(value.items())]
            else:
                items.append((name, type(value), value))
        key = tuple(items)
        try:
            hash(key)
        except TypeError:
            return constructor(*args, **kwargs)
        if key not in cache:
            if len(cache) >= 1024:
                cache.pop(next(iter(cache)))
            cache[key] = constructor(*args, **kwargs)
        return cache[key]

    return build


def initial_state_of(cell, params, initial_state, batch: int):
    """`initial_state`, checked against the cell's state, or the cell's zeros."""
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

