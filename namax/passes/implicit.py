"""The implicit-array pass inside ``namedjit``: LoRA, int4 and Zeros arguments, rewritten.

``namedjit`` calls :func:`rewrite` when its arguments hold implicit arrays
(:mod:`namax.quant`): the function is traced on the arrays' logical avals and its jaxpr
interpreted with the real (implicit) values, so every handler fires (a LoRA ``dot_general``
becomes ``x w + (x a) b^T``; an int4 one a dot with in-program dequantisation). The result
is a plain jaxpr, on which the names and sharding passes then run unchanged.

The ``named_axes`` tag passes implicit values through untouched: naming a LoRA weight must
not materialize it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from ..quant.handlers import primitive_handler
from ..quant.implicit import ImplicitArray, is_implicit
from ..quant.use_implicit import use_implicit_args
from ..tag import named_axes_p


@primitive_handler(named_axes_p)
def _tag_implicit(primitive, x: ImplicitArray, *, axes):
    """A tag on an implicit value: the value is unchanged, so is its representation."""
    return x


def has_implicit(tree: Any) -> bool:
    """True if any leaf of ``tree`` is an implicit array."""
    return any(is_implicit(x) for x in jax.tree_util.tree_leaves(tree, is_leaf=is_implicit))


def rewrite(fn: Callable) -> Callable:
    """``fn`` taking implicit arrays anywhere in its arguments, their handlers applied."""
    return use_implicit_args(fn)


def auto(fn: Callable) -> Callable:
    """Run ``fn`` on implicit arguments as they are; if it uses one as a plain array, rewrite.

    Functions that handle implicit values themselves (``jax.grad(use_implicit_args(loss))``,
    which differentiates with respect to a LoRA weight's ``a`` and ``b``) keep their
    meaning; a model that simply multiplies by its weights gets the handlers.
    """

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (TypeError, ValueError) as e:
            if not _mentions_implicit(e, (args, kwargs)):
                raise
        return use_implicit_args(fn)(*args, **kwargs)

    return run


def _mentions_implicit(error: Exception, tree: Any) -> bool:
    """True if ``error`` came from an implicit array used where JAX wanted an array."""
    text = str(error)
    classes = {type(x) for x in jax.tree_util.tree_leaves(tree, is_leaf=is_implicit) if is_implicit(x)}
    return any(c.__name__ in text for c in classes) or "setting an array element with a sequence" in text
