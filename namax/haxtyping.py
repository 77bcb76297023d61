"""Type hints for NamedArrays' axes and dtypes, checked at run time by :func:`typecheck`.

``f32["batch embed"]`` is ``Annotated[NamedArray, NamedArrayAxes(...)]``: a float32
NamedArray with exactly the axes ``batch, embed`` in that order. Axis specs:

- ``"batch embed"`` or ``("batch", "embed")``: exactly these axes, in this order;
- ``"batch ... embed"``: ``batch`` first, ``embed`` last, anything between;
- ``{"batch", "embed"}``: exactly these axes, in any order; ``{"batch", ...}``: at least these.

``Named[NamedArray, "batch embed"]`` states axes only. For a plain array base
(``f32[jax.Array, "b e"]``) the dtype aliases give jaxtyping's annotation.

>>> import namax as nx
>>> @typecheck
... def mean_embed(x: f32["batch embed"]) -> f32["batch"]:
...     return nx.mean(x, "embed")
>>> mean_embed(nx.ones(nx.make_axes(batch=2, embed=3))).axes
(Axis('batch', 2),)
>>> mean_embed(nx.ones(nx.make_axes(embed=3, batch=2)))
Traceback (most recent call last):
...
TypeError: mean_embed: argument 'x' should be NamedArray[float32 batch embed], got a NamedArray with axes (embed:3, batch:2) and dtype float32
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import typing
from types import EllipsisType
from typing import Annotated, Any, Callable, Iterator, Optional, Protocol, Sequence, Union

import jax.numpy as jnp
import numpy as np

from .axis import Axis, AxisSelection, AxisSelector, axis_spec_to_shape_dict
from .named import NamedArray, _axes_str


# --- axis specs in annotations --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NamedArrayAxes:
    """The axes (and optionally the dtype) a NamedArray annotation asks for.

    ``before`` come first and ``after`` last; ``subset`` allows other axes between them
    (the ``...``). Unordered (``ordered=False``) specs list the axes in ``before``.

    >>> NamedArrayAxes(("batch",), ("embed",), subset=True)
    NamedArray[batch ... embed]
    """

    before: tuple[str, ...]
    after: tuple[str, ...] = ()
    ordered: bool = True
    subset: bool = False
    dtype: Any = None

    def __repr__(self) -> str:
        prefix = "" if self.dtype is None else f"{_dtype_name(self.dtype)} "
        if self.ordered:
            parts = [*self.before, *(["..."] if self.subset else []), *self.after]
            return f"NamedArray[{prefix}{' '.join(parts)}]"
        parts = [*self.before, *(["..."] if self.subset else [])]
        return f"NamedArray[{prefix}{{{', '.join(parts)}}}]"

    def mismatch(self, x: Any) -> Optional[str]:
        """None if ``x`` fits, else what is wrong, in words.

        >>> import namax as nx
        >>> spec = NamedArrayAxes(("batch", "embed"), dtype=jnp.int32)
        >>> spec.mismatch(nx.zeros(nx.make_axes(batch=2, embed=3), dtype=jnp.int32)) is None
        True
        >>> spec.mismatch(nx.zeros(nx.make_axes(batch=2)))
        'axes (batch:2) are not (batch, embed); dtype float32 is not int32'
        """
        if not isinstance(x, NamedArray):
            return f"not a NamedArray but a {type(x).__name__}"
        problems = []
        if not _axes_fit(self, x.axis_names):
            problems.append(f"axes {_axes_str(x.axes)} are not {self._axes_words()}")
        if self.dtype is not None and not _dtype_fits(self.dtype, x.dtype):
            problems.append(f"dtype {x.dtype} is not {_dtype_name(self.dtype)}")
        return "; ".join(problems) or None

    def _axes_words(self) -> str:
        if self.ordered:
            return "(" + ", ".join([*self.before, *(["..."] if self.subset else []), *self.after]) + ")"
        return "{" + ", ".join([*self.before, *(["..."] if self.subset else [])]) + "} (any order)"


NamedArrayAxesSpec = Union[NamedArrayAxes, str, Sequence[Union[str, EllipsisType]], set]
"""What an annotation's axes may be written as: ``"b ... e"``, ``("b", ..., "e")``, ``{"b", ...}``."""


def _axes_fit(spec: NamedArrayAxes, names: tuple[str, ...]) -> bool:
    if not spec.ordered:
        want = set(spec.before)
        return want <= set(names) if spec.subset else want == set(names)
    if not spec.subset:
        return names == spec.before
    if len(names) < len(spec.before) + len(spec.after):
        return False
    return names[:len(spec.before)] == spec.before and (not spec.after or names[-len(spec.after):] == spec.after)


@dataclasses.dataclass(frozen=True)
class DTypeCategory:
    """A dtype family (``jnp.floating``, ``jnp.signedinteger``, ...) instead of one dtype."""

    name: str
    category: Any

    def __repr__(self) -> str:
        return self.name


def _dtype_name(dtype: Any) -> str:
    return dtype.name if isinstance(dtype, DTypeCategory) else np.dtype(dtype).name


def _dtype_fits(want: Any, have: Any) -> bool:
    if isinstance(want, DTypeCategory):
        return bool(jnp.issubdtype(have, want.category))
    return np.dtype(have) == np.dtype(want)


def parse_axes(item: Any) -> NamedArrayAxes:
    """An annotation's axis spec (or an ``Annotated[NamedArray, ...]``) as :class:`NamedArrayAxes`.

    >>> parse_axes("batch ... embed"), parse_axes({"embed", "batch"}) == parse_axes({"batch", "embed"})
    (NamedArray[batch ... embed], True)
    """
    if typing.get_origin(item) is Annotated:
        found = [a for a in typing.get_args(item)[1:] if isinstance(a, NamedArrayAxes)]
        if found:
            return found[0]
    if isinstance(item, NamedArrayAxes):
        return item
    if isinstance(item, str):
        item = [Ellipsis if p == "..." else p for p in item.split()]
    if isinstance(item, (set, frozenset)):
        names = tuple(sorted(p for p in item if p is not Ellipsis and _is_name(p, item)))
        return NamedArrayAxes(names, (), ordered=False, subset=Ellipsis in item)
    if isinstance(item, (tuple, list)):
        parts = [p for p in item if p is Ellipsis or _is_name(p, item)]
        if parts.count(Ellipsis) > 1:
            raise TypeError(f"NamedArray annotation {item!r}: at most one '...' is allowed")
        if Ellipsis in parts:
            i = parts.index(Ellipsis)
            return NamedArrayAxes(tuple(parts[:i]), tuple(parts[i + 1:]), ordered=True, subset=True)
        return NamedArrayAxes(tuple(parts), (), ordered=True, subset=False)
    raise TypeError(f"Invalid NamedArray annotation {item!r}: expected axis names as a string ('batch embed'), "
                    "a tuple or a set")


def _is_name(p: Any, spec: Any) -> bool:
    if not isinstance(p, str) or not p:
        raise TypeError(f"NamedArray annotation {spec!r}: {p!r} is not an axis name (str) or ...")
    return True


class _NamedHint:
    """``Named[NamedArray, "batch embed"]``: a NamedArray with these axes (any dtype)."""

    def __class_getitem__(cls, item: Any) -> Any:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"Named[...] takes a base type and an axis spec: Named[NamedArray, 'batch embed'], "
                            f"got Named[{item!r}]")
        base, axes = item
        if base is not NamedArray:
            raise TypeError(f"Named[...]: the base type must be NamedArray, got {base!r}")
        return Annotated[NamedArray, parse_axes(axes)]


Named = _NamedHint


def _dtype_hint(name: str, dtype: Any, jaxtyping_name: str) -> type:
    """The ``f32``-style alias: ``alias["axes"]`` / ``alias[NamedArray, "axes"]`` for NamedArrays,
    ``alias[jax.Array, "b e"]`` for jaxtyping's annotation of a plain array."""

    def class_getitem(cls, item: Any) -> Any:
        base, axes = item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], type) \
            else (NamedArray, item)
        if base is not NamedArray:
            import jaxtyping

            return getattr(jaxtyping, jaxtyping_name)[base, axes]
        spec = parse_axes(axes)
        return Annotated[NamedArray, dataclasses.replace(spec, dtype=dtype) if spec.dtype is None else spec]

    return type(name, (), {"__class_getitem__": classmethod(class_getitem), "dtype": dtype,
                           "__doc__": f"``{name}[\"axes\"]``: a {_dtype_name(dtype)} NamedArray with these axes."})


_DTYPES = {  # alias -> (dtype, jaxtyping's name for a plain array of it)
    "f32": (jnp.float32, "Float32"), "f64": (jnp.float64, "Float64"), "f16": (jnp.float16, "Float16"),
    "bf16": (jnp.bfloat16, "BFloat16"),
    "i8": (jnp.int8, "Int8"), "i16": (jnp.int16, "Int16"), "i32": (jnp.int32, "Int32"), "i64": (jnp.int64, "Int64"),
    "u8": (jnp.uint8, "UInt8"), "u16": (jnp.uint16, "UInt16"), "u32": (jnp.uint32, "UInt32"),
    "u64": (jnp.uint64, "UInt64"),
    "bool_": (jnp.bool_, "Bool"), "complex64": (jnp.complex64, "Complex64"),
    "complex128": (jnp.complex128, "Complex128"),
}
_CATEGORIES = {  # dtype families: any float, any signed int, ...
    "Float": ("float", jnp.floating, "Float"), "Complex": ("complex", jnp.complexfloating, "Complex"),
    "Int": ("int", jnp.signedinteger, "Int"), "UInt": ("uint", jnp.unsignedinteger, "UInt"),
}
for _alias, (_dtype, _jt) in _DTYPES.items():
    globals()[_alias] = _dtype_hint(_alias, _dtype, _jt)
for _alias, (_name, _cat, _jt) in _CATEGORIES.items():
    globals()[_alias] = _dtype_hint(_alias, DTypeCategory(_name, _cat), _jt)
del _alias, _dtype, _jt, _name, _cat


# --- run-time checks --------------------------------------------------------------------------

_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("namax_shape_checks", default=True)


@contextlib.contextmanager
def enable_shape_checks(enabled: bool) -> Iterator[bool]:
    """Turn the run-time checks of :func:`typecheck`-ed functions on or off inside the block;
    yields the previous setting (checks are on by default).

    namax's NamedArray constructor always checks its axes against the array's shape; this
    switch only governs the annotation checks.

    >>> with enable_shape_checks(False) as before:
    ...     before, are_shape_checks_enabled()
    (True, False)
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enable_shape_checks: expected True or False, got {enabled!r}")
    previous = _CHECKS.get()
    token = _CHECKS.set(enabled)
    try:
        yield previous
    finally:
        _CHECKS.reset(token)


def are_shape_checks_enabled() -> bool:
    """Whether :func:`typecheck`-ed functions check their arguments (see :func:`enable_shape_checks`).

    >>> are_shape_checks_enabled()
    True
    """
    return _CHECKS.get()


def check_shape(jnp_shape: Sequence[int], hax_axes: AxisSelection) -> tuple[Axis, ...]:
    """The Axes of an array of shape ``jnp_shape`` named by ``hax_axes``: names take their
    size from the shape, Axes must match it.

    >>> check_shape((2, 3), ("batch", Axis("embed", 3)))
    (Axis('batch', 2), Axis('embed', 3))
    """
    shape = tuple(jnp_shape)
    spec = axis_spec_to_shape_dict(hax_axes)
    if len(shape) != len(spec):
        raise ValueError(f"check_shape: shape {shape} has {len(shape)} dimensions but the axes {tuple(spec)} "
                         f"are {len(spec)}")
    out = []
    for (name, size), dim in zip(spec.items(), shape):
        if size is not None and size != dim:
            raise ValueError(f"check_shape: axis {name!r} has size {size} but the shape {shape} gives it {dim}")
        out.append(Axis(name, dim))
    return tuple(out)


def _named_spec(hint: Any) -> tuple[Optional[NamedArrayAxes], bool]:
    """The axes an annotation asks for (None: not a NamedArray annotation), and whether None is allowed."""
    if typing.get_origin(hint) is Annotated:
        found = [a for a in typing.get_args(hint)[1:] if isinstance(a, NamedArrayAxes)]
        return (found[0] if found else None), False
    if typing.get_origin(hint) is Union:
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _named_spec(rest[0])[0], True
    return None, False


def typecheck(fn: Callable) -> Callable:
    """Check, at each call, the arguments and the result annotated with a NamedArray hint
    (``f32["batch embed"]``, ``Named[NamedArray, "..."]``, or ``Optional`` of one).

    A mismatch raises ``TypeError`` naming the function, the argument, the axes and dtype it
    should have and what it got. Checks see only names and dtypes, so they also run while
    tracing under ``jit``; :func:`enable_shape_checks` turns them off.

    >>> import namax as nx
    >>> @typecheck
    ... def head_sum(x: Named[NamedArray, {"head", ...}]) -> NamedArray:
    ...     return nx.sum(x, "head")
    >>> head_sum(nx.ones(nx.make_axes(batch=2, head=4))).array.tolist()
    [4.0, 4.0]
    >>> head_sum(nx.ones(nx.make_axes(batch=2)))
    Traceback (most recent call last):
    ...
    TypeError: head_sum: argument 'x' should be NamedArray[{head, ...}], got a NamedArray with axes (batch:2) and dtype float32
    """
    signature = inspect.signature(fn)
    where = getattr(fn, "__qualname__", getattr(fn, "__name__", repr(fn)))

    @functools.lru_cache(maxsize=None)
    def checked_hints() -> dict:
        # resolved at the first call, so string annotations may name things defined after ``fn``
        hints = typing.get_type_hints(fn, include_extras=True)
        specs = {name: _named_spec(hint) for name, hint in hints.items()}
        return {name: spec for name, spec in specs.items() if spec[0] is not None}

    def check(what: str, value: Any, spec: NamedArrayAxes, optional: bool) -> None:
        if value is None and optional:
            return
        if spec.mismatch(value) is None:
            return
        got = (f"a NamedArray with axes {_axes_str(value.axes)} and dtype {value.dtype}"
               if isinstance(value, NamedArray) else f"a {type(value).__name__}")
        raise TypeError(f"{where}: {what} should be {spec!r}{' or None' if optional else ''}, got {got}")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not _CHECKS.get():
            return fn(*args, **kwargs)
        checked = checked_hints()
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            if name in checked and name != "return":
                kind = signature.parameters[name].kind
                values = value if kind is inspect.Parameter.VAR_POSITIONAL else \
                    value.values() if kind is inspect.Parameter.VAR_KEYWORD else (value,)
                for v in values:
                    check(f"argument {name!r}", v, *checked[name])
        out = fn(*args, **kwargs)
        if "return" in checked:
            check("the return value", out, *checked["return"])
        return out

    return wrapper


# --- reduction function protocols -------------------------------------------------------------

class ReductionFunction(Protocol):
    """The shape of a named reduction that takes ``where=``: ``f(array, axis=None, where=None, **kw)``.

    >>> import namax as nx
    >>> f: ReductionFunction = nx.sum
    >>> f(nx.ones(nx.Axis("embed", 3)), "embed").item()
    3.0
    """

    def __call__(self, array: NamedArray, axis: Optional[AxisSelection] = None, where: Optional[NamedArray] = None,
                 **kwargs: Any) -> NamedArray: ...


class SimpleReductionFunction(Protocol):
    """The shape of a named reduction over at most one axis: ``f(array, axis=None, **kw)``.

    >>> import namax as nx
    >>> f: SimpleReductionFunction = nx.argmax
    >>> f(nx.named(jnp.array([1, 5, 2]), "vocab"), "vocab").item()
    1
    """

    def __call__(self, array: NamedArray, axis: Optional[AxisSelector] = None, **kwargs: Any) -> NamedArray: ...


__all__ = [
    "Named", "f32", "f64", "f16", "bf16", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "bool_",
    "complex64", "complex128", "Float", "Complex", "Int", "UInt",
    "NamedArrayAxes", "NamedArrayAxesSpec", "DTypeCategory", "parse_axes", "typecheck",
    "check_shape", "enable_shape_checks", "are_shape_checks_enabled", "ReductionFunction", "SimpleReductionFunction",
]
