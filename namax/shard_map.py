"""A named ``shard_map``: the in and out specs come from the axis names and the axis mapping.

``jax.shard_map`` needs one ``PartitionSpec`` per argument and per output, by position.
:func:`shard_map` derives them from the :class:`~namax.NamedArray` axes and the axis
mapping (``{"batch": "data"}``): inside ``f`` each NamedArray arrives as its local block,
with the same axis names and the sizes of the block; the outputs are reassembled with
their global sizes. :func:`set_mesh` is Haliax's spelling of ``jax.set_mesh``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, PartitionSpec

from .named import NamedArray
from .partitioning import (
    Partitioning, ResourceMapping, ShardingError, _CURRENT, current_axis_mapping, current_partitioning,
    normalize_mapping,
)

AnyMesh = Union[Mesh, AbstractMesh]


def _is_named(x: Any) -> bool:
    return isinstance(x, NamedArray)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, PartitionSpec)


def _path(prefix: str, path: Sequence[Any]) -> str:
    return prefix + jax.tree_util.keystr(tuple(path))


def _mesh_axes(target: Any) -> tuple[str, ...]:
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def _entry(axes: tuple[str, ...]) -> Any:
    if not axes:
        return None
    return axes[0] if len(axes) == 1 else axes


def _resolve_check(check_rep: Optional[bool], check_vma: Optional[bool]) -> bool:
    if check_rep is not None and check_vma is not None and bool(check_rep) != bool(check_vma):
        raise ValueError(f"shard_map: check_rep={check_rep} and check_vma={check_vma} disagree (they are the same "
                         f"switch: check_rep is its older name); pass one of them")
    value = check_vma if check_vma is not None else check_rep
    return True if value is None else bool(value)


def _resolve_mesh(mesh: Optional[AnyMesh]) -> tuple[Optional[AnyMesh], Optional[AnyMesh]]:
    """(the mesh to hand to ``jax.shard_map``, the mesh whose shape we use); (None, None): no mesh."""
    if mesh is not None:
        if not isinstance(mesh, (Mesh, AbstractMesh)):
            raise TypeError(f"shard_map: mesh must be a jax.sharding.Mesh or AbstractMesh, got {mesh!r} "
                            f"({type(mesh).__name__})")
        return mesh, mesh
    p = current_partitioning()
    if p is not None and p.mesh is not None:
        return p.mesh, p.mesh
    context = jax.sharding.get_abstract_mesh()  # works inside jax.jit too, unlike get_mesh
    if context is not None and context.axis_names:
        return None, context  # jax.shard_map takes the context mesh itself
    return None, None


def shard_map(f: Optional[Callable] = None, *, in_specs: Any = None, out_specs: Any = None,
              mesh: Optional[AnyMesh] = None, axis_mapping: Optional[ResourceMapping] = None,
              check_rep: Optional[bool] = None, check_vma: Optional[bool] = None,
              axis_names: Optional[Sequence[str]] = None, **shmap_kwargs: Any) -> Callable:
    """``jax.shard_map`` with the specs inferred from axis names and the axis mapping.

    >>> import numpy as np, jax, jax.numpy as jnp, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> Batch, Embed = nx.make_axes(batch=4, embed=3)
    >>> x = nx.ones((Batch, Embed))
    >>> def local_sum(x):  # x is this device's block of the batch
    ...     return nx.sum(x, "embed"), jax.lax.psum(nx.sum(x).array, "data")
    >>> per_row, total = nx.shard_map(local_sum, mesh=mesh, axis_mapping={"batch": "data"})(x)
    >>> per_row.axes, float(total)
    ((Axis('batch', 4),), 12.0)

    With a mesh of 4 devices on ``"data"``, ``x`` would arrive in ``local_sum`` with axes
    ``(batch:1, embed:3)``, and ``per_row`` would still come back as ``batch:4``.

    * The mesh is ``mesh=``, else the mesh of the innermost :func:`namax.axis_mapping`,
      else the context mesh (``jax.set_mesh`` / :func:`set_mesh`; inside ``jax.jit`` too).
    * The mapping is ``axis_mapping=``, else the current :func:`namax.axis_mapping`. It is
      required whenever a spec is inferred (pass ``{}`` to replicate everything).
    * ``in_specs`` (default: inferred) is a prefix of the positional arguments with
      ``PartitionSpec`` leaves (``None`` = replicated); keyword arguments are always
      inferred. An inferred spec shards each axis of a NamedArray over the mesh axes it is
      mapped to (strictly: a size that does not divide, a mesh axis used twice in one
      array or a mesh axis the mesh lacks is a :class:`~namax.ShardingError` naming the
      argument, the axis and the sizes); plain arrays are replicated; other leaves
      (Python numbers, strings, ...) are passed to ``f`` as they are.
    * ``out_specs`` (default: inferred) is a prefix of the output. Inferring it traces
      ``f`` once more with ``jax.eval_shape`` on the local shapes (so ``f``'s Python side
      effects happen twice). An inferred output axis mapped to mesh axes is a local
      block: its global size is its local size times those mesh axes' sizes. Plain arrays
      are replicated. Outputs must be arrays or NamedArrays.
    * ``check_vma`` (``check_rep`` is Haliax's older name for it) defaults to True, as in
      JAX (Haliax defaults to False): an output that varies over a mesh axis none of its
      axes is mapped to is then an error instead of one device's value.
    * ``axis_names`` (the mesh axes ``f`` is manual over; default all) and any other
      keyword go to ``jax.shard_map``. Inferred specs leave out mesh axes outside
      ``axis_names``.

    Also usable as a decorator: ``@nx.shard_map`` or ``@nx.shard_map(mesh=mesh)``.
    """
    if f is None:
        return functools.partial(shard_map, in_specs=in_specs, out_specs=out_specs, mesh=mesh,
                                 axis_mapping=axis_mapping, check_rep=check_rep, check_vma=check_vma,
                                 axis_names=axis_names, **shmap_kwargs)
    if not callable(f):
        raise TypeError(f"shard_map: f must be callable, got {f!r}")
    check = _resolve_check(check_rep, check_vma)
    fixed_mapping = normalize_mapping(axis_mapping)
    if mesh is not None and not isinstance(mesh, (Mesh, AbstractMesh)):
        raise TypeError(f"shard_map: mesh must be a jax.sharding.Mesh or AbstractMesh, got {mesh!r} "
                        f"({type(mesh).__name__})")
    fname = getattr(f, "__name__", repr(f))

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mapping = fixed_mapping if fixed_mapping is not None else current_axis_mapping()
        if mapping is None:
            kw_named = [k for k, v in kwargs.items()
                        if any(isinstance(leaf, NamedArray) for leaf in jax.tree_util.tree_leaves(v, is_leaf=_is_named))]
            missing = ("in_specs" if in_specs is None else "out_specs" if out_specs is None else
                       f"specs of the keyword arguments {kw_named}" if kw_named else None)
            if missing is not None:
                raise ValueError(f"shard_map({fname}): no axis mapping given and none active, so the {missing} cannot "
                                 f"be inferred: pass axis_mapping= (e.g. {{'batch': 'data'}}; {{}} replicates "
                                 f"everything), use namax.axis_mapping, or pass in_specs= and out_specs= (keyword "
                                 f"arguments are always inferred)")
        mapping = mapping or {}
        jax_mesh, mesh_ = _resolve_mesh(mesh)
        leaves, treedef = jax.tree_util.tree_flatten_with_path((args, kwargs), is_leaf=_is_named)
        if mesh_ is None:
            raise ValueError(f"shard_map({fname}): no mesh: pass mesh=, use namax.set_mesh / jax.set_mesh, or "
                             f"namax.axis_mapping(..., mesh=)" + _first_mapped(leaves, mapping))
        sizes = dict(mesh_.shape)
        manual = tuple(mesh_.axis_names) if not axis_names else tuple(axis_names)
        for a in manual:
            if a not in sizes:
                raise ShardingError(f"shard_map({fname}): axis_names names mesh axis {a!r}, but the mesh has axes "
                                    f"{tuple(mesh_.axis_names)}")

        given = _broadcast_in_specs(in_specs, args, fname) if in_specs is not None else None
        kinds, arrays, specs = [], [], []
        n_positional = len(jax.tree_util.tree_leaves(args, is_leaf=_is_named))
        for i, (path, leaf) in enumerate(leaves):
            what = _arg_name(path)
            spec = given[i] if given is not None and i < n_positional else None
            if isinstance(leaf, NamedArray):
                if spec is None and (given is None or i >= n_positional):
                    spec = _infer_spec(leaf.axis_names, [a.size for a in leaf.axes], mapping, sizes, manual,
                                       f"shard_map({fname}): argument {what}")
                else:
                    spec = spec if spec is not None else PartitionSpec()
                    _check_spec(leaf.axis_names, [a.size for a in leaf.axes], spec, sizes, manual,
                                f"shard_map({fname}): argument {what}")
                kinds.append(("named", leaf.axes))
            elif _is_array(leaf):
                spec = spec if spec is not None else PartitionSpec()
                kinds.append(("array", None))
            else:
                kinds.append(("static", leaf))
                continue
            arrays.append(leaf.array if isinstance(leaf, NamedArray) else leaf)
            specs.append(spec)

        def rebuild(blocks: Sequence[Any]) -> tuple[tuple, dict]:
            it = iter(blocks)
            values = []
            for kind, info in kinds:
                if kind == "named":
                    block = next(it)
                    values.append(NamedArray(block, tuple(ax.resize(s) for ax, s in zip(info, block.shape))))
                elif kind == "array":
                    values.append(next(it))
                else:
                    values.append(info)
            return jax.tree_util.tree_unflatten(treedef, values)

        def call(*blocks: Any) -> Any:
            a, kw = rebuild(blocks)
            out = f(*a, **kw)
            for path, leaf in jax.tree_util.tree_flatten_with_path(out, is_leaf=_is_named)[0]:
                if not (isinstance(leaf, NamedArray) or _is_array(leaf)):
                    raise TypeError(f"shard_map({fname}): output {_path('out', path)} is {leaf!r} "
                                    f"({type(leaf).__name__}); outputs must be arrays or NamedArrays")
            return out

        jax_kwargs = dict(shmap_kwargs)
        if axis_names:
            jax_kwargs["axis_names"] = set(axis_names)
        if out_specs is None:
            probed: list = []

            def probe(*blocks: Any) -> tuple:
                probed.append(jax.tree_util.tree_map(
                    lambda x: NamedArray(jax.ShapeDtypeStruct(x.array.shape, x.array.dtype), x.axes)
                    if isinstance(x, NamedArray) else jax.ShapeDtypeStruct(jax.numpy.shape(x), jax.numpy.result_type(x)),
                    call(*blocks), is_leaf=_is_named))
                return ()

            jax.eval_shape(jax.shard_map(probe, mesh=jax_mesh, in_specs=tuple(specs), out_specs=(), check_vma=False,
                                         **jax_kwargs), *arrays)
            outs = _infer_out_specs(probed[0], mapping, sizes, manual, fname)
        else:
            outs = out_specs
        mapped = jax.shard_map(call, mesh=jax_mesh, in_specs=tuple(specs), out_specs=outs, check_vma=check,
                               **jax_kwargs)
        result = mapped(*arrays)
        # the outputs' NamedArrays carry the local axes: give them the global sizes JAX reassembled
        return jax.tree_util.tree_map(
            lambda x: NamedArray(x.array, tuple(ax.resize(s) for ax, s in zip(x.axes, x.array.shape)))
            if isinstance(x, NamedArray) else x, result, is_leaf=_is_named)

    return wrapper


def _arg_name(path: Sequence[Any]) -> str:
    """``args[0]['w']`` or ``kwargs['x']`` for a path into ``(args, kwargs)``."""
    head, rest = path[0], tuple(path[1:])
    root = "args" if getattr(head, "idx", 0) == 0 else "kwargs"
    return root + jax.tree_util.keystr(rest)


def _first_mapped(leaves: Sequence[Any], mapping: Mapping[str, Any]) -> str:
    for path, leaf in leaves:
        if isinstance(leaf, NamedArray):
            for ax in leaf.axes:
                if mapping.get(ax.name) is not None:
                    return (f" (axis {ax.name!r} of size {ax.size} of argument {_arg_name(path)} is mapped to mesh "
                            f"axis {mapping[ax.name]!r}, but there is no mesh to map it onto)")
    return ""


def _broadcast_in_specs(in_specs: Any, args: tuple, fname: str) -> list:
    """One spec per leaf (NamedArrays are leaves) of ``args``, from the prefix ``in_specs``."""
    if isinstance(in_specs, PartitionSpec):
        in_specs = (in_specs,) * len(args)
    if isinstance(in_specs, list):
        in_specs = tuple(in_specs)

    class Each(tuple):
        """One spec per leaf of one argument (a tuple that is a tree leaf here)."""

    try:
        spread = jax.tree_util.tree_map(
            lambda spec, sub: Each([spec] * len(jax.tree_util.tree_leaves(sub, is_leaf=_is_named))),
            in_specs, tuple(args), is_leaf=_is_spec_leaf)
    except ValueError as e:
        raise ValueError(f"shard_map({fname}): in_specs must be a prefix of the positional arguments with "
                         f"PartitionSpec (or None) leaves; they do not match: {e}") from e
    out: list = []
    for each in jax.tree_util.tree_leaves(spread, is_leaf=lambda x: isinstance(x, Each)):
        for spec in each:
            if spec is not None and not isinstance(spec, PartitionSpec):
                raise TypeError(f"shard_map({fname}): in_specs leaves must be PartitionSpecs or None, got {spec!r}")
            out.append(spec)
    return out


def _infer_spec(names: Sequence[str], sizes: Sequence[int], mapping: Mapping[str, Any], mesh_sizes: Mapping[str, int],
                manual: Sequence[str], what: str) -> PartitionSpec:
    """The spec that shards each axis over the (manual) mesh axes it is mapped to, checked strictly."""
    used: dict[str, str] = {}
    entries = []
    for name, size in zip(names, sizes):
        targets = _mesh_axes(mapping.get(name))
        for a in targets:
            if a not in mesh_sizes:
                raise ShardingError(f"{what}: axis {name!r} is mapped to mesh axis {a!r}, but the mesh has axes "
                                    f"{tuple(mesh_sizes)}")
        targets = tuple(a for a in targets if a in manual)
        for a in targets:
            if a in used:
                raise ShardingError(f"{what}: mesh axis {a!r} is used twice in one array: by axis {used[a]!r} and by "
                                    f"axis {name!r} (axes {tuple(names)})")
            used[a] = name
        n = int(np.prod([mesh_sizes[a] for a in targets], dtype=np.int64))
        if size % n:
            raise ShardingError(f"{what}: axis {name!r} of size {size} does not divide over mesh axes {targets} of "
                                f"size {n} (mesh {dict(mesh_sizes)})")
        entries.append(_entry(targets))
    return PartitionSpec(*entries)


def _check_spec(names: Sequence[str], sizes: Sequence[int], spec: PartitionSpec, mesh_sizes: Mapping[str, int],
                manual: Sequence[str], what: str) -> None:
    """A given spec for a NamedArray, checked by name before JAX sees it."""
    if len(spec) > len(names):
        raise ShardingError(f"{what}: spec {spec} has {len(spec)} entries for an array with {len(names)} axes "
                            f"{tuple(names)}")
    used: dict[str, str] = {}
    for name, size, entry in zip(names, sizes, tuple(spec)):
        targets = _mesh_axes(entry)
        for a in targets:
            if a not in mesh_sizes:
                raise ShardingError(f"{what}: spec {spec} puts axis {name!r} on mesh axis {a!r}, but the mesh has "
                                    f"axes {tuple(mesh_sizes)}")
            if a not in manual:
                raise ShardingError(f"{what}: spec {spec} puts axis {name!r} on mesh axis {a!r}, which is not one of "
                                    f"the manual axis_names {tuple(manual)}")
            if a in used:
                raise ShardingError(f"{what}: mesh axis {a!r} is used twice in one array: by axis {used[a]!r} and by "
                                    f"axis {name!r} (spec {spec})")
            used[a] = name
        n = int(np.prod([mesh_sizes[a] for a in targets], dtype=np.int64))
        if size % n:
            raise ShardingError(f"{what}: axis {name!r} of size {size} does not divide over mesh axes {targets} of "
                                f"size {n} (spec {spec})")


def _infer_out_specs(out: Any, mapping: Mapping[str, Any], mesh_sizes: Mapping[str, int], manual: Sequence[str],
                     fname: str) -> Any:
    """The out_specs tree for the (local) output structure ``out``: NamedArrays by name, arrays replicated."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(out, is_leaf=_is_named)
    specs = []
    for path, leaf in leaves:
        if isinstance(leaf, NamedArray):
            # local sizes times the mesh sizes always divide: only the mesh axes are checked
            specs.append(_infer_spec(leaf.axis_names, [0] * len(leaf.axes), mapping, mesh_sizes, manual,
                                     f"shard_map({fname}): output {_path('out', path)}"))
        else:
            specs.append(PartitionSpec())
    return jax.tree_util.tree_unflatten(treedef, specs)


class _SetMesh:
    """What :func:`set_mesh` returns: the mesh is set already; ``with`` restores the previous one on exit."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self._jax = jax.set_mesh(mesh)
        # an enclosing namax.axis_mapping(..., mesh=other) would otherwise keep winning over this mesh
        p = current_partitioning()
        self._token = None
        if p is not None and p.mesh is not None and p.mesh != mesh:
            self._token = _CURRENT.set(Partitioning(p.mapping, mesh))

    def __enter__(self) -> Mesh:
        self._jax.__enter__()
        return self.mesh

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        self._jax.__exit__(*exc)


def set_mesh(mesh: Mesh) -> _SetMesh:
    """Set the context mesh: ``jax.set_mesh``, which namax's sharding functions also see.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> with nx.set_mesh(mesh):
    ...     jax.sharding.get_abstract_mesh().axis_names
    ('data',)
    >>> jax.sharding.get_abstract_mesh().axis_names
    ()

    As ``jax.set_mesh`` (and Haliax's ``set_mesh``), a call without ``with`` sets the mesh
    for the rest of the thread. Inside a :func:`namax.axis_mapping` that names a mesh of
    its own, the block uses ``mesh`` with that mapping. ``mesh`` must be a concrete
    ``jax.sharding.Mesh`` (for an ``AbstractMesh`` use ``jax.sharding.use_abstract_mesh``).
    """
    if not isinstance(mesh, Mesh):
        hint = " (for an AbstractMesh use jax.sharding.use_abstract_mesh)" if isinstance(mesh, AbstractMesh) else ""
        raise TypeError(f"set_mesh: expected a jax.sharding.Mesh, got {mesh!r} ({type(mesh).__name__}){hint}")
    return _SetMesh(mesh)


__all__ = ["shard_map", "set_mesh"]
