"""Named neural-network layers and functions (Equinox modules).

>>> import jax, namax as nx
>>> Batch, Embed, Out = nx.make_axes(batch=2, embed=4, out=3)
>>> layer = nx.nn.Linear.init(In=Embed, Out=Out, key=jax.random.key(0))
>>> nx.nn.softmax(layer(nx.ones((Batch, Embed))), Out).axes
(Axis('batch', 2), Axis('out', 3))
"""

from . import activations, normalization
from .activations import *  # noqa: F401,F403
from .linear import Linear
from .normalization import *  # noqa: F401,F403

__all__ = [
    "activations", "normalization", "Linear",
    *activations.__all__, *normalization.__all__,
]
