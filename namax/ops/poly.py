"""Polynomials as NamedArrays of coefficients (``jnp.poly*`` with a named coefficient axis).

A polynomial is a 1-D array of coefficients, highest power first, as in ``jnp.polyval``.
Its one axis is the coefficient axis. Each result's coefficient axis takes the name of the
(first) NamedArray argument's axis, resized to the result's length; with plain array
arguments only it is named :data:`DEFAULT_POLY_AXIS_NAME` (``"degree"``), as in Haliax.

>>> import jax.numpy as jnp, namax as nx
>>> p = nx.named(jnp.array([1.0, -3.0, 2.0]), "coef")  # x^2 - 3x + 2
>>> nx.polymul(p, jnp.array([1.0, 1.0])).axes
(Axis('coef', 4),)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional

import jax.numpy as jnp

from ..axis import Axis, AxisSelector, axis_name
from ..named import NamedArray, _axes_str, wrap
from ..signature import table_function

DEFAULT_POLY_AXIS_NAME = "degree"
"""The coefficient axis's name when no argument is a NamedArray."""

_REQUIRED = inspect.Parameter.empty


def _coefficients(p: Any, arg: str, what: str) -> tuple[Any, Optional[Axis]]:
    """The raw 1-D coefficients of ``p`` and its axis (None for a plain array)."""
    if isinstance(p, NamedArray):
        if p.ndim != 1:
            raise ValueError(
                f"{what}: {arg} must have exactly one axis (the coefficients), got axes {_axes_str(p.axes)}"
            )
        return p.array, p.axes[0]
    raw = jnp.asarray(p)
    if raw.ndim != 1:
        raise ValueError(f"{what}: {arg} must be 1-D coefficients, got an array of shape {raw.shape}")
    return raw, None


def _coefficient_axis(base: Optional[Axis], size: int) -> Axis:
    return base.resize(size) if base is not None else Axis(DEFAULT_POLY_AXIS_NAME, size)


def _unwrap(value: Any) -> Any:
    return value.array if isinstance(value, NamedArray) else value


@dataclasses.dataclass(frozen=True)
class _PolyOp:
    """One row of the table: a ``jnp`` polynomial op whose results are coefficient arrays."""

    name: str
    fn: Callable
    polynomials: tuple[str, ...]  # arguments holding coefficients (their axis names the result's)
    options: tuple[tuple[str, Any], ...]  # further arguments (with defaults), passed through
    summary: str
    example: tuple[str, str]  # (call, result) for the docstring, with p = x^2 - 3x + 2 on axis "coef"


def _apply(op: _PolyOp, args: dict[str, Any]) -> Any:
    raws, base = [], None
    for arg in op.polynomials:
        raw, axis = _coefficients(args[arg], arg, op.name)
        raws.append(raw)
        if base is None:
            base = axis
    options = {k: _unwrap(args[k]) for k, _ in op.options}
    out = op.fn(*raws, **options)
    if isinstance(out, tuple):
        return tuple(wrap(o, (_coefficient_axis(base, o.shape[0]),)) for o in out)
    return wrap(out, (_coefficient_axis(base, out.shape[0]),))


def _make(op: _PolyOp) -> Callable[..., Any]:
    poly_op = table_function(op.name, op.polynomials, op.options, lambda args: _apply(op, args), __name__)
    call, result = op.example
    poly_op.__doc__ = (
        f"{op.summary} (``jnp.{op.fn.__name__}``) on 1-D coefficient arrays.\n\n"
        f"The result's coefficient axis takes the name of the first NamedArray argument's axis\n"
        f"(``{DEFAULT_POLY_AXIS_NAME!r}`` if there is none).\n\n"
        f">>> import jax.numpy as jnp, namax as nx\n"
        f">>> p = nx.named(jnp.array([1.0, -3.0, 2.0]), 'coef')\n"
        f">>> {call}\n{result}\n"
    )
    return poly_op


_POLY_OPS = (
    _PolyOp("poly", jnp.poly, ("seq_of_zeros",), (), "The monic polynomial with the given roots",
            ("nx.poly(nx.named(jnp.array([1.0, 2.0]), 'root')).array.tolist()", "[1.0, -3.0, 2.0]")),
    _PolyOp("polyadd", jnp.polyadd, ("p1", "p2"), (), "Sum of two polynomials",
            ("nx.polyadd(p, jnp.array([1.0, 1.0])).array.tolist()", "[1.0, -2.0, 3.0]")),
    _PolyOp("polysub", jnp.polysub, ("p1", "p2"), (), "Difference of two polynomials",
            ("nx.polysub(p, jnp.array([1.0, 1.0])).array.tolist()", "[1.0, -4.0, 1.0]")),
    _PolyOp("polymul", jnp.polymul, ("p1", "p2"), (), "Product of two polynomials",
            ("nx.polymul(p, jnp.array([1.0, 1.0])).array.tolist()", "[1.0, -2.0, -1.0, 2.0]")),
    _PolyOp("polydiv", jnp.polydiv, ("p1", "p2"), (), "Quotient and remainder of two polynomials",
            ("[r.array.tolist() for r in nx.polydiv(p, jnp.array([1.0, -1.0]))]",
             "[[1.0, -2.0], [0.0, 0.0, 0.0]]")),
    _PolyOp("polyder", jnp.polyder, ("p",), (("m", 1),), "The ``m``-th derivative",
            ("nx.polyder(p).axes", "(Axis('coef', 2),)")),
    _PolyOp("polyint", jnp.polyint, ("p",), (("m", 1), ("k", None)),
            "The ``m``-th antiderivative, with integration constants ``k``",
            ("nx.polyint(p, k=5.0).array.tolist()", "[0.3333333432674408, -1.5, 2.0, 5.0]")),
    _PolyOp("roots", jnp.roots, ("p",), (), "The roots of a polynomial (not jittable: leading zeros are stripped)",
            ("sorted(nx.roots(p).array.real.round(4).tolist())", "[1.0, 2.0]")),
    _PolyOp("trim_zeros", jnp.trim_zeros, ("f",), (("trim", "fb"),),
            "Coefficients without leading ('f') and/or trailing ('b') zeros (not jittable)",
            ("nx.trim_zeros(nx.polysub(p, nx.named(jnp.array([1.0, 0.0, 0.0]), 'coef')), 'f').axes",
             "(Axis('coef', 2),)")),
)

_g = globals()
for _op in _POLY_OPS:
    _g[_op.name] = _make(_op)
del _g, _op


def polyval(p: Any, x: Any) -> Any:
    """The polynomial ``p`` evaluated at ``x``: with ``x``'s axes if it is a NamedArray, else a plain array.

    >>> import jax.numpy as jnp, namax as nx
    >>> p = nx.named(jnp.array([1.0, -3.0, 2.0]), "coef")
    >>> y = nx.polyval(p, nx.arange(nx.Axis("x", 4)).astype(jnp.float32))
    >>> y.axes, y.array.tolist()
    ((Axis('x', 4),), [2.0, 0.0, 0.0, 2.0])
    """
    raw, _ = _coefficients(p, "p", "polyval")
    if isinstance(x, NamedArray):
        return wrap(jnp.polyval(raw, x.array), x.axes)
    return jnp.polyval(raw, x)


def _samples(v: Any, arg: str, sample_axis: Optional[Axis]) -> Any:
    """Raw 1-D samples; a NamedArray must lie along the samples' axis."""
    raw, axis = _coefficients(v, arg, "polyfit")
    if axis is not None and sample_axis is not None and axis != sample_axis:
        raise ValueError(
            f"polyfit: {arg} lies along {axis} but the samples lie along {sample_axis}; name the same axis"
        )
    return raw


def polyfit(x: Any, y: Any, deg: int, rcond: Any = None, full: bool = False, w: Any = None,
            cov: bool = False) -> Any:
    """Least-squares polynomial of degree ``deg`` through the samples ``(x, y)`` (``jnp.polyfit``).

    ``x``, ``y`` (and weights ``w``) are 1-D along the same axis. The coefficients lie on that
    axis (``x``'s, else ``y``'s), resized to ``deg + 1`` -- Haliax's convention -- or on
    ``"degree"`` if neither is a NamedArray. ``cov=True`` also returns the covariance, with
    axes ``(coef, coef + "_cov")``; ``full=True`` returns the coefficients and ``jnp.polyfit``'s
    plain diagnostics (residuals, rank, singular values, rcond).

    >>> import jax.numpy as jnp, namax as nx
    >>> x = nx.linspace(nx.Axis("sample", 5), start=0.0, stop=4.0)
    >>> c = nx.polyfit(x, 2 * x * x + 1, 2)
    >>> c.axes, [abs(round(v, 3)) for v in c.array.tolist()]
    ((Axis('sample', 3),), [2.0, 0.0, 1.0])
    """
    if isinstance(deg, bool) or not isinstance(deg, int) or deg < 0:
        raise ValueError(f"polyfit: deg must be a non-negative int, got {deg!r}")
    x_raw, x_axis = _coefficients(x, "x", "polyfit")
    y_raw = _samples(y, "y", x_axis)
    if x_raw.shape != y_raw.shape:
        raise ValueError(f"polyfit: x has {x_raw.shape[0]} samples but y has {y_raw.shape[0]}")
    base = x_axis if x_axis is not None else (y.axes[0] if isinstance(y, NamedArray) else None)
    w_raw = None if w is None else _samples(w, "w", base)
    if w_raw is not None and w_raw.shape != x_raw.shape:
        raise ValueError(f"polyfit: w has {w_raw.shape[0]} weights for {x_raw.shape[0]} samples")
    result = jnp.polyfit(x_raw, y_raw, deg, rcond=_unwrap(rcond), full=full, w=w_raw, cov=cov)
    coef_axis = _coefficient_axis(base, deg + 1)
    if full:
        return (wrap(result[0], (coef_axis,)),) + tuple(result[1:])
    if cov:
        return wrap(result[0], (coef_axis,)), wrap(result[1], (coef_axis, coef_axis.alias(f"{coef_axis.name}_cov")))
    return wrap(result, (coef_axis,))


def vander(x: NamedArray, degree: AxisSelector) -> NamedArray:
    """The Vandermonde matrix of ``x``: axes ``(x's axis, degree)``, powers decreasing along ``degree``.

    ``degree`` is an Axis (its size is the number of columns) or a name (as many columns as
    ``x`` has entries).

    >>> import jax.numpy as jnp, namax as nx
    >>> v = nx.vander(nx.named(jnp.array([1.0, 2.0]), "x"), nx.Axis("power", 3))
    >>> v.axes, v.array.tolist()
    ((Axis('x', 2), Axis('power', 3)), [[1.0, 1.0, 1.0], [4.0, 2.0, 1.0]])
    """
    if not isinstance(x, NamedArray):
        raise TypeError(f"vander: x must be a NamedArray, got {type(x).__name__}; use jnp.vander on plain arrays")
    if x.ndim != 1:
        raise ValueError(f"vander: x must have exactly one axis, got axes {_axes_str(x.axes)}")
    deg_axis = degree if isinstance(degree, Axis) else Axis(axis_name(degree), x.axes[0].size)
    if deg_axis.name == x.axes[0].name:
        raise ValueError(f"vander: the degree axis {deg_axis.name!r} has the same name as x's axis; pick another")
    return wrap(jnp.vander(x.array, N=deg_axis.size), (x.axes[0], deg_axis))


__all__ = ["DEFAULT_POLY_AXIS_NAME", *(op.name for op in _POLY_OPS), "polyval", "polyfit", "vander"]
