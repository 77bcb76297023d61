"""Named operations, one module per family; ``namax`` re-exports each module's ``__all__``.

>>> import namax as nx
>>> from namax.ops import reductions
>>> nx.sum is reductions.sum, "sum" in reductions.__all__
(True, True)
"""
