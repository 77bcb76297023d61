"""Debugging helpers: shardings by axis name, array descriptions, common module problems.

>>> import namax as nx
>>> nx.debug.describe_array(nx.zeros(nx.make_axes(embed=4)))
"NamedArray(axes=(Axis('embed', 4),), dtype=float32)"
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding

from .axis import Axis
from .named import NamedArray


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def describe_array(arr: Any) -> str:
    """A one-line description of an array: axes (or shape) and dtype, never the values.

    >>> import numpy as np, jax.numpy as jnp, namax as nx
    >>> describe_array(nx.zeros(nx.make_axes(batch=2, embed=3)))
    "NamedArray(axes=(Axis('batch', 2), Axis('embed', 3)), dtype=float32)"
    >>> describe_array(jnp.zeros((3, 4), jnp.int32)), describe_array(np.zeros(2))
    ('Array(shape=(3, 4), dtype=int32)', 'ndarray(shape=(2,), dtype=float64)')
    >>> describe_array(3.0)
    'float(3.0)'
    """
    if isinstance(arr, NamedArray):
        return f"NamedArray(axes={arr.axes!r}, dtype={np.dtype(arr.dtype).name})"
    if isinstance(arr, jax.Array):
        return f"Array(shape={tuple(arr.shape)}, dtype={np.dtype(arr.dtype).name})"
    if hasattr(arr, "shape") and hasattr(arr, "dtype"):
        return f"{type(arr).__name__}(shape={tuple(arr.shape)}, dtype={np.dtype(arr.dtype).name})"
    return f"{type(arr).__name__}({arr!r})"


def _dim_targets(sharding: Sharding, ndim: int) -> Optional[list]:
    """The mesh axes of each dimension (a tuple, empty when unsharded), or None when not a NamedSharding."""
    if not isinstance(sharding, NamedSharding):
        return None
    entries = list(sharding.spec) + [None] * (ndim - len(sharding.spec))
    out = []
    for e in entries[:ndim]:
        if e is None or e is PartitionSpec.UNCONSTRAINED:
            out.append(())
        else:
            out.append((e,) if isinstance(e, str) else tuple(e))
    return out


def _named_text(axes: Sequence[Axis], sharding: Sharding) -> str:
    """``(embed:16 -> data, mlp:32 -> unsharded)``, or a description of a sharding that is not by mesh axes."""
    targets = _dim_targets(sharding, len(axes))
    if targets is None:
        return f"({', '.join(f'{a.name}:{a.size}' for a in axes)}) {_other_sharding_text(sharding)}"
    parts = []
    for ax, t in zip(axes, targets):
        where = "unsharded" if not t else t[0] if len(t) == 1 else "(" + ", ".join(t) + ")"
        parts.append(f"{ax.name}:{ax.size} -> {where}")
    return "(" + ", ".join(parts) + ")"


def _other_sharding_text(sharding: Sharding) -> str:
    n = len(sharding.device_set)
    if n == 1:
        return f"on one device ({next(iter(sharding.device_set))})"
    if sharding.is_fully_replicated:
        return f"replicated on {n} devices"
    return f"sharded over {n} devices ({type(sharding).__name__})"


def visualize_named_sharding(axes: Sequence[Axis], sharding: Sharding, *, grid: bool = False) -> str:
    """Print, and return, which mesh axes each named axis is sharded over.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> Embed, Mlp = nx.make_axes(embed=16, mlp=32)
    >>> s = jax.sharding.NamedSharding(mesh, jax.P("data"))
    >>> text = visualize_named_sharding((Embed, Mlp), s)
    (embed:16 -> data, mlp:32 -> unsharded)

    ``grid=True`` also draws the device grid with ``jax.debug.visualize_sharding``
    (arrays of one or two axes only).
    """
    axes = tuple(axes)
    for a in axes:
        if not isinstance(a, Axis):
            raise TypeError(f"visualize_named_sharding: axes must be Axis objects (with sizes), got {a!r}")
    if not isinstance(sharding, Sharding):
        raise TypeError(f"visualize_named_sharding: expected a jax.sharding.Sharding, got {sharding!r}")
    if grid:
        _grid(axes, sharding)
    text = _named_text(axes, sharding)
    print(text)
    return text


def _grid(axes: Sequence[Axis], sharding: Sharding) -> None:
    if len(axes) not in (1, 2):
        raise ValueError(f"visualize_named_sharding: grid=True draws arrays of one or two axes; these have "
                         f"{len(axes)}: {tuple(a.name for a in axes)}")
    jax.debug.visualize_sharding(tuple(a.size for a in axes), sharding)


def _leaf_text(x: Any) -> Optional[str]:
    array = x.array if isinstance(x, NamedArray) else x
    if not _is_array(array):
        return None
    sharding = getattr(array, "sharding", None) if not isinstance(array, jax.core.Tracer) else None
    if sharding is None:
        what = "traced: sharding not known here" if isinstance(array, jax.core.Tracer) else "host array, not placed"
        if isinstance(x, NamedArray):
            return "(" + ", ".join(f"{a.name}:{a.size}" for a in x.axes) + f") {what}"
        return f"shape {tuple(array.shape)} {what}"
    if isinstance(x, NamedArray):
        return _named_text(x.axes, sharding)
    targets = _dim_targets(sharding, array.ndim)
    if targets is None:
        return f"shape {tuple(array.shape)} {_other_sharding_text(sharding)}"
    dims = [f"dim {i}:{s} -> {'unsharded' if not t else t[0] if len(t) == 1 else '(' + ', '.join(t) + ')'}"
            for i, (s, t) in enumerate(zip(array.shape, targets))]
    return "(" + ", ".join(dims) + ")" if dims else "(scalar)"


def visualize_shardings(tree: Any, *, grid: bool = False) -> str:
    """Print, and return, the sharding of each array in ``tree``: NamedArrays by axis name.

    >>> import numpy as np, jax, jax.numpy as jnp, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> Embed, Mlp = nx.make_axes(embed=16, mlp=32)
    >>> params = nx.shard({"w1": nx.zeros((Embed, Mlp)), "step": jnp.zeros(())}, {"embed": "data"}, mesh)
    >>> text = visualize_shardings({"params": params})
    params.step  (scalar)
    params.w1  (embed:16 -> data, mlp:32 -> unsharded)

    Plain arrays are shown by dimension number; leaves that are not arrays are skipped.
    Inside ``jax.jit`` the shardings are not known yet, which the text says.
    ``grid=True`` also draws each one- or two-dimensional array's device grid with
    ``jax.debug.visualize_sharding``.
    """
    lines = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, NamedArray))[0]:
        text = _leaf_text(leaf)
        if text is None:
            continue
        name = jax.tree_util.keystr(path, simple=True, separator=".")
        if grid and not isinstance(leaf.array if isinstance(leaf, NamedArray) else leaf, jax.core.Tracer):
            array = leaf.array if isinstance(leaf, NamedArray) else leaf
            if array.ndim in (1, 2) and isinstance(array, jax.Array):
                print(name or "<root>")
                jax.debug.visualize_sharding(array.shape, array.sharding)
        lines.append(f"{name}  {text}" if name else text)
    out = "\n".join(lines)
    print(out)
    return out


class ModuleProblems(Exception):
    """What :func:`diagnose_common_issues` found: arrays stored in more than one place
    (``reused_arrays``: (array, paths) pairs) and arrays stored in static fields
    (``static_arrays``: paths).

    >>> p = ModuleProblems(static_arrays=[".table"])
    >>> print(p)
    Found some problems with your module:
      Static array at field .table
    """

    def __init__(self, reused_arrays: Sequence[tuple[Any, list[str]]] = (), static_arrays: Sequence[str] = ()):
        self.reused_arrays = list(reused_arrays)
        self.static_arrays = list(static_arrays)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = ["Found some problems with your module:"]
        for array, paths in self.reused_arrays:
            lines.append(f"  Reused array {describe_array(array)} at paths {paths}")
        for path in self.static_arrays:
            lines.append(f"  Static array at field {path}")
        return "\n".join(lines)

    def __reduce__(self):
        return type(self), (self.reused_arrays, self.static_arrays)


def diagnose_common_issues(module: Any) -> None:
    """Raise :class:`ModuleProblems` if ``module`` stores one array in two places or an
    array in a static field; return None otherwise.

    Equinox modules (and so namax layers) should hold each array once (two fields holding
    the same array become two independent copies after a tree_map, e.g. an update) and
    never in a static field (static fields are hashed and compared as jit cache keys, and
    are not updated by gradients). ``module`` may be any pytree.

    >>> import equinox as eqx, jax.numpy as jnp, namax as nx
    >>> class Tied(eqx.Module):
    ...     embed: nx.NamedArray
    ...     unembed: nx.NamedArray
    >>> w = nx.zeros(nx.make_axes(vocab=8, embed=4))
    >>> diagnose_common_issues(Tied(w, nx.zeros(w.axes)))  # no problem: returns None
    >>> diagnose_common_issues(Tied(w, w))
    Traceback (most recent call last):
    ...
    namax.debug.ModuleProblems: Found some problems with your module:
      Reused array NamedArray(axes=(Axis('vocab', 8), Axis('embed', 4)), dtype=float32) at paths ['.embed', '.unembed']
    """
    import equinox as eqx

    seen: dict[int, tuple[Any, list[str]]] = {}
    static: list[str] = []

    def record(x: Any, path: str) -> None:
        array = x.array if isinstance(x, NamedArray) else x
        entry = seen.setdefault(id(array), (x, []))
        entry[1].append(path)

    def has_array(value: Any) -> bool:
        return any(_is_array(leaf) or isinstance(leaf, NamedArray)
                   for leaf in jax.tree_util.tree_leaves(value, is_leaf=lambda x: isinstance(x, NamedArray)))

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, eqx.Module):
            for f in dataclasses.fields(obj):
                if not hasattr(obj, f.name):
                    continue
                value = getattr(obj, f.name)
                if f.metadata.get("static", False):
                    if has_array(value):
                        static.append(f"{path}.{f.name}")
                else:
                    visit(value, f"{path}.{f.name}")
            return
        if isinstance(obj, NamedArray) or _is_array(obj):
            record(obj, path)
            return
        leaves = jax.tree_util.tree_flatten_with_path(
            obj, is_leaf=lambda x: x is not obj and isinstance(x, (eqx.Module, NamedArray)))[0]
        if len(leaves) == 1 and leaves[0][1] is obj:  # a leaf that is not an array: nothing to check
            return
        for p, leaf in leaves:
            visit(leaf, path + jax.tree_util.keystr(p))

    visit(module, "")
    reused = [(x, paths) for x, paths in seen.values() if len(paths) > 1]
    if reused or static:
        raise ModuleProblems(reused, static)
    return None


__all__ = ["visualize_shardings", "visualize_named_sharding", "describe_array", "diagnose_common_issues",
           "ModuleProblems"]
