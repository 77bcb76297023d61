"""The jaxpr interpreter shared by every namax pass.

>>> import jax, jax.numpy as jnp
>>> from namax.interpreter import EvalInterpreter
>>> closed = jax.make_jaxpr(lambda x: jnp.cos(x) + 1.0)(0.0)
>>> float(EvalInterpreter().run(closed, 0.0)[0])
2.0
"""

from .core import Interpreter, Rule
from .evaluate import EvalInterpreter, bind_eqn, eval_with_rules, source_context
from .subjaxprs import has_subjaxprs, map_subjaxprs

__all__ = ["Interpreter", "Rule", "EvalInterpreter", "bind_eqn", "eval_with_rules", "source_context", "has_subjaxprs", "map_subjaxprs"]
