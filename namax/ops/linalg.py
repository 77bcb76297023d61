"""Matrix operations over two named axes: tril, triu, trace."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from ..axis import AxisSelector, axis_name
from ..named import NamedArray, wrap


def _matrix_dims(x: Any, axis1: AxisSelector, axis2: AxisSelector, what: str) -> tuple[int, int]:
    """Positions of the two (distinct) matrix axes of ``x``."""
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(x).__name__}")
    if axis_name(axis1) == axis_name(axis2):
        raise ValueError(f"{what}: axis1 and axis2 are both {axis_name(axis1)!r}; give two different axes")
    return x.axis_index(axis1), x.axis_index(axis2)


def _triangle(fn: Callable, name: str) -> Callable:
    def op(array: NamedArray, axis1: AxisSelector, axis2: AxisSelector, k: int = 0) -> NamedArray:
        i, j = _matrix_dims(array, axis1, axis2, name)
        # jnp works on the last two dims: move (axis1, axis2) there and back, keeping the axis order
        moved = jnp.moveaxis(array.array, (i, j), (-2, -1))
        return wrap(jnp.moveaxis(fn(moved, k=k), (-2, -1), (i, j)), array.axes)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"``jnp.{fn.__name__}`` of the matrices with rows ``axis1`` and columns ``axis2``; "
        f"``k`` shifts the diagonal (positive: above). Axes unchanged.\n\n"
        f">>> import namax as nx\n>>> R, C = nx.make_axes(row=2, col=2)\n"
        f">>> nx.{name}(nx.ones((R, C)), 'row', 'col').array.tolist()\n{_EXAMPLES[name]}\n"
    )
    return op


_EXAMPLES = {"tril": "[[1.0, 0.0], [1.0, 1.0]]", "triu": "[[1.0, 1.0], [0.0, 1.0]]"}
TRIANGLES = {"tril": jnp.tril, "triu": jnp.triu}
for _name, _fn in TRIANGLES.items():
    globals()[_name] = _triangle(_fn, _name)
del _name, _fn


def trace(
    array: NamedArray, axis1: AxisSelector, axis2: AxisSelector, offset: int = 0, dtype: Any = None
) -> NamedArray:
    """Sum of the diagonal over ``axis1`` x ``axis2`` (``offset`` > 0: above it); both axes go.

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.arange(8).reshape(2, 2, 2), ("batch", "row", "col"))
    >>> nx.trace(x, "row", "col").axes, nx.trace(x, "row", "col").array.tolist()
    ((Axis('batch', 2),), [3, 11])
    """
    i, j = _matrix_dims(array, axis1, axis2, "trace")
    out = jnp.trace(array.array, offset=offset, axis1=i, axis2=j, dtype=dtype)
    return wrap(out, tuple(ax for d, ax in enumerate(array.axes) if d not in (i, j)))


__all__ = [*TRIANGLES, "trace"]
