"""namax: named tensors for JAX, as a compiler pass.

>>> import namax as nx
>>> Batch, Embed = nx.make_axes(batch=2, embed=3)
>>> x = nx.ones((Batch, Embed))
>>> nx.sum(x, Embed).axes
(Axis('batch', 2),)
"""

from .axis import *  # noqa: F401,F403  (Axis, make_axes and the axis algebra)
from .named import NamedArray, is_named, named
from .ops.creation import *  # noqa: F401,F403
from .ops.dot import *  # noqa: F401,F403
from .ops.elementwise import *  # noqa: F401,F403
from .ops.indexing import *  # noqa: F401,F403
from .ops.reductions import *  # noqa: F401,F403
from .ops.shape import *  # noqa: F401,F403
from .ops.sorting import *  # noqa: F401,F403
from .ops.arrays import *  # noqa: F401,F403
from .ops.linalg import *  # noqa: F401,F403
from .hof import *  # noqa: F401,F403
from .ops.fft import *  # noqa: F401,F403
from .ops.poly import *  # noqa: F401,F403
from .ops.broadcast import *  # noqa: F401,F403  (the public broadcast_arrays)
from .ref import *  # noqa: F401,F403  (NamedRef, new_ref, get, swap, freeze)
from .tag import named_axes_p  # ``namax.tag`` is the module; ``namax.tag.tag`` the function
from . import nn  # noqa: E402  (hax.nn.softmax, as in the seeds)
from . import random  # noqa: E402  (hax.random.normal, ...)
from . import partitioning  # noqa: E402
from . import haxtyping, hof, state_dict, tree_util, util  # noqa: E402
from .infer import infer_names  # noqa: E402
from .dump import dump  # noqa: E402  (``namax.dump`` is the function)
from .plan import plan  # noqa: E402  (``namax.plan`` is the function; ``from namax.plan import Plan``)
from .jit import NamedJit, namedjit  # noqa: E402
from .shard_map import set_mesh, shard_map  # noqa: E402  (also namax.partitioning.shard_map)
from . import debug  # noqa: E402
from .partitioning import (  # noqa: E402
    ShardingError, auto_sharded, axis_mapping, current_axis_mapping, fsdp, shard, shard_with_axis_mapping,
)
from .haxtyping import (  # noqa: E402
    Named, NamedArrayAxes, NamedArrayAxesSpec, ReductionFunction, SimpleReductionFunction, are_shape_checks_enabled,
    check_shape, enable_shape_checks,
)
from .util import field, is_named_array  # noqa: E402

named_jit = namedjit  # Haliax's spelling (also ``namax.partitioning.named_jit``)

from .ops import creation as _c, dot as _d, elementwise as _e, indexing as _i, reductions as _r, shape as _s
from .ops import arrays as _a, broadcast as _b, fft as _f, linalg as _l, poly as _p, sorting as _o
from . import axis as _x, hof as _h, ref as _ref

__all__ = [
    "NamedArray", "is_named", "named", "named_axes_p", "nn", "random", "partitioning",
    "shard_map", "set_mesh", "debug",
    "infer_names", "dump", "plan", "namedjit", "named_jit", "NamedJit", "ShardingError", "axis_mapping", "current_axis_mapping",
    "fsdp", "shard", "auto_sharded", "shard_with_axis_mapping",
    "Named", "NamedArrayAxes", "NamedArrayAxesSpec", "ReductionFunction", "SimpleReductionFunction",
    "are_shape_checks_enabled", "check_shape", "enable_shape_checks", "field", "is_named_array",
    "haxtyping", "hof", "state_dict", "tree_util", "util",
    *_x.__all__, *_c.__all__, *_d.__all__, *_e.__all__, *_i.__all__, *_r.__all__, *_s.__all__,
    *_a.__all__, *_l.__all__, *_o.__all__, *_f.__all__, *_h.__all__, *_p.__all__, *_b.__all__, *_ref.__all__,
]
del _x, _c, _d, _e, _i, _r, _s, _a, _b, _l, _o, _f, _h, _p, _ref
