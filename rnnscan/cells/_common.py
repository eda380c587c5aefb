"""What the library cells share: activations by name, the gate matmul, dtypes."""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp

from rnnscan.validation import check_bool, check_callable, check_key, check_positive_int

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # relu6(x + 3) / 6, Keras 3's (Keras 2's was 0.2 x + 0.5)
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "identity": lambda x: x,
}


def resolve_activation(activation: Union[str, Callable], name: str = "activation") -> Callable:
    """Maps an activation name (or a callable, returned as is) to its function."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(f"{name} must be one of {sorted(ACTIVATIONS)} or a callable; got {activation!r}")


def resolve_gate_activation(gate_activation) -> Callable:
    """The gates' activation from its name (`"sigmoid"`, `"hard_sigmoid"`, ...). Names
    only, no callables: the kernels run sigmoid gates only, and a name says which
    function a cell has (and keeps equal cells equal)."""
    if isinstance(gate_activation, str) and gate_activation in ACTIVATIONS:
        return ACTIVATIONS[gate_activation]
    raise ValueError(f"gate_activation must be one of {sorted(ACTIVATIONS)} (a name); got "
                     f"{gate_activation!r}")


def check_sizes(**sizes) -> None:
    """Checks every keyword is a positive int."""
    for name, value in sizes.items():
        check_positive_int(name, value)


def check_flags(**flags) -> None:
    """Checks every keyword is a bool."""
    for name, value in flags.items():
        check_bool(name, value)


def check_initializers(**initializers) -> None:
    """Checks every keyword is a `jax.nn.initializers` function or None."""
    for name, value in initializers.items():
        check_callable(name, value, "a jax.nn.initializers initializer, (key, shape, dtype) -> "
                       "array,", optional=True)


class Precision:
    """The dtypes of a cell: params and carry in `param_dtype`, matmul operands in
    `compute_dtype` (e.g. bf16) with accumulation back in `param_dtype`."""

    def __init__(self, param_dtype=jnp.float32, compute_dtype=None):
        self.param_dtype = jnp.dtype(param_dtype)
        self.compute_dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
        if not jnp.issubdtype(self.param_dtype, jnp.floating):
            raise TypeError(f"param_dtype must be a floating dtype; got {self.param_dtype}")
        if self.compute_dtype is not None and not jnp.issubdtype(self.compute_dtype, jnp.floating):
            raise TypeError(f"compute_dtype must be a floating dtype or None; got {self.compute_dtype}")

    def matmul(self, x: jax.Array, w: jax.Array) -> jax.Array:
        """`x @ w` with operands in the compute dtype and the result in the param dtype.

        The leading axes of `x` are flattened first: XLA then sees a 2-D product,
        and so does reverse mode (contracting `(time, batch)` as two axes makes
        XLA:CPU copy an operand into a transposed layout before the product).
        """
        dtype = self.compute_dtype or self.param_dtype
        y = jnp.matmul(x.reshape(-1, x.shape[-1]).astype(dtype), w.astype(dtype),
                       preferred_element_type=self.param_dtype)
        return y.reshape(x.shape[:-1] + w.shape[-1:])

    def matmul_transposed(self, x: jax.Array, w_t: jax.Array) -> jax.Array:
        """`x @ w_t.T` as `matmul`; its reverse mode is the plain product `dy @ w_t`."""
        dtype = self.compute_dtype or self.param_dtype
        contract_last = (((x.ndim - 1,), (1,)), ((), ()))
        return jax.lax.dot_general(x.astype(dtype), w_t.astype(dtype), contract_last,
                                   preferred_element_type=self.param_dtype)

    def initialize(self, initializer, key, shape) -> jax.Array:
        """Draws params in at least float32 (orthogonal's QR has no bf16 kernel),
        then casts them to the param dtype."""
        dtype = jnp.promote_types(self.param_dtype, jnp.float32)
        return initializer(key, shape, dtype).astype(self.param_dtype)

    def zeros(self, shape) -> jax.Array:
        return jnp.zeros(shape, self.param_dtype)


def split_keys(key: jax.Array, n: int):
    check_key("key", key)
    return jax.random.split(key, n)


def default_kernel_init():
    return jax.nn.initializers.glorot_uniform()


def default_recurrent_init():
    return jax.nn.initializers.orthogonal()
