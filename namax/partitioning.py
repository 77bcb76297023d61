"""Axis mappings: which named axes are sharded over which mesh axes.

An axis mapping (``{"batch": "data", "mlp": "model"}``) plus a ``jax.sharding.Mesh``
turns the names of an array into a ``PartitionSpec``. Set it per call
(``namedjit(..., axis_resources=...)``) or for a block of code with
:func:`axis_mapping`. :func:`shard` places arrays; :func:`fsdp` is the usual recipe
(parameters sharded one way, computation another).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from .axis import Axis, AxisSelection, AxisSelector, axis_name, axis_spec_to_shape_dict
from .named import NamedArray
from .util import StringHolderEnum

MeshAxes = Union[str, tuple[str, ...], None]
ResourceMapping = Mapping[str, MeshAxes]
"""Axis name -> mesh axis (or tuple of mesh axes, or None for replicated)."""


@dataclasses.dataclass(frozen=True)
class Partitioning:
    """A frozen (hashable) axis mapping plus the mesh it refers to (None: the active mesh).

    >>> p = Partitioning.make({"batch": "data", "mlp": ("data", "model")})
    >>> p.mapping
    (('batch', 'data'), ('mlp', ('data', 'model')))
    >>> p.as_dict() == {"batch": "data", "mlp": ("data", "model")}
    True
    """

    mapping: tuple[tuple[str, MeshAxes], ...]
    mesh: Optional[Mesh] = None

    @staticmethod
    def make(mapping: Optional[ResourceMapping], mesh: Optional[Mesh] = None) -> "Partitioning":
        items = tuple((_mapping_key(k), _freeze_mesh_axes(v)) for k, v in dict(mapping or {}).items())
        return Partitioning(items, mesh)

    def as_dict(self) -> dict[str, MeshAxes]:
        return dict(self.mapping)


def _mapping_key(k: Any) -> str:
    """An axis mapping's key: an axis name, or an :class:`Axis` (its name)."""
    if isinstance(k, Axis):
        return k.name
    if not isinstance(k, str):
        raise TypeError(f"axis mapping keys are axis names (str) or Axis objects, got {k!r} ({type(k).__name__})")
    return k


def mesh_axes(target: MeshAxes) -> tuple[str, ...]:
    """The mesh axes one name maps to, as a tuple: ``()`` for None, ``(a,)`` for one axis.

    >>> mesh_axes(None), mesh_axes("data"), mesh_axes(("data", "model"))
    ((), ('data',), ('data', 'model'))
    """
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def normalize_mapping(mapping: Optional[ResourceMapping]) -> Optional[dict[str, MeshAxes]]:
    """``mapping`` with Axis keys replaced by their names (other non-string keys are an error).

    >>> normalize_mapping({Axis("batch", 8): "data", "mlp": ("data", "model")})
    {'batch': 'data', 'mlp': ('data', 'model')}
    """
    if mapping is None:
        return None
    return {_mapping_key(k): _freeze_mesh_axes(v) for k, v in dict(mapping).items()}


def _freeze_mesh_axes(v: Any) -> MeshAxes:
    if v is None or isinstance(v, str):
        return v
    return tuple(v)


_CURRENT: contextvars.ContextVar[Optional[Partitioning]] = contextvars.ContextVar("namax_axis_mapping", default=None)


@contextlib.contextmanager
def axis_mapping(mapping: ResourceMapping, *, mesh: Optional[Mesh] = None, merge: bool = False) -> Iterator[None]:
    """Use ``mapping`` (and optionally ``mesh``) for namedjit calls and :func:`shard` inside the block.

    >>> with axis_mapping({"batch": "data"}):
    ...     current_axis_mapping()
    {'batch': 'data'}
    """
    prev = _CURRENT.get()
    if merge and prev is not None:
        mapping = {**prev.as_dict(), **dict(mapping)}
        mesh = mesh or prev.mesh
    token = _CURRENT.set(Partitioning.make(mapping, mesh))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_partitioning() -> Optional[Partitioning]:
    """The innermost :func:`axis_mapping`, or None.

    >>> current_partitioning() is None
    True
    >>> with axis_mapping({"batch": "data"}):
    ...     current_partitioning().mapping
    (('batch', 'data'),)
    """
    return _CURRENT.get()


def current_axis_mapping() -> Optional[dict[str, MeshAxes]]:
    """The innermost :func:`axis_mapping` as a dict, or None.

    >>> with axis_mapping({"batch": "data"}), axis_mapping({"mlp": "model"}, merge=True):
    ...     current_axis_mapping()
    {'batch': 'data', 'mlp': 'model'}
    """
    p = _CURRENT.get()
    return None if p is None else p.as_dict()


def resolve_mesh(mesh: Optional[Mesh] = None) -> Optional[Mesh]:
    """``mesh``, else the active ``jax.set_mesh`` mesh, else None.

    >>> import numpy as np, jax
    >>> resolve_mesh() is None
    True
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> with jax.set_mesh(mesh):
    ...     resolve_mesh().axis_names
    ('data',)
    """
    if mesh is not None:
        return mesh
    try:
        m = jax.sharding.get_mesh()
    except ValueError:  # inside jax.jit only the abstract mesh is known; it places values as well
        m = jax.sharding.get_abstract_mesh()
    if m is None or not getattr(m, "axis_names", ()):
        return None
    return m


def auto_twin(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis of type Auto (for sharding constraints).

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",), axis_types=(AxisType.Explicit,))
    >>> auto_twin(mesh).axis_types
    (Auto,)
    """
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    auto = (AxisType.Auto,) * len(mesh.axis_names)
    if isinstance(mesh, jax.sharding.AbstractMesh):  # inside jax.jit: no devices, same sizes
        return jax.sharding.AbstractMesh(mesh.axis_sizes, mesh.axis_names, axis_types=auto)
    return Mesh(mesh.devices, mesh.axis_names, axis_types=auto)


class ShardingError(ValueError):
    """A name mapped to a missing mesh axis, a size that does not divide, a mesh axis used twice.

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> pspec_for(("batch",), (8,), {"batch": "model"}, mesh)
    Traceback (most recent call last):
    ...
    namax.partitioning.ShardingError: axis 'batch' is mapped to mesh axis 'model', but the mesh has axes ('data',)
    """


def pspec_for(names: Sequence[Optional[str]], sizes: Sequence[int], mapping: ResourceMapping, mesh: Mesh, *,
              strict: bool = True, what: str = "array") -> PartitionSpec:
    """The PartitionSpec for an array with these dimension names and sizes.

    ``strict`` raises :class:`ShardingError` for a dimension that does not divide its mesh
    axes or a mesh axis used by two dimensions; non-strict (used for inferred
    intermediates) replicates such dimensions instead, the first dimension keeping the
    mesh axis.

    A dimension of size 0 is never sharded, strict or not (user-placed inputs included): it
    is replicated (``None``), which costs nothing as it holds no data, and its mesh axes stay
    free for the other dimensions. Its mapping must still name mesh axes that exist.

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> pspec_for(("batch", "embed"), (8, 4), {"batch": "data"}, mesh)  # trailing Nones dropped
    P('data',)
    >>> pspec_for(("batch", "embed"), (0, 4), {"batch": "data", "embed": "data"}, mesh)  # size 0: replicated
    P(None, 'data')
    """
    shape = dict(zip(mesh.axis_names, mesh.axis_sizes))
    used: dict[str, str] = {}
    entries: list[MeshAxes] = []
    for name, size in zip(names, sizes):
        target = mapping.get(name) if name is not None else None
        if target is None:
            entries.append(None)
            continue
        axes = mesh_axes(target)
        for a in axes:
            if a not in shape:
                raise ShardingError(
                    f"axis {name!r} is mapped to mesh axis {a!r}, but the mesh has axes {tuple(mesh.axis_names)}"
                )
        if size == 0:  # nothing to split: replicated, and its mesh axes stay free
            entries.append(None)
            continue
        clash = [a for a in axes if a in used]
        n = 1
        for a in axes:
            n *= shape[a]
        if clash or size % n:
            if strict and clash:
                raise ShardingError(
                    f"mesh axis {clash[0]!r} is used twice in one {what}: by axis {used[clash[0]]!r} and by "
                    f"axis {name!r} (names {tuple(names)})"
                )
            if strict:
                raise ShardingError(
                    f"axis {name!r} of size {size} does not divide over mesh axes {axes} of size {n} ({what} "
                    f"names {tuple(names)})"
                )
            entries.append(None)
            continue
        for a in axes:
            used[a] = name
        entries.append(target if isinstance(target, str) or len(axes) > 1 else axes[0])
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def sharding_for(x: NamedArray, mapping: Optional[ResourceMapping] = None, mesh: Optional[Mesh] = None) -> NamedSharding:
    """The NamedSharding of a NamedArray under ``mapping`` (default: the current one).

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> x = nx.zeros(nx.make_axes(batch=4, embed=2))
    >>> sharding_for(x, {"batch": "data"}, mesh).spec
    P('data',)
    """
    mapping, mesh = _mapping_and_mesh(mapping, mesh)
    spec = pspec_for(x.axis_names, [a.size for a in x.axes], mapping, mesh, what="array")
    return NamedSharding(mesh, spec)


def _mapping_and_mesh(mapping, mesh):
    p = current_partitioning()
    if mapping is None:
        if p is None:
            raise ValueError("no axis mapping given and none active (use namax.axis_mapping or pass mapping=)")
        mapping = p.as_dict()
    mesh = resolve_mesh(mesh or (p.mesh if p is not None else None))
    if mesh is None:
        raise ValueError("no mesh given and none active (pass mesh= or use jax.set_mesh)")
    return mapping, mesh


def shard(tree: Any, mapping: Optional[ResourceMapping] = None, mesh: Optional[Mesh] = None) -> Any:
    """Place every NamedArray in ``tree`` by its names; other leaves are replicated.

    Outside jit this is ``jax.device_put``; inside a traced function it is a sharding
    constraint.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> params = {"w": nx.zeros(nx.make_axes(embed=4, mlp=2)), "step": jax.numpy.zeros(())}
    >>> placed = shard(params, {"embed": "data"}, mesh)
    >>> placed["w"].array.sharding.spec, placed["step"].sharding.spec
    (P('data',), P())
    """
    mapping, mesh = _mapping_and_mesh(mapping, mesh)

    def place(x):
        if isinstance(x, NamedArray):
            s = sharding_for(x, mapping, mesh)
            return NamedArray(_place(x.array, s), x.axes)
        if isinstance(x, jax.Array) or hasattr(x, "shape"):
            return _place(x, NamedSharding(mesh, PartitionSpec()))
        return x

    return jax.tree_util.tree_map(place, tree, is_leaf=lambda x: isinstance(x, NamedArray))


def _place(array, sharding: NamedSharding):
    if isinstance(array, jax.core.Tracer):
        context = jax.sharding.get_abstract_mesh()
        if any(t == AxisType.Explicit for t in getattr(context, "axis_types", ())):
            return jax.sharding.reshard(array, sharding.spec)  # Explicit axes: placing is a reshard
        return jax.lax.with_sharding_constraint(array, NamedSharding(auto_twin(sharding.mesh), sharding.spec))
    return jax.device_put(array, sharding)


def fsdp(fn: Callable, parameter_mapping: ResourceMapping, compute_mapping: ResourceMapping, *,
         mesh: Optional[Mesh] = None, **jit_kwargs) -> Callable:
    """Fully-sharded data parallelism in one line.

    The first argument of ``fn`` (the parameters, e.g. a model) and every output are
    sharded by ``parameter_mapping`` (typically ``{"embed": "data"}``); the
    computation inside runs under ``compute_mapping`` (typically ``{"batch": "data"}``),
    so XLA all-gathers each parameter where it is used and reduce-scatters its gradient.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> Batch, Embed = nx.make_axes(batch=4, embed=2)
    >>> step = fsdp(lambda w, x: w * x, {"embed": "data"}, {"batch": "data"}, mesh=mesh)
    >>> step(nx.ones(Embed), nx.ones((Batch, Embed))).axes
    (Axis('embed', 2), Axis('batch', 4))
    """
    from .jit import namedjit

    return namedjit(fn, axis_resources=compute_mapping, mesh=mesh, in_axis_resources={0: parameter_mapping},
                    out_axis_resources=parameter_mapping, **jit_kwargs)


# --- Haliax's spellings, on the functions above -------------------------------------------------

PhysicalAxisSpec = Union[str, tuple[str, ...]]
"""A mesh axis, or a tuple of mesh axes, that one named axis is sharded over."""


class ResourceAxis(metaclass=StringHolderEnum):
    """The usual mesh axis names (plain strings).

    >>> ResourceAxis.DATA, "model" in ResourceAxis
    ('data', True)
    """

    MODEL = "model"
    DATA = "data"
    REPLICA = "replica"
    REPLICA_DCN = "replica_dcn"
    CONTEXT = "context"


current_thread_local_mapping = current_axis_mapping
"""Haliax's name for :func:`current_axis_mapping` (the mapping is per thread and per context)."""


def physical_axis_name(axis: AxisSelector, mapping: Optional[ResourceMapping] = None) -> Optional[PhysicalAxisSpec]:
    """The mesh axis (or axes) ``axis`` is mapped to by ``mapping`` (default: the current
    one); None if it is not mapped or no mapping is active.

    >>> physical_axis_name("batch", {"batch": "data"}), physical_axis_name(Axis("embed", 4), {"batch": "data"})
    ('data', None)
    """
    name = axis_name(axis)
    if not isinstance(name, str):
        raise TypeError(f"physical_axis_name: expected one Axis or name, got {axis!r}")
    mapping = normalize_mapping(mapping) if mapping is not None else current_axis_mapping()
    return None if mapping is None else mapping.get(name)


def _required_mapping(mapping: Optional[ResourceMapping], what: str) -> dict[str, MeshAxes]:
    mapping = normalize_mapping(mapping) if mapping is not None else current_axis_mapping()
    if mapping is None:
        raise ValueError(f"{what}: no axis mapping given and none active (pass one or use namax.axis_mapping)")
    return mapping


def pspec_for_axis(axis: AxisSelection, mapping: Optional[ResourceMapping] = None) -> PartitionSpec:
    """The PartitionSpec for an array with axes ``axis`` (one entry per axis) under ``mapping``
    (default: the current one).

    Checked as strictly as :func:`shard`: a mesh axis used by two axes is an error and,
    when a mesh is active and the axes have sizes, so are mesh axes it lacks and sizes
    that do not divide.

    >>> pspec_for_axis((Axis("batch", 8), "embed"), {"batch": "data"})
    P('data', None)
    """
    spec = axis_spec_to_shape_dict(axis)
    mapping = _required_mapping(mapping, "pspec_for_axis")
    names, sizes = tuple(spec), tuple(spec.values())
    p = current_partitioning()
    mesh = resolve_mesh(p.mesh if p is not None else None)
    if mesh is not None and None not in sizes:
        entries = tuple(pspec_for(names, sizes, mapping, mesh, what="axis spec"))
        return PartitionSpec(*entries, *([None] * (len(names) - len(entries))))
    used: dict[str, str] = {}
    entries = []
    for name in names:
        target = mapping.get(name)
        for a in mesh_axes(target):
            if mesh is not None and a not in mesh.axis_names:
                raise ShardingError(f"axis {name!r} is mapped to mesh axis {a!r}, but the mesh has axes "
                                    f"{tuple(mesh.axis_names)}")
            if a in used:
                raise ShardingError(f"mesh axis {a!r} is used twice in one axis spec: by axis {used[a]!r} and by "
                                    f"axis {name!r} (names {names})")
            used[a] = name
        entries.append(target)
    return PartitionSpec(*entries)


def round_axis_for_partitioning(axis: Axis, mapping: Optional[ResourceMapping] = None) -> Axis:
    """``axis`` with its size rounded up to a multiple of the number of devices it is
    sharded over (the product of its mesh axes' sizes in the active mesh).

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> with axis_mapping({"vocab": "data"}, mesh=mesh):
    ...     round_axis_for_partitioning(Axis("vocab", 7))
    Axis('vocab', 7)
    """
    if not isinstance(axis, Axis):
        raise TypeError(f"round_axis_for_partitioning: expected an Axis (with a size), got {axis!r}")
    p = current_partitioning()
    mesh = resolve_mesh(p.mesh if p is not None else None)
    if mesh is None:
        raise ValueError("round_axis_for_partitioning: no mesh active (use jax.set_mesh or "
                         "namax.axis_mapping(..., mesh=mesh))")
    target = physical_axis_name(axis, mapping)
    if target is None:
        return axis
    shape = dict(zip(mesh.axis_names, mesh.axis_sizes))
    n = 1
    for a in mesh_axes(target):
        if a not in shape:
            raise ShardingError(f"axis {axis.name!r} is mapped to mesh axis {a!r}, but the mesh has axes "
                                f"{tuple(mesh.axis_names)}")
        n *= shape[a]
    return axis.resize(-(-axis.size // n) * n)


def shard_with_axis_mapping(x: Any, mapping: ResourceMapping, mesh: Optional[Mesh] = None) -> Any:
    """:func:`shard` with the mapping required (Haliax's older name).

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> shard_with_axis_mapping(nx.zeros(nx.Axis("batch", 2)), {"batch": "data"}, mesh).array.sharding.spec
    P('data',)
    """
    if mapping is None:
        raise ValueError("shard_with_axis_mapping: a mapping is required (use namax.auto_sharded for the current one)")
    return shard(x, mapping, mesh)


def auto_sharded(x: Any, mesh: Optional[Mesh] = None) -> Any:
    """:func:`shard` by the current axis mapping; without one, ``x`` is returned as it is.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> x = nx.zeros(nx.Axis("batch", 2))
    >>> auto_sharded(x) is x
    True
    >>> with axis_mapping({"batch": "data"}, mesh=mesh):
    ...     auto_sharded(x).array.sharding.spec
    P('data',)
    """
    if current_axis_mapping() is None:
        return x
    return shard(x, None, mesh)


def infer_resource_partitions(tree: Any, resource_mapping: Optional[ResourceMapping] = None,
                              mesh: Optional[Mesh] = None) -> Any:
    """The sharding :func:`shard` gives each array of ``tree``: a NamedSharding per
    NamedArray (by its names) and per plain array (replicated, or by the ``axis_names`` of
    its :func:`namax.field`) and Python number (replicated); None for other leaves.

    >>> import numpy as np, jax, namax as nx
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> tree = {"w": nx.zeros(nx.make_axes(embed=4, mlp=2)), "step": 3, "name": "run"}
    >>> s = infer_resource_partitions(tree, {"embed": "data"}, mesh)
    >>> s["w"].spec, s["step"].spec, s["name"]
    (P('data',), P(), None)
    """
    import equinox as eqx

    mapping, mesh = _mapping_and_mesh(normalize_mapping(resource_mapping), mesh)

    def sharding(x: Any) -> Any:
        if isinstance(x, NamedArray):
            return sharding_for(x, mapping, mesh)
        if isinstance(x, eqx.Module):
            return _module_shardings(x)
        if isinstance(x, (jax.Array, bool, int, float, complex)) or (hasattr(x, "shape") and hasattr(x, "dtype")):
            return NamedSharding(mesh, PartitionSpec())
        return None

    def _module_shardings(module: Any) -> Any:
        out = object.__new__(type(module))
        for f in dataclasses.fields(module):
            value = getattr(module, f.name)
            names = f.metadata.get("axis_names") if not f.metadata.get("static", False) else None
            if names is not None and hasattr(value, "shape") and not isinstance(value, NamedArray):
                if len(names) != len(value.shape):
                    raise ValueError(f"field {type(module).__name__}.{f.name}: axis_names {names} for an array of "
                                     f"shape {tuple(value.shape)}")
                new = NamedSharding(mesh, pspec_for(names, value.shape, mapping, mesh, what=f"field {f.name!r}"))
            elif f.metadata.get("static", False):
                new = value
            else:
                new = jax.tree_util.tree_map(sharding, value, is_leaf=_is_leaf)
            object.__setattr__(out, f.name, new)
        return out

    def _is_leaf(x: Any) -> bool:
        return isinstance(x, (NamedArray, eqx.Module))

    return jax.tree_util.tree_map(sharding, tree, is_leaf=_is_leaf)


def __getattr__(name: str) -> Any:
    # ``named_jit`` is ``namax.namedjit``; jit imports this module, so it is looked up on use
    if name == "named_jit":
        from .jit import namedjit

        return namedjit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["mesh_axes", "normalize_mapping", "axis_mapping", "current_axis_mapping", "pspec_for", "sharding_for", "shard", "fsdp",
           "ShardingError", "ResourceMapping", "PhysicalAxisSpec", "ResourceAxis", "current_thread_local_mapping",
           "physical_axis_name", "pspec_for_axis", "round_axis_for_partitioning", "shard_with_axis_mapping",
           "auto_sharded", "infer_resource_partitions", "named_jit"]

# --- shard_map and set_mesh (implemented in namax/shard_map.py, which imports this module) ------
from .shard_map import set_mesh, shard_map  # noqa: E402

__all__ += ["shard_map", "set_mesh"]
