"""Names for the inputs of a call: NamedArray axes, or ``in_axes`` for plain arrays.

``in_axes`` has one entry per positional argument: None (unnamed), a tuple of names (a
string, an :class:`~namax.Axis` or None per dimension) for an array, or a container
matching the argument's structure (a pytree prefix) for a pytree argument.

>>> import jax.numpy as jnp
>>> value_names((jnp.ones((2, 3)), {"w": jnp.ones(3)}), {}, in_axes=(("batch", "embed"), {"w": ("embed",)}))
[('batch', 'embed'), ('embed',)]
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax

from .axis import Axis
from .named import NamedArray
from .quant.implicit import is_implicit, leaf_names_of


def is_unit(x: Any) -> bool:
    """A NamedArray or an implicit array: one logical value, possibly several leaves."""
    return isinstance(x, NamedArray) or is_implicit(x)


Names = Optional[tuple]


def value_names(args: Sequence[Any], kwargs: dict, in_axes: Optional[Sequence[Any]] = None) -> list[Names]:
    """One entry per value of ``(args, kwargs)`` -- a NamedArray, an implicit array or an
    array, in flattening order --: its axis names (from the NamedArray or ``in_axes``) or None.
    """
    if in_axes is None:
        in_axes = (None,) * len(args)
    if not isinstance(in_axes, (tuple, list)) or len(in_axes) != len(args):
        count = len(in_axes) if isinstance(in_axes, (tuple, list)) else "no list of"
        raise ValueError(f"in_axes has {count} entries for {len(args)} positional arguments "
                         f"(it takes one entry per argument): {in_axes!r}")
    out: list = []
    for i, (spec, arg) in enumerate(zip(in_axes, args)):
        logical = jax.tree_util.tree_map(
            lambda u: jax.ShapeDtypeStruct(u.shape, u.dtype) if is_implicit(u) else u, arg, is_leaf=is_implicit)
        out.extend(_leaf_names(spec, logical, f"argument {i}"))
    out.extend(x.axis_names if isinstance(x, NamedArray) else None
               for x in jax.tree_util.tree_leaves(kwargs, is_leaf=is_unit))
    return [None if n is None else tuple(getattr(a, "name", a) for a in n) for n in out]


def leaf_names(args: Sequence[Any], kwargs: dict, in_axes: Optional[Sequence[Any]] = None) -> list[Names]:
    """:func:`value_names` expanded to one entry per array leaf (``jax.tree_util.tree_flatten``
    order): an implicit array's parts get names by its ``child_names``."""
    values = jax.tree_util.tree_leaves((tuple(args), kwargs), is_leaf=is_unit)
    out: list = []
    for value, names in zip(values, value_names(args, kwargs, in_axes)):
        out.extend(leaf_names_of(value.array if isinstance(value, NamedArray) else value, names))
    return out


def _is_names(spec: Any) -> bool:
    return isinstance(spec, (tuple, list)) and all(s is None or isinstance(s, (str, Axis)) for s in spec)


def _is_array(x: Any) -> bool:
    if isinstance(x, NamedArray):
        return False
    return isinstance(x, (bool, int, float, complex)) or (hasattr(x, "shape") and hasattr(x, "dtype"))


def _leaf_names(spec: Any, arg: Any, where: str) -> list:
    """One entry per array leaf of ``arg`` (in tree-flatten order): a names tuple or None."""
    if isinstance(arg, NamedArray):
        own = arg.axis_names
        given = None if spec is None else tuple(getattr(s, "name", s) for s in spec) if _is_names(spec) else spec
        if given is not None and given != own:
            raise ValueError(f"in_axes: {where} is a NamedArray with axes {own} but in_axes gives {spec!r}")
        return [own]
    if spec is None:
        return [x.axis_names if isinstance(x, NamedArray) else None
                for x in jax.tree_util.tree_leaves(arg, is_leaf=lambda x: isinstance(x, NamedArray))]
    if not _is_array(arg) and not jax.tree_util.tree_leaves(arg):
        return []
    if _is_array(arg):
        if not _is_names(spec):
            raise ValueError(f"in_axes: {where} is an array of shape {getattr(arg, 'shape', ())} "
                             f"but in_axes gives {spec!r}, not a tuple of names")
        ndim = len(getattr(arg, "shape", ()))
        if len(spec) != ndim:
            raise ValueError(f"in_axes: {where} has shape {getattr(arg, 'shape', ())} "
                             f"but in_axes gives {len(spec)} names {tuple(spec)}")
        return [tuple(spec)]
    if _is_names(spec) and not any(isinstance(s, (str, Axis)) for s in spec):
        return _leaf_names(None, arg, where)
    if _is_names(spec) and jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(arg)):
        raise ValueError(f"in_axes: {where} is {type(arg).__name__} {arg!r}, not an array, but in_axes gives it "
                         f"the names {tuple(spec)}: only arrays can be named (give None for static leaves)")
    leaves, structure = jax.tree_util.tree_flatten(spec, is_leaf=lambda s: s is None or _is_names(s))
    try:
        parts = structure.flatten_up_to(arg)
    except (ValueError, TypeError) as e:
        raise ValueError(f"in_axes: in_axes for {where} ({spec!r}) does not match its structure: {e}") from None
    out: list = []
    for k, (s, part) in enumerate(zip(leaves, parts)):
        out.extend(_leaf_names(s, part, f"{where}, leaf {k}"))
    return out


__all__ = ["is_unit", "value_names", "leaf_names"]
