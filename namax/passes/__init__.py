"""Passes over jaxprs, each built on :class:`namax.interpreter.Interpreter`.

``names``: axis-name propagation (:func:`namax.passes.names.infer`).

>>> import jax, jax.numpy as jnp
>>> from namax.passes import infer
>>> closed = jax.make_jaxpr(lambda x: jnp.sum(jnp.exp(x), axis=1))(jnp.ones((2, 3)))
>>> infer(closed, [("batch", "vocab")]).out_names
[('batch',)]
"""

from . import names
from .names import AxisNameConflictError, NamesResult, infer

__all__ = ["names", "AxisNameConflictError", "NamesResult", "infer"]
