"""A call's arguments, split once: array leaves are traced, every other leaf is static.

The split follows Equinox's ``filter_jit``: JAX and NumPy arrays are traced; functions,
strings, Python numbers, ``None`` fields and anything else that is not an array are held
static (part of the cache key, by value when hashable, else by identity). Every path of
:func:`namax.namedjit` (call, ``.lower()``, ``.trace()``) and :func:`namax.dump` uses the
same :func:`split_call`, so they all see the same program.

>>> import jax.numpy as jnp
>>> key, dyn_args, dyn_kwargs = split_call((jnp.ones(2), "relu", [jnp.zeros(3), len]), {"scale": 2.0})
>>> [len(leaves) for leaves in dyn_args], dyn_kwargs
([1, 0, 1], {'scale': []})
>>> args, kwargs = join_call(key, dyn_args, dyn_kwargs)
>>> args[1], args[2][1] is len, kwargs
('relu', True, {'scale': 2.0})
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)
"""What is traced: JAX arrays (tracers included) and NumPy arrays and scalars."""


_ARRAY_LEAF_TYPES: set[type] = set()
"""Exact types already seen to be arrays (``jax.Array`` implementations, ``np.ndarray``,
NumPy scalars): one set lookup instead of ``isinstance`` against ``jax.Array``'s metaclass for
the leaves of every call. Tracers are never added: whether a tracer is a ``jax.Array``
depends on its value, not its type."""

_TRACER = jax.core.Tracer


def _is_array_slow(x: Any) -> bool:
    if isinstance(x, ARRAY_TYPES):
        t = type(x)
        if not issubclass(t, _TRACER) and len(_ARRAY_LEAF_TYPES) < 256:
            _ARRAY_LEAF_TYPES.add(t)
        return True
    return False


def is_array(x: Any) -> bool:
    """True for a leaf that is traced (a JAX or NumPy array).

    >>> is_array(jax.numpy.ones(2)), is_array(1.0), is_array(len)
    (True, False, False)
    """
    return type(x) in _ARRAY_LEAF_TYPES or _is_array_slow(x)


class Static:
    """One static value in a cache key: compared by value when hashable, else by identity.

    >>> Static("relu") == Static("relu"), Static([1]) == Static([1])
    (True, False)
    """

    __slots__ = ("value", "_hash", "_by_value")

    def __init__(self, value: Any):
        self.value = value
        try:
            self._hash = hash((type(value), value))
            self._by_value = True
        except TypeError:
            self._hash = id(value)
            self._by_value = False

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Static) or self._by_value != other._by_value or self._hash != other._hash:
            return False
        if not self._by_value:
            return self.value is other.value
        if type(self.value) is not type(other.value):
            return False
        try:
            return bool(self.value == other.value)
        except Exception:  # noqa: BLE001 -- an __eq__ that returns an array or raises
            return self.value is other.value

    def __repr__(self) -> str:
        return f"Static({self.value!r})"


class CallKey:
    """The static half of a call, hashable: the structure of each argument, which leaves
    are arrays, the static leaves and the static arguments.

    Two calls with equal keys and equal array shapes run the same compiled program.
    """

    __slots__ = ("arg_trees", "kw_names", "kw_trees", "masks", "statics", "_parts", "_hash")

    def __init__(self, arg_trees: tuple, kw_names: tuple, kw_trees: tuple, masks: tuple, statics: tuple):
        self.arg_trees, self.kw_names, self.kw_trees = arg_trees, kw_names, kw_trees
        self.masks, self.statics = masks, statics
        self._parts = (masks, arg_trees, kw_names, kw_trees, statics)  # compared in one go, cheapest first
        self._hash = hash(self._parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: Any) -> bool:
        # jax.jit compares the key of every call with the cached one (the key is a static argument)
        return self is other or (isinstance(other, CallKey) and self._hash == other._hash
                                 and self._parts == other._parts)

    @property
    def has_statics(self) -> bool:
        return bool(self.statics)


_STATIC_ARG = None
"""The tree of an argument passed through ``static_argnums``: held whole, as one static value."""

_tree_flatten = jax.tree_util.tree_flatten


def _split_leaves(leaves: list, statics: list) -> tuple[tuple, list]:
    """``(mask, array leaves)`` of a flattened argument; its other leaves go to ``statics``."""
    if _ARRAY_LEAF_TYPES.issuperset(map(type, leaves)):  # the common case: every leaf an array
        return (True,) * len(leaves), leaves
    mask = tuple(map(is_array, leaves))
    if all(mask):
        return mask, leaves
    statics.extend(Static(x) for x, m in zip(leaves, mask) if not m)
    return mask, [x for x, m in zip(leaves, mask) if m]


def _split_one(value: Any, static: bool, statics: list) -> tuple[Any, tuple, list]:
    if static:
        statics.append(Static(value))
        return _STATIC_ARG, (), []
    leaves, tree = _tree_flatten(value)
    mask, dyn = _split_leaves(leaves, statics)
    return tree, mask, dyn


def split_call(args: Sequence[Any], kwargs: dict, static_argnums: Sequence[int] = (),
               static_argnames: Sequence[str] = ()) -> tuple[CallKey, list[list], dict[str, list]]:
    """``(key, dyn_args, dyn_kwargs)``: per positional and keyword argument, the list of its
    array leaves; everything else is in ``key``. :func:`join_call` inverts it."""
    statics: list = []
    arg_trees, masks, dyn_args = [], [], []
    for i, a in enumerate(args):  # every call of a namedjit function comes here: kept tight
        if static_argnums and i in static_argnums:
            statics.append(Static(a))
            arg_trees.append(_STATIC_ARG)
            masks.append(())
            dyn_args.append([])
            continue
        leaves, tree = _tree_flatten(a)
        mask, dyn = _split_leaves(leaves, statics)
        arg_trees.append(tree)
        masks.append(mask)
        dyn_args.append(dyn)
    if not kwargs:
        return CallKey(tuple(arg_trees), (), (), tuple(masks), tuple(statics)), dyn_args, {}
    kw_names = tuple(sorted(kwargs))
    kw_trees, dyn_kwargs = [], {}
    for name in kw_names:
        tree, mask, dyn = _split_one(kwargs[name], name in static_argnames, statics)
        kw_trees.append(tree)
        masks.append(mask)
        dyn_kwargs[name] = dyn
    key = CallKey(tuple(arg_trees), kw_names, tuple(kw_trees), tuple(masks), tuple(statics))
    return key, dyn_args, dyn_kwargs


def join_call(key: CallKey, dyn_args: Sequence[Sequence[Any]], dyn_kwargs: dict) -> tuple[tuple, dict]:
    """The arguments :func:`split_call` split, with ``dyn_*`` (e.g. tracers) as their arrays."""
    statics = iter(key.statics)
    trees = list(key.arg_trees) + list(key.kw_trees)
    dyns = list(dyn_args) + [dyn_kwargs[n] for n in key.kw_names]
    values = []
    for tree, mask, dyn in zip(trees, key.masks, dyns):
        if tree is _STATIC_ARG:
            values.append(next(statics).value)
            continue
        it = iter(dyn)
        leaves = [next(it) if m else next(statics).value for m in mask]
        values.append(jax.tree_util.tree_unflatten(tree, leaves))
    n = len(key.arg_trees)
    return tuple(values[:n]), dict(zip(key.kw_names, values[n:]))


@jax.tree_util.register_pytree_node_class
class StaticOut:
    """A non-array output leaf carried through ``jax.jit`` in the tree structure (no children)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def tree_flatten(self):
        return (), Static(self.value)

    @classmethod
    def tree_unflatten(cls, aux: Static, children: Any) -> "StaticOut":
        return cls(aux.value)


def wrap_static_outputs(leaves: Sequence[Any]) -> list:
    """Output leaves with every non-array replaced by a :class:`StaticOut`."""
    return [x if is_array(x) else StaticOut(x) for x in leaves]


def unwrap_static_outputs(tree: Any) -> Any:
    """``tree`` with each :class:`StaticOut` replaced by its value."""
    return jax.tree_util.tree_map(lambda x: x.value if isinstance(x, StaticOut) else x, tree,
                                  is_leaf=lambda x: isinstance(x, StaticOut))


__all__ = ["ARRAY_TYPES", "is_array", "Static", "CallKey", "split_call", "join_call", "StaticOut",
           "wrap_static_outputs", "unwrap_static_outputs"]
