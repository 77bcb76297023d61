"""Functions made from a table row: a real signature, bound arguments, errors that show it.

Table-driven op families (``namax.random``'s samplers, ``namax.ops.poly``) build each public
function with :func:`table_function`, so ``inspect.signature`` and ``help`` show its true
parameters and a wrong call names them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence


def table_function(name: str, required: Sequence[str], optional: Sequence[tuple[str, Any]],
                   body: Callable[[dict[str, Any]], Any], module: str) -> Callable[..., Any]:
    """A function ``name(*required, **optional)`` of ``module`` that calls ``body`` with every
    argument by name. (``module`` is where it is published: its docstring examples run there.)

    >>> add = table_function("add", ["a"], [("b", 1)], lambda args: args["a"] + args["b"], __name__)
    >>> add(2), add(2, b=5), str(inspect.signature(add))
    (3, 7, '(a, b=1)')
    >>> add()
    Traceback (most recent call last):
    ...
    TypeError: add(a, b=1): missing a required argument: 'a'
    """
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature([inspect.Parameter(p, kind) for p in required]
                                  + [inspect.Parameter(p, kind, default=d) for p, d in optional])

    def function(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}{signature}: {e}") from None
        bound.apply_defaults()
        return body(dict(bound.arguments))

    function.__name__ = function.__qualname__ = name
    function.__module__ = module
    function.__signature__ = signature  # type: ignore[attr-defined]
    return function


__all__ = ["table_function"]
