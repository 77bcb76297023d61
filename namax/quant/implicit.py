"""``ImplicitArray``: a dataclass pytree that stands for a dense array it never builds.

Subclasses declare their data as dataclass fields (array children, possibly other
implicit arrays) and their static data with :func:`aux_field`; every subclass is a
pytree (children = non-aux fields; aux = shape, dtype and the aux fields). Inside
:func:`namax.quant.use_implicit_args`, primitives applied to an implicit array go to
the handlers registered with :func:`namax.quant.primitive_handler`, or materialize it.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import operator
import typing
import warnings
from typing import Any, ClassVar, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

_AUX = "namax_implicit_aux"


def aux_field(**kwargs: Any) -> Any:
    """A dataclass field holding static (hashable, non-array) data, e.g. a group size.

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Scaled(ImplicitArray):
    ...     x: ArrayValue
    ...     scale: float = aux_field(default=2.0)
    ...     def materialize(self):
    ...         return self.x * self.scale
    >>> Scaled(jnp.ones(3)).shape
    (3,)
    """
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata[_AUX] = True
    return dataclasses.field(metadata=metadata, **kwargs)


def is_implicit(x: Any) -> bool:
    """True for an :class:`ImplicitArray` instance.

    >>> from namax.quant.zeros import Zeros
    >>> is_implicit(Zeros(shape=(2,))), is_implicit(jnp.zeros(2))
    (True, False)
    """
    return isinstance(x, ImplicitArray)


def _has_aval(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, type)


@dataclasses.dataclass
class ImplicitArray(abc.ABC):
    """Base class for arrays represented implicitly (LoRA factors, int4 codes, zeros).

    Subclasses implement :meth:`materialize`. ``shape`` and ``dtype`` are keyword-only;
    when omitted they come from :meth:`compute_shape` / :meth:`compute_dtype` if the
    subclass overrides them, from ``default_shape`` / ``default_dtype``, or, for a subclass
    with array children, from :meth:`compute_shape_dtype` (by default
    ``jax.eval_shape(self.materialize)``); failing all, :class:`UninitializedAval`.
    Class keywords ``commute_ops=False`` (handlers are not tried with swapped operands)
    and ``warn_on_materialize=False`` (no materialization warning) are accepted, as in Qax.
    A subclass that declares fields without ``@dataclasses.dataclass`` is made one on
    first instantiation. Override ``__post_init__`` for validation (call ``super()`` first).

    >>> class Ones(ImplicitArray):
    ...     default_dtype = jnp.float32
    ...     def materialize(self):
    ...         return jnp.ones(self.shape, self.dtype)
    >>> Ones(shape=(2,)).materialize().tolist()
    [1.0, 1.0]
    """

    shape: Optional[tuple] = aux_field(kw_only=True, default=None)
    dtype: Any = aux_field(kw_only=True, default=None)

    default_dtype: ClassVar[Any] = None
    default_shape: ClassVar[Optional[tuple]] = None
    commute_ops: ClassVar[bool] = True
    warn_on_materialize: ClassVar[bool] = True
    __array_ufunc__ = None  # numpy scalars and arrays defer to our reflected operators

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is ImplicitArray:
            raise TypeError("ImplicitArray is abstract: subclass it and implement materialize()")
        if "__dataclass_fields__" not in cls.__dict__ and _own_field_annotations(cls):
            dataclasses.dataclass(cls)
        return object.__new__(cls)

    def __init_subclass__(cls, commute_ops: Optional[bool] = None, warn_on_materialize: Optional[bool] = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if commute_ops is not None:
            cls.commute_ops = bool(commute_ops)
        if warn_on_materialize is not None:
            cls.warn_on_materialize = bool(warn_on_materialize)
        jax.tree_util.register_pytree_with_keys(
            cls, _flatten_with_keys, lambda aux, children: _unflatten(cls, aux, children), _flatten
        )

    def __post_init__(self) -> None:
        inferred = (self.shape is None, self.dtype is None)
        if self.shape is None:
            self.shape = self.compute_shape()
        if self.dtype is None and _overrides(type(self), "compute_dtype"):
            self.dtype = self.compute_dtype()
        if self.shape is not None:
            try:
                self.shape = tuple(int(s) for s in self.shape)
            except TypeError as e:
                raise TypeError(f"{type(self).__name__}: shape must be a tuple of ints, got {self.shape!r}") from e
        if self.dtype is None and self.default_dtype is not None and not _children(self):
            self.dtype = jnp.dtype(self.default_dtype)
            inferred = (inferred[0], False)
        if self.shape is None or self.dtype is None:
            if not _children(self):
                missing = "shape" if self.shape is None else "dtype"
                raise UninitializedAval(f"{type(self).__name__} has no array children, so {missing}= must be given")
            try:
                shape, dtype = self.compute_shape_dtype()
            except Exception as e:
                raise ValueError(f"could not infer the shape/dtype of {type(self).__name__} from its children "
                                 f"({type(e).__name__}: {e}); check their shapes or pass shape= and dtype=") from e
            if self.shape is None:
                self.shape = tuple(shape)
            if self.dtype is None:
                self.dtype = dtype
        self.dtype = jnp.dtype(self.dtype)
        object.__setattr__(self, "_inferred", inferred)

    @abc.abstractmethod
    def materialize(self) -> jax.Array:
        """The dense array this value stands for (every subclass implements it)."""

    def compute_shape(self) -> Optional[tuple]:
        """Override to compute the shape from the other fields; default ``default_shape``.

        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Row(ImplicitArray):
        ...     x: ArrayValue
        ...     def compute_shape(self):
        ...         return (1, *self.x.shape)
        ...     def materialize(self):
        ...         return self.x[None]
        >>> Row(jnp.ones(3)).shape
        (1, 3)
        """
        return self.default_shape

    def compute_dtype(self) -> Any:
        """Override to compute the dtype from the other fields (called when ``dtype=`` is not
        given); by default the dtype comes from ``default_dtype`` or the children.

        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Half(ImplicitArray):
        ...     x: ArrayValue
        ...     def compute_dtype(self):
        ...         return jnp.float16
        ...     def materialize(self):
        ...         return self.x.astype(jnp.float16)
        >>> Half(jnp.ones(2)).dtype
        dtype('float16')
        """
        return self.default_dtype

    def compute_shape_dtype(self) -> tuple[tuple, Any]:
        """Logical (shape, dtype) from the children: :meth:`compute_shape` and
        :meth:`compute_dtype` where a subclass overrides them, else ``jax.eval_shape(materialize)``."""
        cls = type(self)
        shape = self.compute_shape() if _overrides(cls, "compute_shape") else None
        dtype = self.compute_dtype() if _overrides(cls, "compute_dtype") else None
        if shape is None or dtype is None:
            children, rebuild = _split(self)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = jax.eval_shape(lambda ch: materialize_value(rebuild(ch)), children)
            shape = out.shape if shape is None else shape
            dtype = out.dtype if dtype is None else dtype
        return tuple(shape), dtype

    def tree_flatten_with_keys(self) -> tuple[list, tuple]:
        """``([(field name, child), ...], aux)`` as Qax gives it (see :meth:`tree_unflatten`).

        >>> from namax.quant.lora import LoraWeight
        >>> w = LoraWeight(w=jnp.ones((2, 3)), a=jnp.ones((2, 1)), b=jnp.ones((3, 1)))
        >>> [k for k, _ in w.tree_flatten_with_keys()[0]]
        ['w', 'a', 'b']
        """
        return [(n, getattr(self, n)) for n in _fields(type(self))[0]], _aux(self)

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: Any) -> "ImplicitArray":
        """Rebuild an instance from :meth:`tree_flatten_with_keys`' aux and new children.

        >>> from namax.quant.lora import LoraWeight
        >>> w = LoraWeight(w=jnp.ones((2, 3)), a=jnp.ones((2, 1)), b=jnp.ones((3, 1)))
        >>> kids, aux = w.tree_flatten_with_keys()
        >>> LoraWeight.tree_unflatten(aux, ["frozen", "train", "train"]).w
        'frozen'
        """
        return _unflatten(cls, aux, tuple(children))

    @property
    def aval(self) -> jax.core.ShapedArray:
        """The abstract value (shape and dtype) of the dense array."""
        return jax.core.ShapedArray(self.shape, self.dtype)

    def child_names(self, names: Optional[tuple]) -> list[Optional[tuple]]:
        """Axis names for each array leaf, given the names of the dense array.

        Used by the names and sharding passes (a LoRA weight named ``(embed, mlp)`` has an
        ``a`` named ``(embed, None)``). The default names the children whose shape is the
        dense shape and leaves the others unnamed; nested implicit children recurse.
        Subclasses override it to say how their parts relate to the dense axes.
        """
        out: list[Optional[tuple]] = []
        for child in _children(self):
            same = names is not None and tuple(getattr(child, "shape", ())) == tuple(self.shape)
            out.extend(leaf_names_of(child, names if same else None))
        return out

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(int(d) for d in self.shape)  # Python ints: no fixed-width wrap-around

    @property
    def T(self) -> Any:
        return _implicit_op(jnp.transpose)(self)

    def transpose(self, *axes: Any) -> Any:
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None)
        return _implicit_op(jnp.transpose)(self, axes)

    def reshape(self, *shape: Any) -> Any:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _implicit_op(jnp.reshape)(self, tuple(shape))

    def astype(self, dtype: Any) -> Any:
        return _implicit_op(lambda x, d: x.astype(d))(self, dtype)

    def sum(self, axis: Any = None) -> Any:
        return _implicit_op(jnp.sum)(self, axis)

    def __getitem__(self, idx: Any) -> Any:
        return _implicit_op(operator.getitem)(self, idx)


ArrayValue = Union[jax.Array, ImplicitArray]
"""Annotation for a field holding a dense or an implicit array."""


class UninitializedAval(TypeError):
    """The shape or dtype of an implicit array could not be determined (Qax's name).

    >>> from namax.quant.zeros import Zeros
    >>> try:
    ...     Zeros()
    ... except UninitializedAval as e:
    ...     print(e)
    Zeros has no array children, so shape= must be given
    """


def _overrides(cls: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(ImplicitArray, name)


def _own_field_annotations(cls: type) -> bool:
    ann = cls.__dict__.get("__annotations__", {})
    return any(not (isinstance(t, str) and t.startswith(("ClassVar", "typing.ClassVar")))
               and typing.get_origin(t) is not ClassVar and t is not ClassVar for t in ann.values())


def _fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    cache = cls.__dict__.get("_namax_fields")
    if cache is None:
        fs = dataclasses.fields(cls)
        children = tuple(f.name for f in fs if not f.metadata.get(_AUX))
        aux = tuple(f.name for f in fs if f.metadata.get(_AUX) and f.name not in ("shape", "dtype"))
        cache = (children, aux)
        setattr(cls, "_namax_fields", cache)
    return cache


def _children(x: ImplicitArray) -> tuple:
    return tuple(getattr(x, n) for n in _fields(type(x))[0])


def _aux(x: ImplicitArray) -> tuple:
    return (x.shape, x.dtype, getattr(x, "_inferred", (False, False)),
            tuple(getattr(x, n) for n in _fields(type(x))[1]))


def _flatten(x: ImplicitArray) -> tuple[tuple, tuple]:
    return _children(x), _aux(x)


def _flatten_with_keys(x: ImplicitArray) -> tuple[tuple, tuple]:
    names = _fields(type(x))[0]
    return tuple((jax.tree_util.GetAttrKey(n), getattr(x, n)) for n in names), _aux(x)


def _split(x: ImplicitArray):
    """(children, rebuild): ``rebuild(children)`` is ``x`` with new children, no validation."""
    aux = _aux(x)
    return _children(x), (lambda ch: _unflatten(type(x), aux, tuple(ch), reinfer=False))


_SHAPE_CACHE: dict = {}


def _unflatten(cls: type, aux: tuple, children: tuple, reinfer: bool = True) -> ImplicitArray:
    # Built without __init__: transformations unflatten with tracers, None or sentinels.
    shape, dtype, inferred, aux_values = aux
    obj = object.__new__(cls)
    child_names, aux_names = _fields(cls)
    for n, v in zip(child_names, children):
        object.__setattr__(obj, n, v)
    for n, v in zip(aux_names, aux_values):
        object.__setattr__(obj, n, v)
    object.__setattr__(obj, "shape", shape)
    object.__setattr__(obj, "dtype", dtype)
    object.__setattr__(obj, "_inferred", inferred)
    if reinfer and any(inferred) and children and all(c is None or _has_aval(c) for c in children):
        # Under vmap (or scan over stacked values) the children lose leading axes:
        # recompute the logical shape from them instead of trusting the stored one.
        new_shape, new_dtype = _reinfer(obj, aux, children)
        if inferred[0]:
            object.__setattr__(obj, "shape", new_shape)
        if inferred[1]:
            object.__setattr__(obj, "dtype", new_dtype)
    return obj


def _reinfer(obj: ImplicitArray, aux: tuple, children: tuple) -> tuple:
    key = (type(obj), aux, tuple(None if c is None else (type(c), tuple(c.shape), jnp.dtype(c.dtype))
                                 for c in children))
    try:
        cached = _SHAPE_CACHE.get(key)
    except TypeError:  # unhashable aux data
        key, cached = None, None
    if cached is not None:
        return cached
    try:
        shape, dtype = obj.compute_shape_dtype()
        out = (tuple(shape), jnp.dtype(dtype))
    except Exception:  # children from a partial transformation: keep what was stored
        return aux[0], aux[1]
    if key is not None:
        _SHAPE_CACHE[key] = out
    return out


def leaf_names_of(value: Any, names: Optional[tuple]) -> list[Optional[tuple]]:
    """Axis names for each array leaf of ``value`` (an array, an implicit array, or a pytree).

    >>> from namax.quant.int4 import quantize_array
    >>> leaf_names_of(quantize_array(jnp.ones((128, 4))), ("embed", "mlp"))  # packed codes, scales
    [('embed', None), (None, 'mlp')]
    >>> leaf_names_of({"a": jnp.ones(2), "b": jnp.ones(2)}, ("embed",))
    [('embed',), ('embed',)]
    """
    if is_implicit(value):
        return value.child_names(names)
    return [names] * len(jax.tree_util.tree_leaves(value))


def materialize_value(x: Any) -> Any:
    """``x`` as a dense array if it is implicit (recursively), else ``x`` unchanged.

    >>> from namax.quant.zeros import Zeros
    >>> materialize_value(Zeros(shape=(2,))).tolist(), materialize_value(3.0)
    ([0.0, 0.0], 3.0)

    An implicit array with implicit children is materialized the Qax way: its
    ``materialize`` runs on its children under ``use_implicit_args``, so the children's own
    handlers apply (and the result, if implicit again, is materialized in turn).
    """
    while is_implicit(x):
        x = materialize_one_layer(x)
    return x


def materialize_one_layer(x: ImplicitArray) -> Any:
    """``x.materialize()``, run through the handlers of ``x``'s implicit children, if any.

    >>> from namax.quant.zeros import Zeros
    >>> materialize_one_layer(Zeros(shape=(2,))).tolist()
    [0.0, 0.0]
    """
    if not any(is_implicit(c) for c in jax.tree_util.tree_leaves(_children(x), is_leaf=is_implicit)):
        return x.materialize()
    from .use_implicit import call_one_layer

    return call_one_layer(type(x).materialize, (x,), {})


_OPS: dict = {}


def _implicit_op(fn: Any) -> Any:
    """``use_implicit_args(fn)``, cached per function so its jaxpr cache is reused."""
    wrapped = _OPS.get(fn)
    if wrapped is None:
        from .use_implicit import use_implicit_args

        wrapped = use_implicit_args(fn)
        if getattr(fn, "__name__", "") != "<lambda>":
            _OPS[fn] = wrapped
    return wrapped


def _binop(op: Any, reflected: bool = False):
    def method(self: ImplicitArray, other: Any) -> Any:
        return _implicit_op(op)(other, self) if reflected else _implicit_op(op)(self, other)

    return method


for _name, _op in {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "matmul": operator.matmul, "pow": operator.pow, "floordiv": operator.floordiv, "mod": operator.mod,
}.items():
    setattr(ImplicitArray, f"__{_name}__", _binop(_op))
    setattr(ImplicitArray, f"__r{_name}__", _binop(_op, reflected=True))
for _name, _op in {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}.items():
    setattr(ImplicitArray, f"__{_name}__", _binop(_op))
ImplicitArray.__neg__ = lambda self: _implicit_op(operator.neg)(self)
ImplicitArray.__abs__ = lambda self: _implicit_op(operator.abs)(self)
