"""``infer_names``: trace a function and solve the axis names of every value in it."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from .naming import leaf_names, value_names
from .passes.names import NamesResult, infer


def infer_names(fn: Callable, *args: Any, in_axes: Optional[Sequence[Any]] = None,
                check_sizes: bool = False, **kwargs: Any) -> NamesResult:
    """Trace ``fn(*args, **kwargs)`` and name every dimension of every value, forward and backward.

    The same trace and passes as :func:`namax.namedjit`: implicit arguments (LoRA, int4)
    enter as dense values and are rewritten first, so names are solved on the program
    namedjit compiles. NamedArray arguments bring their own axis names. ``in_axes`` names
    plain arrays: a tuple with one entry per positional argument, each None (unnamed), a
    tuple of names (a string, an Axis or None per dimension) for an array argument, or a
    matching container of those for a pytree argument. ``check_sizes=True`` rejects one
    name used at two sizes (by default allowed: slicing keeps an axis's name at a new size).

    >>> import jax.numpy as jnp
    >>> r = infer_names(lambda x, w: x @ w, jnp.ones((2, 3)), jnp.ones((3, 4)),
    ...                 in_axes=(("batch", "embed"), ("embed", "mlp")))
    >>> r.out_names
    [('batch', 'mlp')]
    """
    from .driver import Config, analyse

    config = Config(in_axes=in_axes if in_axes is not None else (None,) * len(args))
    program = analyse(fn, args, kwargs, config, through="implicit")
    return infer(program.closed, program.in_names, check_sizes=check_sizes)


__all__ = ["infer_names", "value_names", "leaf_names"]
