"""Passes over jaxprs, each built on :class:`namax.interpreter.Interpreter`.

``names``: axis-name propagation (:func:`namax.passes.names.infer`).
"""

from . import names
from .names import AxisNameConflictError, NamesResult, infer

__all__ = ["names", "AxisNameConflictError", "NamesResult", "infer"]
