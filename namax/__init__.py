"""namax: named tensors for JAX, as a compiler pass.

>>> import namax as nx
>>> Batch, Embed = nx.make_axes(batch=2, embed=3)
>>> x = nx.ones((Batch, Embed))
>>> nx.sum(x, Embed).axes
(Axis('batch', 2),)
"""

from .axis import Axis, AxisSelection, AxisSelector, AxisSpec, axis_name, make_axes
from .named import NamedArray, is_named, named
from .ops.creation import *  # noqa: F401,F403
from .ops.dot import *  # noqa: F401,F403
from .ops.elementwise import *  # noqa: F401,F403
from .ops.indexing import *  # noqa: F401,F403
from .ops.reductions import *  # noqa: F401,F403
from .ops.shape import *  # noqa: F401,F403
from .tag import named_axes_p  # ``namax.tag`` is the module; ``namax.tag.tag`` the function
from . import nn  # noqa: E402  (hax.nn.softmax, as in the seeds)
from . import random  # noqa: E402  (hax.random.normal, ...)
from . import partitioning  # noqa: E402
from .infer import infer_names  # noqa: E402
from .dump import dump  # noqa: E402  (``namax.dump`` is the function)
from .jit import NamedJit, namedjit  # noqa: E402
from .partitioning import ShardingError, axis_mapping, current_axis_mapping, fsdp, shard  # noqa: E402

from .ops import creation as _c, dot as _d, elementwise as _e, indexing as _i, reductions as _r, shape as _s

__all__ = [
    "Axis", "AxisSelection", "AxisSelector", "AxisSpec", "axis_name", "make_axes",
    "NamedArray", "is_named", "named", "named_axes_p", "nn", "random", "partitioning",
    "infer_names", "dump", "namedjit", "NamedJit", "ShardingError", "axis_mapping", "current_axis_mapping", "fsdp", "shard",
    *_c.__all__, *_d.__all__, *_e.__all__, *_i.__all__, *_r.__all__, *_s.__all__,
]
del _c, _d, _e, _i, _r, _s
