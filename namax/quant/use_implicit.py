"""``use_implicit_args``: run any function on implicit arrays.

The function is traced once per (tree structure, avals, static leaves) on the *logical*
avals of its implicit arguments (``jax.make_jaxpr``), then the jaxpr is interpreted with
the real values: an equation whose inputs include implicit arrays goes to the handlers
(:mod:`namax.quant.handlers`), everything else is re-bound as is. Values may be tracers,
so the result composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Hashable, Optional, Sequence

import jax
import numpy as np

from ..arguments import Static
from . import handlers
from .implicit import ImplicitArray, _split, is_implicit
from .interpret import ImplicitInterpreter


def _is_dynamic(x: Any) -> bool:
    return is_implicit(x) or isinstance(x, (jax.Array, np.ndarray, np.generic))


def _spec(x: Any) -> jax.ShapeDtypeStruct:
    if is_implicit(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def use_implicit_args(fn: Callable) -> Callable:
    """``fn`` accepting :class:`ImplicitArray` values anywhere in its (keyword) arguments.

    >>> import jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> f = use_implicit_args(lambda x, y: x * y)
    >>> f(Zeros(shape=(2,)), jnp.ones(2))
    Zeros((2,), float32)
    """
    cache: dict = {}
    interpreter = ImplicitInterpreter()

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=is_implicit)
        dynamic = [x for x in leaves if _is_dynamic(x)]
        statics = tuple(Static(x) for x in leaves if not _is_dynamic(x))
        kinds = tuple(_is_dynamic(x) for x in leaves)
        specs = [_spec(x) for x in dynamic]
        key = (treedef, kinds, tuple((s.shape, s.dtype, s.weak_type) for s in specs), statics)
        entry = cache.get(key)
        if entry is None:
            entry = _trace(fn, treedef, kinds, [s.value for s in statics], specs)
            if not any(isinstance(c, jax.core.Tracer) for c in entry[0].consts):
                cache[key] = entry
        closed, out_kinds, out_statics, out_tree = entry
        outs = iter(interpreter.run(closed, *dynamic))
        static_it = iter(out_statics)
        out_leaves = [next(outs) if k else next(static_it) for k in out_kinds]
        return jax.tree_util.tree_unflatten(out_tree, out_leaves)

    wrapped.__namax_implicit_cache__ = cache
    return wrapped


def quaxify(fn: Callable) -> Callable:
    """Quax's spelling of :func:`use_implicit_args` (an alias).

    >>> import jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> quaxify(lambda x, y: x + y)(Zeros(shape=(2,)), jnp.ones(2)).tolist()
    [1.0, 1.0]
    """
    return use_implicit_args(fn)


def call_one_layer(fn: Callable, args: Sequence[Any], kwargs: Optional[dict] = None) -> Any:
    """``fn(*args, **kwargs)`` with each implicit argument opened one layer: ``fn`` runs under
    :func:`use_implicit_args` on the arguments' children, so whatever it does to an implicit
    child goes through that child's handlers (how Qax runs handlers and ``materialize`` of
    nested implicit arrays).

    >>> import dataclasses, jax.numpy as jnp
    >>> from namax.quant.implicit import ArrayValue, ImplicitArray
    >>> from namax.quant.zeros import Zeros
    >>> @dataclasses.dataclass
    ... class Shifted(ImplicitArray):
    ...     x: ArrayValue
    ...     def materialize(self):
    ...         return self.x + 1.0
    >>> call_one_layer(lambda s: s.x * 2.0, (Shifted(Zeros(shape=(2,))),))  # Zeros' mul handler
    Zeros((2,), float32)
    """
    kwargs = {} if kwargs is None else kwargs
    parts = [_split(a) if is_implicit(a) else (a, None) for a in args]

    def opened(*payload: Any) -> Any:
        rebuilt = [p if rebuild is None else rebuild(list(p)) for p, (_, rebuild) in zip(payload, parts)]
        return fn(*rebuilt, **kwargs)

    return use_implicit_args(opened)(*[p for p, _ in parts])


handlers.set_nested_caller(call_one_layer)


def _trace(fn: Callable, treedef: Any, kinds: tuple, statics: list, specs: list):
    box: dict[str, Hashable] = {}

    def flat_fn(*dyn: Any) -> list:
        dyn_it, static_it = iter(dyn), iter(statics)
        leaves = [next(dyn_it) if k else next(static_it) for k in kinds]
        args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
        out = fn(*args, **kwargs)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out)
        out_kinds = tuple(isinstance(x, (jax.Array, np.ndarray, np.generic)) for x in out_leaves)
        box["kinds"], box["tree"] = out_kinds, out_tree
        box["statics"] = [x for x, k in zip(out_leaves, out_kinds) if not k]
        return [x for x, k in zip(out_leaves, out_kinds) if k]

    closed = jax.make_jaxpr(flat_fn)(*specs)
    return closed, box["kinds"], box["statics"], box["tree"]


def implicit_leaves(tree: Any) -> list[ImplicitArray]:
    """The outermost implicit arrays in ``tree``.

    >>> import jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> implicit_leaves({"w": Zeros(shape=(2, 3)), "b": jnp.ones(3)})
    [Zeros((2, 3), float32)]
    """
    return [x for x in jax.tree_util.tree_leaves(tree, is_leaf=is_implicit) if is_implicit(x)]
