"""Named neural-network layers and functions (Equinox modules).

Functions: normalisation (softmax, log_softmax, logsumexp, standardize), activations,
attention (dot_product_attention, masks, biases), losses, pooling, dropout, ragged_dot.
Modules: Linear, Embedding, LayerNorm, RMSNorm, Dropout, MLP, MultiHeadAttention, Conv,
ConvTranspose, MoELinear, Stacked; muP parameterisations in ``mup``. Every
parameter is a NamedArray, so its axis names reach the jaxpr.

>>> import jax, namax as nx
>>> Batch, Embed, Out = nx.make_axes(batch=2, embed=4, out=3)
>>> layer = nx.nn.Linear.init(In=Embed, Out=Out, key=jax.random.key(0))
>>> nx.nn.softmax(layer(nx.ones((Batch, Embed))), Out).axes
(Axis('batch', 2), Axis('out', 3))
"""

from . import (activations, attention, conv, dropout_layer, embedding, linear, loss, mlp, moe, mup, normalization,
               pool, scan)
from .activations import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .conv import Conv, ConvTranspose
from .dropout_layer import Dropout, dropout
from .embedding import Embedding
from .linear import Linear
from .loss import *  # noqa: F401,F403
from .mlp import MLP
from .moe import MoELinear, ragged_dot
from .normalization import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .scan import BlockSeq, ScanCheckpointPolicy, Stacked

__all__ = [
    "activations", "attention", "conv", "dropout_layer", "embedding", "linear", "loss", "mlp", "moe", "mup",
    "normalization", "pool", "scan",
    "Conv", "ConvTranspose", "MoELinear", "ragged_dot", "Dropout", "dropout", "Embedding", "Linear", "MLP", "Stacked", "BlockSeq", "ScanCheckpointPolicy",
    *activations.__all__, *attention.__all__, *loss.__all__, *normalization.__all__, *pool.__all__,
]
