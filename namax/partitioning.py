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

from .axis import Axis
from .named import NamedArray

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
    m = jax.sharding.get_mesh()
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
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


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

    >>> import numpy as np, jax
    >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    >>> pspec_for(("batch", "embed"), (8, 4), {"batch": "data"}, mesh)  # trailing Nones dropped
    P('data',)
    """
    shape = dict(zip(mesh.axis_names, mesh.devices.shape))
    used: dict[str, str] = {}
    entries: list[MeshAxes] = []
    for name, size in zip(names, sizes):
        target = mapping.get(name) if name is not None else None
        if target is None:
            entries.append(None)
            continue
        axes = (target,) if isinstance(target, str) else tuple(target)
        for a in axes:
            if a not in shape:
                raise ShardingError(
                    f"axis {name!r} is mapped to mesh axis {a!r}, but the mesh has axes {tuple(mesh.axis_names)}"
                )
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


__all__ = ["normalize_mapping", "axis_mapping", "current_axis_mapping", "pspec_for", "sharding_for", "shard", "fsdp",
           "ShardingError", "ResourceMapping"]
