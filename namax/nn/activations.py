"""Activation functions on NamedArrays.

The elementwise ones keep their input's axes (and accept plain arrays too, like their
``jax.nn`` namesakes). The gated ones (:func:`glu`, :func:`swiglu`, :func:`geglu`) halve
one named axis.

>>> import namax as nx
>>> x = nx.arange(nx.Axis("embed", 4), dtype=float) - 2.0
>>> relu(x).array.tolist()
[0.0, 0.0, 0.0, 1.0]
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from ..axis import AxisSelector, axis_name
from ..named import NamedArray, _axes_str, unary


def _elementwise(fn: Callable, name: str) -> Callable:
    def op(x: Any, *args, **kwargs) -> Any:
        return unary(fn, x, *args, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"Elementwise ``jax.nn.{fn.__name__}``; a NamedArray keeps its axes.\n\n"
        f">>> import namax as nx\n>>> nx.nn.{name}(nx.ones(nx.Axis('b', 2))).axes\n(Axis('b', 2),)\n"
    )
    return op


relu = _elementwise(jax.nn.relu, "relu")
relu6 = _elementwise(jax.nn.relu6, "relu6")
sigmoid = _elementwise(jax.nn.sigmoid, "sigmoid")
log_sigmoid = _elementwise(jax.nn.log_sigmoid, "log_sigmoid")
softplus = _elementwise(jax.nn.softplus, "softplus")
soft_sign = _elementwise(jax.nn.soft_sign, "soft_sign")
silu = _elementwise(jax.nn.silu, "silu")
swish = silu
elu = _elementwise(jax.nn.elu, "elu")
celu = _elementwise(jax.nn.celu, "celu")
selu = _elementwise(jax.nn.selu, "selu")
leaky_relu = _elementwise(jax.nn.leaky_relu, "leaky_relu")
hard_tanh = _elementwise(jax.nn.hard_tanh, "hard_tanh")
hard_sigmoid = _elementwise(jax.nn.hard_sigmoid, "hard_sigmoid")
hard_silu = _elementwise(jax.nn.hard_silu, "hard_silu")
hard_swish = hard_silu
tanh = _elementwise(jax.numpy.tanh, "tanh")


def gelu(x: Any, approximate: bool = True) -> Any:
    """GELU, elementwise; ``approximate=True`` is the tanh form (as in ``jax.nn.gelu``).

    >>> import namax as nx
    >>> gelu(nx.zeros(nx.Axis("b", 2)), approximate=False).array.tolist()
    [0.0, 0.0]
    """
    return unary(jax.nn.gelu, x, approximate=approximate)


def quick_gelu(x: Any) -> Any:
    """``x * sigmoid(1.702 x)``, the fast GELU approximation, elementwise.

    >>> import namax as nx
    >>> quick_gelu(nx.zeros(nx.Axis("b", 2))).array.tolist()
    [0.0, 0.0]
    """
    return x * sigmoid(1.702 * x)


def relu_squared(x: Any) -> Any:
    """``relu(x) ** 2``, elementwise (Primer's activation); a NamedArray keeps its axes.

    >>> import namax as nx
    >>> x = nx.arange(nx.Axis("embed", 4), dtype=float) - 2.0
    >>> relu_squared(x).array.tolist()
    [0.0, 0.0, 0.0, 1.0]
    """
    return unary(lambda a: jax.numpy.square(jax.nn.relu(a)), x)


def _halves(x: NamedArray, axis: AxisSelector, what: str) -> tuple[NamedArray, NamedArray]:
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(x).__name__}")
    ax = x.resolve_axis(axis_name(axis))
    if ax.size % 2:
        raise ValueError(f"{what}: axis {ax.name!r} of {_axes_str(x.axes)} has odd size {ax.size}; it must split in two")
    half = ax.resize(ax.size // 2)
    first, second = x.split(ax.name, [half.alias("__first"), half.alias("__second")])
    return first.rename({"__first": half.name}), second.rename({"__second": half.name})


def gated(x: NamedArray, axis: AxisSelector, activation: Callable[[NamedArray], NamedArray]) -> NamedArray:
    """Split ``axis`` in two halves ``a, b`` and return ``a * activation(b)``; ``axis`` halves.

    >>> import namax as nx
    >>> gated(nx.ones(nx.Axis("mlp", 4)), "mlp", sigmoid).axes
    (Axis('mlp', 2),)
    """
    value, gate = _halves(x, axis, "gated")
    return value * activation(gate)


def glu(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """Gated linear unit: first half of ``axis`` times the sigmoid of the second half.

    >>> import namax as nx
    >>> glu(nx.ones(nx.Axis("mlp", 4)), "mlp").axes
    (Axis('mlp', 2),)
    """
    return gated(x, axis, sigmoid)


def swiglu(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """SwiGLU: first half of ``axis`` times ``silu`` of the second half.

    >>> import namax as nx
    >>> swiglu(nx.ones(nx.Axis("mlp", 4)), "mlp").axes
    (Axis('mlp', 2),)
    """
    return gated(x, axis, silu)


def geglu(x: NamedArray, axis: AxisSelector) -> NamedArray:
    """GeGLU: first half of ``axis`` times ``gelu`` of the second half.

    >>> import namax as nx
    >>> geglu(nx.ones(nx.Axis("mlp", 4)), "mlp").axes
    (Axis('mlp', 2),)
    """
    return gated(x, axis, gelu)


__all__ = [
    "relu", "relu6", "sigmoid", "log_sigmoid", "softplus", "soft_sign", "silu", "swish", "elu", "celu",
    "selu", "leaky_relu", "hard_tanh", "hard_sigmoid", "hard_silu", "hard_swish", "tanh", "gelu",
    "quick_gelu", "relu_squared", "gated", "glu", "swiglu", "geglu",
]
