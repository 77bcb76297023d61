"""Per-primitive handlers for implicit arrays, chosen by the types of the operands.

A handler is ``fn(primitive, *operands, **params)``; its positional parameters after
``primitive`` are annotated with the operand types it accepts (unannotated = anything,
``jax.Array`` = any dense value, an ImplicitArray subclass = that class or a subclass).
Among the handlers matching an operand tuple the most specific runs first; one that
returns ``NotImplemented`` passes to the next. For commutative binary primitives the
swapped operand order is tried too. If nothing handles the call, the implicit operands
are materialized with a ``UserWarning``.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import types
import typing
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import jax
import numpy as np
from jax.extend import core as jcore
from jax.extend.core import primitives as _prims

from .implicit import ImplicitArray, is_implicit, materialize_value

COMMUTATIVE = frozenset({"add", "add_any", "mul", "max", "min", "and", "or", "xor", "eq", "ne"})
"""Binary primitives whose handlers also match with the operands swapped."""

_KNOWN = {p.name for p in vars(_prims).values() if isinstance(p, jcore.Primitive)}


class _Handler:
    def __init__(self, fn: Callable, order: int):
        self.fn = fn
        self.order = order
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

    def params_for(self, params: dict) -> dict:
        """``params`` minus those the handler does not take and that are None (e.g. ``sharding``)."""
        if self.any_kwargs:
            return params
        return {k: v for k, v in params.items() if k in self.keywords or v is not None}

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


def primitive_handler(primitives: Union[str, jcore.Primitive, Iterable[Union[str, jcore.Primitive]]]):
    """Register the decorated function as a handler for ``primitives`` (names or objects).

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

    def register(fn: Callable) -> Callable:
        for n in names:
            _REGISTRY.setdefault(n, []).append(_Handler(fn, order=sum(map(len, _REGISTRY.values()))))
        _CACHE.clear()
        return fn

    return register


def _candidates(name: str, args: Sequence[Any]) -> list[tuple[_Handler, bool]]:
    key = (name, tuple(type(a) for a in args))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    found = []
    orders = [(tuple(args), False)]
    if name in COMMUTATIVE and len(args) == 2:
        orders.append(((args[1], args[0]), True))
    for rank, (ordered, swapped) in enumerate(orders):
        scored = [(h.score(ordered), h) for h in _REGISTRY.get(name, ())]
        scored = sorted(((s, -h.order, h) for s, h in scored if s is not None), key=lambda t: t[:2])
        found += [(h, swapped) for _, _, h in scored]
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
    for handler, swapped in _candidates(primitive.name, args):
        if (handler.fn, ids) in active:
            continue  # a handler deferring to default_handler on its own operands
        token = _ACTIVE.set(active + ((handler.fn, ids),))
        try:
            ordered = (args[1], args[0]) if swapped else args
            out = handler.fn(primitive, *ordered, **handler.params_for(params))
        finally:
            _ACTIVE.reset(token)
        if out is not NotImplemented:
            return out
    return materialize_and_bind(primitive, args, params)


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
    if first is not None:
        warn_materialized(primitive.name, first)
    return primitive.bind(*[materialize_value(a) for a in args], **params)


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
    """
    if any(is_implicit(a) for a in args):
        return dispatch(primitive, *args, **params)
    return primitive.bind(*args, **params)
