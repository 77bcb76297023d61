"""Mixture-of-experts matmuls by name: :func:`ragged_dot` and the :class:`MoELinear` layer,
on ``jax.lax.ragged_dot``.

The tokens come sorted by expert along one axis; ``group_sizes`` (an integer NamedArray
over the ``Experts`` axis) says how many consecutive tokens go to each expert.
``examples/moe.py`` builds a top-k routed MoE MLP from them.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import random as nxrandom
from ..axis import Axis, AxisSelector, axis_name
from ..named import NamedArray, _axes_str, wrap
from ..ops.creation import zeros


def _check_group_sizes(group_sizes: Any, Tokens: Axis, what: str) -> Axis:
    """The ``Experts`` axis of a one-axis integer ``group_sizes``; concrete sizes are checked."""
    if not isinstance(group_sizes, NamedArray):
        raise TypeError(f"{what}: group_sizes must be an integer NamedArray over the Experts axis, "
                        f"got {type(group_sizes).__name__}")
    if len(group_sizes.axes) != 1:
        raise ValueError(f"{what}: group_sizes must have exactly one axis (Experts), got {_axes_str(group_sizes.axes)}")
    if not jnp.issubdtype(group_sizes.dtype, jnp.integer):
        raise TypeError(f"{what}: group_sizes must be integers, got dtype {group_sizes.dtype}")
    if not isinstance(group_sizes.array, jax.core.Tracer):
        sizes = np.asarray(group_sizes.array)
        Experts = group_sizes.axes[0]
        if (sizes < 0).any():
            e = int(np.argmax(sizes < 0))
            raise ValueError(f"{what}: group_sizes[{Experts.name!r}={e}] is {sizes[e]}; sizes must be >= 0")
        if int(sizes.sum()) > Tokens.size:
            raise ValueError(f"{what}: group_sizes over {Experts.name!r} sum to {int(sizes.sum())}, more than the "
                             f"{Tokens.size} tokens of axis {Tokens.name!r}")
    return group_sizes.axes[0]


def ragged_dot(
    lhs: NamedArray,
    rhs: NamedArray,
    group_sizes: NamedArray,
    axis: AxisSelector,
    *,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> NamedArray:
    """A grouped matmul: consecutive rows of ``lhs`` use consecutive experts' matrices of ``rhs``.

    ``lhs`` has two axes: a token axis (sorted by expert) and ``axis``, which is contracted.
    ``group_sizes`` is an integer NamedArray over one axis, ``Experts``: the first
    ``group_sizes[0]`` tokens use ``rhs[Experts=0]``, the next ``group_sizes[1]`` use
    ``rhs[Experts=1]``, and so on. ``rhs`` has ``Experts``, ``axis`` and one or more output
    axes. The result has the token axis followed by ``rhs``'s output axes.

    Concrete ``group_sizes`` must be non-negative and sum to at most the number of tokens
    (a ``ValueError`` otherwise); tokens past the sum give zero rows. Under ``jit`` the sizes
    cannot be checked: ``jax.lax.ragged_dot`` then ignores groups past the last token.

    (Haliax's ``haliax.nn.ragged_dot`` takes raw ``[tokens, in]``, ``[experts, in, out]``
    and ``[experts]`` arrays; this one takes NamedArrays and the contracted axis by name.)

    >>> import jax.numpy as jnp, namax as nx
    >>> Tok, In, Out, Exp = nx.make_axes(token=3, embed=2, out=2, experts=2)
    >>> w = nx.named(jnp.stack([jnp.eye(2), 2 * jnp.eye(2)]), (Exp, In, Out))
    >>> y = ragged_dot(nx.ones((Tok, In)), w, nx.named(jnp.array([1, 2]), Exp), "embed")
    >>> y.axes, y.array.tolist()
    ((Axis('token', 3), Axis('out', 2)), [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]])
    """
    what = "ragged_dot"
    for arg, arr in (("lhs", lhs), ("rhs", rhs)):
        if not isinstance(arr, NamedArray):
            raise TypeError(f"{what}: {arg} must be a NamedArray, got {type(arr).__name__}")
    name = axis_name(axis)
    for arg, arr in (("lhs", lhs), ("rhs", rhs)):
        if not arr.has_axis(name):
            raise ValueError(f"{what}: {arg} {_axes_str(arr.axes)} lacks the contracted axis {name!r}")
    others = [a for a in lhs.axes if a.name != name]
    if len(others) != 1:
        raise ValueError(f"{what}: lhs {_axes_str(lhs.axes)} must have exactly one axis besides {name!r} (the "
                         "tokens, sorted by expert); flatten the others first (namax.flatten_axes)")
    Tokens = others[0]
    Experts = _check_group_sizes(group_sizes, Tokens, what)
    if not rhs.has_axis(Experts.name):
        raise ValueError(f"{what}: rhs {_axes_str(rhs.axes)} lacks the Experts axis {Experts.name!r} of group_sizes")
    if rhs.axis_size(Experts.name) != Experts.size:
        raise ValueError(f"{what}: the Experts axis {Experts.name!r} has size {Experts.size} in group_sizes but "
                         f"{rhs.axis_size(Experts.name)} in rhs {_axes_str(rhs.axes)}")
    if lhs.axis_size(name) != rhs.axis_size(name):
        raise ValueError(f"{what}: the contracted axis {name!r} has size {lhs.axis_size(name)} in lhs "
                         f"{_axes_str(lhs.axes)} but {rhs.axis_size(name)} in rhs {_axes_str(rhs.axes)}")
    out_axes = tuple(a for a in rhs.axes if a.name not in (Experts.name, name))
    if not out_axes:
        raise ValueError(f"{what}: rhs {_axes_str(rhs.axes)} needs at least one output axis besides "
                         f"{Experts.name!r} and {name!r}")
    if Tokens.name in {a.name for a in out_axes} or Tokens.name == Experts.name:
        raise ValueError(f"{what}: the token axis {Tokens.name!r} of lhs is also an axis of rhs {_axes_str(rhs.axes)}")
    x = lhs.rearrange((Tokens.name, name)).array
    w = rhs.rearrange((Experts.name, name, *(a.name for a in out_axes))).array
    w = w.reshape(w.shape[:2] + (math.prod(a.size for a in out_axes),))
    out = jax.lax.ragged_dot(x, w, group_sizes.array, precision=precision,
                             preferred_element_type=preferred_element_type)
    result_axes = (Tokens, *out_axes)
    return wrap(out.reshape(tuple(a.size for a in result_axes)), result_axes)


class MoELinear(eqx.Module):
    """One ``In -> Out`` linear map per expert, applied to expert-sorted tokens with :func:`ragged_dot`.

    ``weight`` has axes ``(Experts, In, Out)`` (``(Experts, Out, In)`` with
    ``out_first=True``); ``bias`` has ``Out`` and, as in Haliax, is shared by all experts.
    ``layer(x, group_sizes)`` takes ``x`` with ``In`` and one token axis (sorted by expert)
    and ``group_sizes`` over ``Experts``; the result has the token axis and ``Out``.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> Tok, Exp, Embed, Mlp = nx.make_axes(token=5, experts=3, embed=4, mlp=6)
    >>> layer = MoELinear.init(Exp, Embed, Mlp, key=jax.random.key(0))
    >>> layer(nx.ones((Tok, Embed)), nx.named(jnp.array([2, 0, 3]), Exp)).axes
    (Axis('token', 5), Axis('mlp', 6))
    """

    weight: NamedArray
    bias: Optional[NamedArray]
    Experts: Axis = eqx.field(static=True)
    In: Axis = eqx.field(static=True)
    Out: Axis = eqx.field(static=True)
    use_gmm: bool = eqx.field(static=True, default=False)

    @staticmethod
    def init(
        Experts: Axis,
        In: Axis,
        Out: Axis,
        *,
        key: jax.Array,
        use_bias: bool = True,
        out_first: bool = False,
        init_scale: float = 1.0,
        use_gmm: bool = False,
        dtype: Any = jnp.float32,
    ) -> "MoELinear":
        """Truncated-normal (``[-3, 3]``) weights times ``init_scale / sqrt(In.size)``, zero bias.

        ``use_gmm=True`` (Haliax's TPU megablox path) is not available: namax always uses
        ``jax.lax.ragged_dot``, and says so rather than ignoring the flag.

        >>> import jax, namax as nx
        >>> Exp, Embed, Mlp = nx.make_axes(experts=2, embed=4, mlp=3)
        >>> MoELinear.init(Exp, Embed, Mlp, key=jax.random.key(0), out_first=True).weight.axes
        (Axis('experts', 2), Axis('mlp', 3), Axis('embed', 4))
        """
        what = "MoELinear.init"
        for arg, ax in (("Experts", Experts), ("In", In), ("Out", Out)):
            if not isinstance(ax, Axis):
                raise TypeError(f"{what}: {arg} must be an Axis (with a size), got {ax!r}")
        if len({Experts.name, In.name, Out.name}) != 3:
            raise ValueError(f"{what}: Experts {Experts}, In {In} and Out {Out} need distinct names")
        if use_gmm:
            raise ValueError(f"{what}: use_gmm=True (Haliax's megablox/shard_map kernel) is not supported by "
                             "namax; use the default use_gmm=False (jax.lax.ragged_dot)")
        axes = (Experts, Out, In) if out_first else (Experts, In, Out)
        weight = nxrandom.truncated_normal(key, axes, -3.0, 3.0, dtype=dtype) * (init_scale / math.sqrt(In.size))
        bias = zeros(Out, dtype=dtype) if use_bias else None
        return MoELinear(weight, bias, Experts, In, Out, use_gmm)

    @property
    def out_first(self) -> bool:
        """Whether the weight is stored ``(Experts, Out, In)``.

        >>> import jax, namax as nx
        >>> Exp, Embed, Mlp = nx.make_axes(experts=2, embed=4, mlp=3)
        >>> MoELinear.init(Exp, Embed, Mlp, key=jax.random.key(0)).out_first
        False
        """
        return self.weight.axis_names[-1] == self.In.name

    def __call__(self, inputs: NamedArray, group_sizes: NamedArray, *, key: Optional[jax.Array] = None) -> NamedArray:
        """``inputs`` (a token axis and ``In``, sorted by expert) through each token's expert;
        ``key`` is unused.

        >>> import jax, jax.numpy as jnp, namax as nx
        >>> Tok, Exp, Embed, Mlp = nx.make_axes(token=3, experts=2, embed=4, mlp=5)
        >>> layer = MoELinear.init(Exp, Embed, Mlp, key=jax.random.key(0))
        >>> layer(nx.ones((Tok, Embed)), nx.named(jnp.array([1, 2]), Exp)).axes
        (Axis('token', 3), Axis('mlp', 5))
        """
        del key
        what = "MoELinear"
        if not isinstance(inputs, NamedArray):
            raise TypeError(f"{what}: the input must be a NamedArray, got {type(inputs).__name__}")
        if not inputs.has_axis(self.In.name):
            raise ValueError(f"{what}: the input {_axes_str(inputs.axes)} lacks the In axis {self.In.name!r}")
        if inputs.has_axis(self.Out.name):
            raise ValueError(f"{what}: the input {_axes_str(inputs.axes)} already has the Out axis {self.Out.name!r}")
        if isinstance(group_sizes, NamedArray) and group_sizes.axis_names != (self.Experts.name,):
            raise ValueError(f"{what}: group_sizes {_axes_str(group_sizes.axes)} must have exactly the Experts axis "
                             f"{self.Experts.name!r}")
        out = ragged_dot(inputs, self.weight, group_sizes, self.In.name)
        if self.bias is not None:
            out = out + self.bias
        return out


__all__ = ["ragged_dot", "MoELinear"]
