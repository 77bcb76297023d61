"""Per-primitive handlers for implicit arrays, chosen by the types of the operands.

A handler is ``fn(primitive, *operands, **params)``; its positional parameters after
``primitive`` are annotated with the operand types it accepts (unannotated = anything,
``jax.Array`` = any dense value, an ImplicitArray subclass = that class or a subclass).
Among the handlers matching an operand tuple the most specific runs first; one that
returns ``NotImplemented`` passes to the next. For commutative binary primitives the
swapped operand order is tried too (unless the class says ``commute_ops=False``); ties go
to the higher ``precedence``, then to the handler registered last. If nothing handles the
call, the implicit operands are materialized with a ``UserWarning``.

When an operand is an implicit array with implicit children (nesting), the handler runs
as a traced function of the operands' children (Qax's semantics): what it does to an
implicit child goes through that child's own handlers.

Code written for an older JAX keeps working: parameters a newer JAX added to a primitive
(``accuracy``, ``out_sharding``, ...) are filled in with their defaults by
:func:`default_handler` (:func:`complete_params`, learned by tracing the public
``jax.lax`` functions), and are not passed to a handler whose signature lacks them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import types
import typing
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore
from jax.extend.core import primitives as _prims

from .constants import COMMUTATIVE_OPS
from .implicit import ImplicitArray, _children, is_implicit, materialize_value

COMMUTATIVE = COMMUTATIVE_OPS
"""Binary primitives whose handlers also match with the operands swapped."""

_KNOWN = {p.name for p in [*vars(_prims).values(), *vars(lax).values()] if isinstance(p, jcore.Primitive)}
"""Primitive names accepted by :func:`primitive_handler` (``jax.extend`` and ``jax.lax``'s ``*_p``)."""


class _Handler:
    def __init__(self, fn: Callable, order: int, precedence: int = 0):
        self.fn = fn
        self.order = order
        self.precedence = precedence
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        params = list(sig.parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise TypeError(f"handler {fn.__qualname__} must take the primitive as its first positional parameter")
        self.types: list = []
        self.rest: Optional[Any] = None
        self.any_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
        self.keywords = frozenset(p.name for p in params[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in params[1:]:
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
                self.types.append(hints.get(p.name, object))
            elif p.kind == p.VAR_POSITIONAL:
                self.rest = hints.get(p.name, object)

    def params_for(self, primitive: jcore.Primitive, params: dict) -> dict:
        """``params`` minus those the handler does not take and that hold their default (None,
        or the value the primitive gets when the caller leaves it out, e.g. ``accuracy``);
        a non-default value the handler cannot take is an error."""
        if self.any_kwargs:
            return params
        out = {}
        for k, v in params.items():
            if k in self.keywords:
                out[k] = v
            elif not _is_default(primitive, k, v):
                raise TypeError(
                    f"handler {self.fn.__qualname__} for primitive {primitive.name} does not take the parameter "
                    f"{k}={v!r} (not its default); add it or **params to the handler's signature")
        return out

    def score(self, args: Sequence[Any]) -> Optional[int]:
        """Total distance from the operands' types to the annotations; None if no match."""
        if len(args) < len(self.types) or (self.rest is None and len(args) != len(self.types)):
            return None
        total = 0
        for i, a in enumerate(args):
            d = _distance(a, self.types[i] if i < len(self.types) else self.rest)
            if d is None:
                return None
            total += d
        return total


def _is_dense(x: Any) -> bool:
    return not is_implicit(x) and (isinstance(x, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)))


def _distance(x: Any, ann: Any) -> Optional[int]:
    if ann is object or ann is Any or ann is inspect.Parameter.empty:
        return 1000
    origin = typing.get_origin(ann)
    if origin is Union or origin is types.UnionType:
        ds = [d for d in (_distance(x, a) for a in typing.get_args(ann)) if d is not None]
        return min(ds) if ds else None
    if ann is jax.Array:
        return 0 if _is_dense(x) else None
    if isinstance(ann, type) and isinstance(x, ann):
        return type(x).__mro__.index(ann) if ann in type(x).__mro__ else 500
    return None


_REGISTRY: dict[str, list[_Handler]] = {}
_CACHE: dict = {}
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("namax_active_handlers", default=())


def _name(p: Union[str, jcore.Primitive]) -> str:
    if isinstance(p, jcore.Primitive):
        return p.name
    if isinstance(p, str):
        if p not in _KNOWN:
            raise ValueError(f"unknown primitive name {p!r}; pass the Primitive object for custom primitives")
        return p
    raise TypeError(f"expected a primitive or a primitive name, got {p!r}")


def primitive_handler(primitives: Union[str, jcore.Primitive, Iterable[Union[str, jcore.Primitive]]],
                      precedence: int = 0):
    """Register the decorated function as a handler for ``primitives`` (names or objects).

    Among handlers matching equally specifically, the higher ``precedence`` runs first,
    then the one registered last.

    >>> import jax.numpy as jnp
    >>> from namax.quant.implicit import ImplicitArray
    >>> class Ones(ImplicitArray):
    ...     default_dtype = jnp.float32
    ...     def materialize(self):
    ...         return jnp.ones(self.shape, self.dtype)
    >>> @primitive_handler("log")
    ... def log_of_ones(primitive, x: Ones):
    ...     return jnp.zeros(x.shape, x.dtype)
    >>> from namax.quant import use_implicit_args
    >>> use_implicit_args(jnp.log)(Ones(shape=(2,))).tolist()
    [0.0, 0.0]
    """
    names = [primitives] if isinstance(primitives, (str, jcore.Primitive)) else list(primitives)
    names = [_name(p) for p in names]

    def decorate(fn: Callable) -> Callable:
        for n in names:
            _REGISTRY.setdefault(n, []).append(
                _Handler(fn, order=sum(map(len, _REGISTRY.values())), precedence=precedence))
        _CACHE.clear()
        return fn

    return decorate


def register(primitive: Union[str, jcore.Primitive, Iterable[Union[str, jcore.Primitive]]], precedence: int = 0):
    """Quax's spelling of :func:`primitive_handler` (an alias): ``@register(lax.mul_p)``.

    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> from namax.quant.implicit import ImplicitArray
    >>> class Twos(ImplicitArray):
    ...     default_dtype = jnp.float32
    ...     def materialize(self):
    ...         return jnp.full(self.shape, 2.0, self.dtype)
    >>> @register(lax.mul_p)
    ... def _twice(primitive, x: Twos, y):
    ...     return y + y
    >>> from namax.quant.use_implicit import quaxify
    >>> quaxify(lambda a, b: a * b)(Twos(shape=(2,)), jnp.arange(2.0)).tolist()
    [0.0, 2.0]
    """
    return primitive_handler(primitive, precedence=precedence)


def _candidates(name: str, args: Sequence[Any]) -> list[tuple[_Handler, bool]]:
    key = (name, tuple(type(a) for a in args))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    found = []
    orders = [(tuple(args), False)]
    commutes = all(getattr(type(a), "commute_ops", True) for a in args if is_implicit(a))
    if name in COMMUTATIVE and len(args) == 2 and commutes:
        orders.append(((args[1], args[0]), True))
    for rank, (ordered, swapped) in enumerate(orders):
        scored = [(h.score(ordered), h) for h in _REGISTRY.get(name, ())]
        scored = sorted(((s, -h.precedence, -h.order, h) for s, h in scored if s is not None), key=lambda t: t[:3])
        found += [(h, swapped) for *_, h in scored]
    _CACHE[key] = found
    return found


def dispatch(primitive: jcore.Primitive, *args: Any, **params: Any) -> Any:
    """Apply ``primitive`` to operands some of which are implicit arrays.

    Tries the registered handlers in order of specificity, then materializes.

    >>> import jax.numpy as jnp
    >>> from jax.extend.core.primitives import mul_p
    >>> from namax.quant.zeros import Zeros
    >>> dispatch(mul_p, jnp.ones(3), Zeros(shape=(3,)))  # Zeros' handler, operands swapped
    Zeros((3,), float32)
    """
    active = _ACTIVE.get()
    ids = tuple(id(a) for a in args)
    nested = any(_has_implicit_child(a) for a in args)
    for handler, swapped in _candidates(primitive.name, args):
        if (handler.fn, ids) in active:
            continue  # a handler deferring to default_handler on its own operands
        token = _ACTIVE.set(active + ((handler.fn, ids),))
        try:
            ordered = (args[1], args[0]) if swapped else args
            kwargs = handler.params_for(primitive, params)
            if nested:
                # Qax semantics: the handler runs as a traced function of its operands' children,
                # so what it does to an implicit child goes through that child's own handlers.
                out = _NESTED_CALLER[0](functools.partial(handler.fn, primitive), ordered, kwargs)
            else:
                out = handler.fn(primitive, *ordered, **kwargs)
        finally:
            _ACTIVE.reset(token)
        if out is not NotImplemented:
            return out
    return materialize_and_bind(primitive, args, params)


def _no_nested_caller(fn: Callable, args: Sequence[Any], kwargs: dict) -> Any:
    raise RuntimeError("namax.quant.use_implicit was not imported; import namax.quant to use nested implicit arrays")


_NESTED_CALLER: list = [_no_nested_caller]


def set_nested_caller(caller: Callable) -> None:
    """Install ``caller(fn, args, kwargs)``, which runs ``fn(*args, **kwargs)`` with the
    operands flattened one implicit layer (set by :mod:`namax.quant.use_implicit`).

    >>> from namax.quant import use_implicit
    >>> set_nested_caller(use_implicit.call_one_layer)
    """
    _NESTED_CALLER[0] = caller


def _has_implicit_child(x: Any) -> bool:
    if not is_implicit(x):
        return False
    return any(is_implicit(leaf) for leaf in jax.tree_util.tree_leaves(_children(x), is_leaf=is_implicit))


def materialize_and_bind(primitive: jcore.Primitive, args: Sequence[Any], params: dict) -> Any:
    """Warn, materialize every implicit operand and bind ``primitive`` plainly.

    >>> import warnings, jax.numpy as jnp
    >>> from jax.extend.core.primitives import exp_p
    >>> from namax.quant.zeros import Zeros
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     materialize_and_bind(exp_p, [Zeros(shape=(2,))], {"accuracy": None}).tolist()
    [1.0, 1.0]
    >>> str(caught[0].message)
    'Primitive exp was not handled by class Zeros, so implicit args will be materialized.'
    """
    first = next((a for a in args if is_implicit(a)), None)
    if first is not None and getattr(type(first), "warn_on_materialize", True):
        warn_materialized(primitive.name, first)
    return primitive.bind(*[materialize_value(a) for a in args], **complete_params(primitive, params))


_RECORDERS: contextvars.ContextVar = contextvars.ContextVar("namax_materialization_recorders", default=())


@contextlib.contextmanager
def recording_materializations(counter: Any) -> Iterator[Any]:
    """Count every materialization inside the block in ``counter[(primitive, class name)]``
    (a ``collections.Counter``); the warnings are still issued.

    >>> import collections, jax.numpy as jnp
    >>> from namax.quant.zeros import Zeros
    >>> from namax.quant.use_implicit import use_implicit_args
    >>> seen = collections.Counter()
    >>> with recording_materializations(seen), warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     _ = use_implicit_args(jnp.exp)(Zeros(shape=(2,), dtype=jnp.float32))
    >>> dict(seen)
    {('exp', 'Zeros'): 1}
    """
    token = _RECORDERS.set(_RECORDERS.get() + (counter,))
    try:
        yield counter
    finally:
        _RECORDERS.reset(token)


def warn_materialized(name: str, value: ImplicitArray) -> None:
    """The standard materialization warning (a ``UserWarning``), counted by every active
    :func:`recording_materializations`.

    >>> import warnings
    >>> from namax.quant.zeros import Zeros
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_materialized("cumsum", Zeros(shape=(2,)))
    >>> caught[0].category.__name__, str(caught[0].message)
    ('UserWarning', 'Primitive cumsum was not handled by class Zeros, so implicit args will be materialized.')
    """
    for counter in _RECORDERS.get():
        counter[(name, type(value).__name__)] += 1
    warnings.warn(
        f"Primitive {name} was not handled by class {type(value).__name__}, so implicit args will be materialized.",
        UserWarning, stacklevel=3,
    )


def default_handler(primitive: jcore.Primitive, *args: Any, **params: Any) -> Any:
    """Bind ``primitive`` on ``args``; implicit args go through their own handlers (or materialize).

    >>> import jax.numpy as jnp
    >>> from jax.extend.core.primitives import add_p
    >>> default_handler(add_p, jnp.ones(2), jnp.ones(2)).tolist()
    [2.0, 2.0]

    Parameters that a newer JAX added to ``primitive`` and the caller left out (code
    written for an older JAX) are filled in with their defaults (:func:`complete_params`):

    >>> from jax.extend.core.primitives import sin_p
    >>> float(default_handler(sin_p, jnp.zeros(())))  # no accuracy= given
    0.0
    """
    params = complete_params(primitive, params)
    if any(is_implicit(a) for a in args):
        return dispatch(primitive, *args, **params)
    return primitive.bind(*args, **params)


# -- parameters a newer JAX added -------------------------------------------------------------

_EXPLICIT_PROBES: dict[str, Callable] = {
    "broadcast_in_dim": lambda x: lax.broadcast_in_dim(x, (2, 2), (1,)),
    "reshape": lambda x: lax.reshape(x, (2, 1)),
    "convert_element_type": lambda x: lax.convert_element_type(x, np.int32),
    "reduce_sum": lambda x: jnp.sum(x), "reduce_max": lambda x: jnp.max(x), "reduce_min": lambda x: jnp.min(x),
    "reduce_prod": lambda x: jnp.prod(x), "reduce_and": lambda x: jnp.all(x > 0),
    "reduce_or": lambda x: jnp.any(x > 0),
    "argmax": lambda x: lax.argmax(x, 0, np.int32), "argmin": lambda x: lax.argmin(x, 0, np.int32),
    "dot_general": lambda x: lax.dot_general(x, x, (((0,), (0,)), ((), ()))),
    "integer_pow": lambda x: lax.integer_pow(x, 2),
    "reduce_precision": lambda x: lax.reduce_precision(x, 5, 10),
    "transpose": lambda x: lax.transpose(x, (0,)),
    "squeeze": lambda x: lax.squeeze(lax.broadcast_in_dim(x, (1, 2), (1,)), (0,)),
    "rev": lambda x: lax.rev(x, (0,)), "slice": lambda x: lax.slice(x, (0,), (1,)),
    "dynamic_slice": lambda x: lax.dynamic_slice(x, (0,), (1,)),
    "dynamic_update_slice": lambda x: lax.dynamic_update_slice(x, x, (0,)),
    "concatenate": lambda x: lax.concatenate([x, x], 0),
    "pad": lambda x: lax.pad(x, x[0], [(1, 1, 0)]),
    "select_n": lambda x: lax.select_n(x > 0, x, x),
    "iota": lambda x: lax.iota(np.int32, 2),
    "cumsum": lambda x: lax.cumsum(x, 0), "cumprod": lambda x: lax.cumprod(x, 0),
    "cummax": lambda x: lax.cummax(x, 0), "cummin": lambda x: lax.cummin(x, 0),
    "cumlogsumexp": lambda x: lax.cumlogsumexp(x, 0),
}
_PROBED: dict[str, tuple] = {}
_PROBE_DTYPES = (np.float32, np.int32, np.bool_)


def _probe(name: str) -> tuple[Optional[frozenset], dict]:
    """(all parameter names, the omittable ones with their values) of primitive ``name``, as
    JAX gives them when its public ``jax.lax`` function is called with only the required
    arguments. A parameter is omittable if its value there is None or the lax function's
    keyword default. ``(None, {})`` when there is no public function to probe."""
    fn = _EXPLICIT_PROBES.get(name)
    lax_fn = getattr(lax, name, None)
    optional: dict = {}
    if lax_fn is not None and callable(lax_fn):
        try:
            sig = inspect.signature(lax_fn)
        except (TypeError, ValueError):
            sig = None
        if sig is not None:
            ps = list(sig.parameters.values())
            optional = {p.name: p.default for p in ps if p.default is not p.empty}
            if fn is None and not any(p.kind == p.VAR_POSITIONAL for p in ps):
                n = sum(1 for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                        and p.default is p.empty)
                fn = (lambda f, k: (lambda x: f(*([x] * k))))(lax_fn, n) if n else None
    if fn is None:
        return None, {}
    for dtype in _PROBE_DTYPES:
        try:
            closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct((2,), dtype))
        except Exception:  # the probe does not accept this dtype: try the next one (or learn nothing)
            continue
        eqn = next((e for e in closed.eqns if e.primitive.name == name), None)
        if eqn is None:
            return None, {}
        return frozenset(eqn.params), {k: v for k, v in eqn.params.items()
                                       if v is None or (k in optional and _same(v, optional[k]))}
    return None, {}


def _probed(name: str) -> tuple[Optional[frozenset], dict]:
    found = _PROBED.get(name)
    if found is None:
        found = _PROBED[name] = _probe(name)
    return found


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # values that do not compare (arrays): not the same
        return False


def primitive_defaults(primitive: Union[str, jcore.Primitive]) -> dict:
    """The parameters of ``primitive`` a caller may leave out, with the values JAX gives them
    (learned once by tracing the public ``jax.lax`` function).

    >>> primitive_defaults("sin")
    {'accuracy': None}
    >>> primitive_defaults("reduce_sum")
    {'out_sharding': None}
    """
    return dict(_probed(primitive if isinstance(primitive, str) else primitive.name)[1])


def complete_params(primitive: jcore.Primitive, params: dict) -> dict:
    """``params`` as this JAX's ``primitive`` takes them: parameters a newer JAX added are filled
    in with their defaults; parameters it does not have are dropped if they are None (a
    handler passing one primitive's parameters to another, e.g. ``out_sharding``).

    >>> from jax.extend.core.primitives import exp_p, reduce_and_p
    >>> complete_params(exp_p, {})
    {'accuracy': None}
    >>> complete_params(reduce_and_p, {"axes": (0,), "out_sharding": None})
    {'axes': (0,)}
    """
    known, defaults = _probed(primitive.name)
    out = {k: v for k, v in defaults.items() if k not in params}
    out.update({k: v for k, v in params.items() if v is not None or known is None or k in known})
    return out


def _is_default(primitive: jcore.Primitive, key: str, value: Any) -> bool:
    if value is None:
        return True
    defaults = _probed(primitive.name)[1]
    return key in defaults and _same(value, defaults[key])


@primitive_handler("stop_gradient")
def _stop_gradient(primitive, x: ImplicitArray):
    """``stop_gradient`` of an implicit array: its children without gradients (any subclass
    may register a more specific rule)."""
    return lax.stop_gradient(x)


@primitive_handler("name")
def _checkpoint_name(primitive, x: ImplicitArray, *, name):
    """``jax.ad_checkpoint.checkpoint_name`` of an implicit array (``nx.scan`` names its carries
    and inputs for remat policies): every child gets the name, the array stays implicit."""
    return jax.ad_checkpoint.checkpoint_name(x, name)
