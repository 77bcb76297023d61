"""The jaxpr interpreter shared by every namax pass."""

from .core import Interpreter, Rule
from .evaluate import EvalInterpreter, bind_eqn, eval_with_rules
from .subjaxprs import has_subjaxprs, map_subjaxprs

__all__ = ["Interpreter", "Rule", "EvalInterpreter", "bind_eqn", "eval_with_rules", "has_subjaxprs", "map_subjaxprs"]
