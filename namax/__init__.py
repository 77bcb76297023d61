"""namax: named tensors for JAX, as a compiler pass.

>>> import namax as nx
>>> Batch, Embed = nx.make_axes(batch=2, embed=3)
>>> x = nx.ones((Batch, Embed))
>>> nx.sum(x, Embed).axes
(Axis('batch', 2),)
"""

from . import tag as _tag_module  # registers the named_axes primitive
from .axis import Axis, AxisSelection, AxisSelector, AxisSpec, axis_name, make_axes
from .named import NamedArray, is_named, named
from .ops.creation import *  # noqa: F401,F403
from .ops.dot import *  # noqa: F401,F403
from .ops.elementwise import *  # noqa: F401,F403
from .ops.indexing import *  # noqa: F401,F403
from .ops.reductions import *  # noqa: F401,F403
from .ops.shape import *  # noqa: F401,F403
from .tag import named_axes_p, tag
from . import nn  # noqa: E402  (hax.nn.softmax, as in the seeds)
from . import random  # noqa: E402  (hax.random.normal, ...)

from .ops import creation as _c, dot as _d, elementwise as _e, indexing as _i, reductions as _r, shape as _s

__all__ = [
    "Axis", "AxisSelection", "AxisSelector", "AxisSpec", "axis_name", "make_axes",
    "NamedArray", "is_named", "named", "named_axes_p", "tag", "nn", "random",
    *_c.__all__, *_d.__all__, *_e.__all__, *_i.__all__, *_r.__all__, *_s.__all__,
]
del _c, _d, _e, _i, _r, _s
