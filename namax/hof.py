"""Higher-order functions by axis name: :func:`vmap`, :func:`scan`, :func:`fold`, :func:`map`,
and gradient checkpointing of scans (:class:`ScanCheckpointPolicy`, :func:`tree_checkpoint_name`).

A NamedArray is mapped or scanned over the axis with the given name wherever that axis
sits; a NamedArray without it is passed whole to every step. Plain arrays follow Haliax's
rules: ``vmap`` maps them over their first dimension (``default=``/``args=``/``kwargs=``
change that), ``scan``/``fold`` scan arrays of rank >= 1 over their first dimension,
``map`` maps every array over its first dimension. Other leaves (Python numbers, strings,
functions) are passed through unchanged. Outputs get the axis in front.

>>> import jax.numpy as jnp, namax as nx
>>> Batch, Embed = nx.make_axes(batch=3, embed=2)
>>> x = nx.named(jnp.arange(6.0).reshape(2, 3), (Embed, Batch))
>>> nx.vmap(lambda row: nx.sum(row, "embed"), Batch)(x).axes
(Axis('batch', 3),)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
from typing import Any, Callable, Literal, Mapping, Optional, Sequence, Union

import equinox as eqx
import jax
from jax.ad_checkpoint import checkpoint_name

from .axis import Axis, AxisSelection, AxisSelector, axis_name
from .named import NamedArray, _axes_str, wrap

# --- leaves -------------------------------------------------------------------------------


def _is_named(x: Any) -> bool:
    return isinstance(x, NamedArray)


def _is_array(x: Any) -> bool:
    """A plain (unnamed) array: anything with a shape and a dtype that is not a NamedArray."""
    return not isinstance(x, NamedArray) and hasattr(x, "shape") and hasattr(x, "dtype")


def _first_dim_if_array(x: Any) -> Optional[int]:
    """``vmap``'s default for plain arrays: map over dimension 0; other leaves are broadcast."""
    return 0 if _is_array(x) else None


def _is_named_or_shaped_array(x: Any) -> bool:
    """``scan``/``fold``'s default: NamedArrays and plain arrays of rank >= 1 are scanned."""
    return isinstance(x, NamedArray) or (_is_array(x) and len(x.shape) >= 1)


def _is_named_or_array(x: Any) -> bool:
    """``map``'s default: every NamedArray and every plain array is mapped."""
    return isinstance(x, NamedArray) or _is_array(x)


def _argument_names(fn: Callable, skip: int = 0) -> Callable[[int], str]:
    """Describes positional argument ``i`` by its parameter name when ``fn`` has a signature."""
    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        params = []
    names: list[str] = []
    star: Optional[str] = None
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind == p.VAR_POSITIONAL:
            star = p.name
            break

    def describe(i: int) -> str:
        if i < len(names):
            return names[i]
        if star is not None:
            return f"{star}[{i - len(names)}]"
        return f"positional argument {i}"

    return describe


def _path_str(path: tuple, describe: Callable[[int], str]) -> str:
    """``(args, kwargs)`` key path -> ``x``, ``params.w``, ``mask['a']``: the argument a leaf came from."""
    head, rest = "", path
    if len(path) >= 2 and isinstance(path[0], jax.tree_util.SequenceKey):
        if path[0].idx == 0 and isinstance(path[1], jax.tree_util.SequenceKey):
            head, rest = describe(path[1].idx), path[2:]
        elif path[0].idx == 1 and isinstance(path[1], jax.tree_util.DictKey):
            head, rest = str(path[1].key), path[2:]
    return (head + jax.tree_util.keystr(tuple(rest))) or "the argument"


def _leaf_str(leaf: Any) -> str:
    if isinstance(leaf, NamedArray):
        return f"axes {_axes_str(leaf.axes)}"
    return f"shape {tuple(leaf.shape)}"


# --- gradient checkpointing ----------------------------------------------------------------

RematSpec = Union["ScanCheckpointPolicy", bool, Literal["offload", "recompute", "full", "save_all", "nested"]]


@dataclasses.dataclass(frozen=True)
class ScanCheckpointPolicy:
    """What a scan keeps from its forward pass for the backward pass (gradient checkpointing).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> Layers = nx.Axis("layers", 4)
    >>> policy = nx.ScanCheckpointPolicy(save_carries=True, save_inputs=False)
    >>> f = nx.fold(lambda c, w: jnp.tanh(c * w), Layers, remat=policy)
    >>> g = jax.grad(lambda c: f(c, jnp.full(4, 0.5)))(1.0)
    >>> bool(g > 0)
    True

    Each step of a scan takes a carry and its slice of the scanned inputs. ``save_carries``
    and ``save_inputs`` say whether those are kept (``True``), recomputed (``False``) or kept
    in host memory (``"offload"``); ``save_block_internals`` keeps every value the step
    computes (``True``) or only those named with :func:`tree_checkpoint_name` /
    ``jax.ad_checkpoint.checkpoint_name`` (a list of names); ``offload_block_internals``
    moves named values to host memory. ``simple=True`` is plain ``jax.checkpoint`` (keep
    only the step's arguments), ``disable=True`` turns checkpointing off, ``prevent_cse`` is
    passed to ``jax.checkpoint``. ``nested=k`` runs the scan as ``k`` checkpointed chunks
    (``True``: the divisor of the length nearest below its square root), so only the
    chunks' carries are kept between chunks. ``remat=`` of :func:`scan` and
    ``gradient_checkpointing=`` of :class:`namax.nn.Stacked` take a policy or a shorthand
    (see :meth:`from_bool_or_str`).
    """

    save_carries: Union[bool, Literal["offload"]] = True
    save_inputs: Union[bool, Literal["offload"]] = False
    save_block_internals: Union[bool, Sequence[str]] = False
    offload_block_internals: Sequence[str] = ()
    prevent_cse: bool = False
    disable: bool = False
    simple: bool = False
    nested: Union[bool, int] = False

    def __post_init__(self) -> None:
        for field in ("save_carries", "save_inputs"):
            value = getattr(self, field)
            if value is not True and value is not False and value != "offload":
                raise ValueError(f"ScanCheckpointPolicy: {field} must be True, False or 'offload', got {value!r}")
        internals = self.save_block_internals
        if not isinstance(internals, bool):
            if isinstance(internals, str) or not all(isinstance(n, str) for n in internals):
                raise TypeError(
                    f"ScanCheckpointPolicy: save_block_internals must be a bool or a list of checkpoint names, "
                    f"got {internals!r}"
                )
            object.__setattr__(self, "save_block_internals", tuple(internals))  # hashable: a static field
        offload = self.offload_block_internals
        if isinstance(offload, str) or not all(isinstance(n, str) for n in offload):
            raise TypeError(f"ScanCheckpointPolicy: offload_block_internals must be a list of names, got {offload!r}")
        object.__setattr__(self, "offload_block_internals", tuple(offload))
        if internals is True and (offload or "offload" in (self.save_carries, self.save_inputs)):
            raise ValueError(
                "ScanCheckpointPolicy: save_block_internals=True cannot be combined with offloading; "
                "list the internals to save by name instead"
            )
        both = set(self.save_block_internals if not isinstance(internals, bool) else ()) & set(offload)
        if both:
            raise ValueError(
                f"ScanCheckpointPolicy: {sorted(both)} are both saved and offloaded; list each name in one of "
                f"save_block_internals / offload_block_internals"
            )
        nested = self.nested
        if not isinstance(nested, (bool, int)) or (not isinstance(nested, bool) and nested < 1):
            raise ValueError(f"ScanCheckpointPolicy: nested must be a bool or an int >= 1, got {nested!r}")

    @staticmethod
    def from_bool_or_str(remat_policy: RematSpec) -> "ScanCheckpointPolicy":
        """The policy for a ``remat=`` shorthand.

        >>> ScanCheckpointPolicy.from_bool_or_str("recompute").save_carries
        False

        ``True``: plain ``jax.checkpoint`` of each step (``simple``). ``False``: no
        checkpointing (``disable``). ``"recompute"``/``"full"``: keep nothing, recompute
        everything. ``"save_all"``: keep carries, inputs and internals. ``"offload"``: carries
        and inputs go to host memory. ``"nested"``: ``nested=True``. A policy is returned as is.
        """
        if isinstance(remat_policy, ScanCheckpointPolicy):
            return remat_policy
        if remat_policy is True:
            return ScanCheckpointPolicy(simple=True)
        if remat_policy is False:
            return ScanCheckpointPolicy(save_carries=True, save_inputs=True, save_block_internals=True, disable=True)
        if isinstance(remat_policy, str):
            shorthand = _REMAT_SHORTHANDS.get(remat_policy)
            if shorthand is not None:
                return ScanCheckpointPolicy(**shorthand)
        raise ValueError(
            f"Invalid checkpoint policy {remat_policy!r}: use True, False, one of "
            f"{sorted(_REMAT_SHORTHANDS)} or a ScanCheckpointPolicy"
        )

    def checkpoint(self, carry_name: str, input_name: str, callable: Callable) -> Callable:
        """``callable`` (a scan step) under ``jax.checkpoint`` with this policy.

        >>> import jax.numpy as jnp
        >>> step = lambda c, x: (c + x, c)
        >>> ScanCheckpointPolicy(disable=True).checkpoint("carry", "input", step) is step
        True

        ``carry_name``/``input_name`` are the checkpoint names the step gives its carry and
        scanned inputs (see :func:`tree_checkpoint_name`).
        """
        if self.disable:
            return callable
        # equinox's filter_checkpoint: jax.checkpoint, with non-array leaves (a block's functions) held static
        if self.simple:
            return eqx.filter_checkpoint(callable, prevent_cse=self.prevent_cse)
        return eqx.filter_checkpoint(callable, prevent_cse=self.prevent_cse,
                                     policy=self._jax_policy(carry_name, input_name))

    def _jax_policy(self, carry_name: str, input_name: str) -> Optional[Callable]:
        save: list[str] = []
        offload: list[str] = []
        recompute: list[str] = []
        for name, how in ((input_name, self.save_inputs), (carry_name, self.save_carries)):
            if how is True:
                save.append(name)
            elif how is False:
                recompute.append(name)
            else:
                offload.append(name)
        if not isinstance(self.save_block_internals, bool):
            save.extend(self.save_block_internals)
        offload.extend(self.offload_block_internals)
        policies = jax.checkpoint_policies
        if offload:
            return policies.save_and_offload_only_these_names(
                names_which_can_be_saved=save, names_which_can_be_offloaded=offload,
                offload_src="device", offload_dst="pinned_host",
            )
        if self.save_block_internals is True:
            return policies.save_anything_except_these_names(*recompute)
        if save:
            return policies.save_only_these_names(*save)
        return None  # keep only the step's arguments


_REMAT_SHORTHANDS: dict[str, dict[str, Any]] = {
    "offload": dict(save_carries="offload", save_inputs="offload", save_block_internals=False),
    "recompute": dict(save_carries=False, save_inputs=False, save_block_internals=False),
    "full": dict(save_carries=False, save_inputs=False, save_block_internals=False),
    "save_all": dict(save_carries=True, save_inputs=True, save_block_internals=True),
    "nested": dict(nested=True),
}


def tree_checkpoint_name(x: Any, name: str) -> Any:
    """Give every array in a pytree the checkpoint name ``name`` (NamedArrays keep their axes).

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> x = nx.named(jnp.ones(3), "embed")
    >>> y = tree_checkpoint_name({"h": x, "n": 2}, "hidden")
    >>> y["h"].axes, y["n"]
    ((Axis('embed', 3),), 2)

    A :class:`ScanCheckpointPolicy` with ``save_block_internals=["hidden"]`` then keeps these
    values instead of recomputing them. Leaves that are not arrays are returned unchanged.
    """

    def one(leaf):
        if isinstance(leaf, NamedArray):
            return wrap(checkpoint_name(leaf.array, name), leaf.axes)
        if _is_array(leaf):
            return checkpoint_name(leaf, name)
        return leaf

    return jax.tree_util.tree_map(one, x, is_leaf=_is_named)


# --- vmap ----------------------------------------------------------------------------------


def _vmap_axes(axis: Any) -> tuple[AxisSelector, ...]:
    if isinstance(axis, (Axis, str)):
        return (axis,)
    if isinstance(axis, Mapping):
        return tuple(Axis(n, s) if s is not None else n for n, s in axis.items())
    if isinstance(axis, (tuple, list)):
        for a in axis:
            axis_name(a)  # TypeError for anything but an Axis or a name
        return tuple(axis)
    raise TypeError(f"vmap: axis must be an Axis, a name, a sequence of them or a name->size dict, got {axis!r}")


def _is_spec_leaf(s: Any) -> bool:
    return s is None or isinstance(s, (int, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                                       functools.partial))


def _specs_per_leaf(spec_tree: Any, value_tree: Any, where: str) -> list:
    """One spec per leaf of ``value_tree`` (NamedArrays are leaves); ``spec_tree`` is a prefix."""
    out: list = []

    def expand(spec, sub):
        out.extend([spec] * len(jax.tree_util.tree_leaves(sub, is_leaf=_is_named)))

    try:
        jax.tree_util.tree_map(expand, spec_tree, value_tree, is_leaf=_is_spec_leaf)
    except ValueError as e:
        raise ValueError(f"vmap: the in-axis specs {where} are not a prefix of the arguments' structure: {e}") from None
    return out


def vmap(fn: Callable, axis: AxisSelection, *, default: Any = _first_dim_if_array, args: Any = (),
         kwargs: Any = None) -> Callable:
    """``fn`` mapped over the axis named ``axis`` of its NamedArray arguments.

    >>> import jax.numpy as jnp, namax as nx
    >>> Batch, Embed = nx.make_axes(batch=3, embed=2)
    >>> x = nx.named(jnp.arange(6.0).reshape(2, 3), (Embed, Batch))
    >>> w = nx.named(jnp.array([1.0, 10.0]), Embed)
    >>> out = nx.vmap(lambda xi, w: nx.dot(xi, w, axis="embed"), Batch)(x, w)
    >>> out.axes, out.array.tolist()
    ((Axis('batch', 3),), [30.0, 41.0, 52.0])

    A NamedArray with the axis is mapped over it wherever it sits; one without it (``w``)
    is passed whole to every call. Plain arrays are mapped over ``default(leaf)`` (an int
    or None; by default dimension 0), overridden per argument by ``args`` (a tuple, one
    entry per positional argument) and ``kwargs`` (a dict): each entry an int, None
    (broadcast) or a callable, or a pytree prefix of the argument holding those. Other
    leaves pass through unchanged. NamedArray outputs get the axis in front; plain array
    outputs get a new leading dimension. ``axis`` may be an Axis, a name (the size comes
    from the arguments), a sequence of them (mapped in turn, the first outermost) or a
    name->size dict.
    """
    if kwargs is None:
        kwargs = {}
    axes = _vmap_axes(axis)
    if not axes:
        return fn
    if len(axes) > 1:
        mapped = fn
        for ax in reversed(axes):
            mapped = vmap(mapped, ax, default=default, args=args, kwargs=kwargs)
        return mapped
    (axis,) = axes
    name = axis_name(axis)
    try:
        signature: Optional[inspect.Signature] = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None
    describe = _argument_names(fn)
    args_spec, kwargs_spec = tuple(args), dict(kwargs)

    def canonical(call_args: tuple, call_kwargs: dict) -> tuple[tuple, dict, tuple, dict]:
        """The call, and one spec per argument, both bound to ``fn``'s parameters."""
        if signature is None:
            if len(args_spec) > len(call_args) or set(kwargs_spec) - set(call_kwargs):
                raise TypeError("vmap: args=/kwargs= name more arguments than the call has")
            pos = tuple(args_spec[i] if i < len(args_spec) else default for i in range(len(call_args)))
            return call_args, call_kwargs, pos, {k: kwargs_spec.get(k, default) for k in call_kwargs}
        bound = signature.bind(*call_args, **call_kwargs)
        spec_bound = signature.bind_partial(*args_spec, **kwargs_spec)
        specs = signature.bind(*call_args, **call_kwargs)
        for pname, value in bound.arguments.items():
            kind = signature.parameters[pname].kind
            given = spec_bound.arguments.get(pname)
            if kind == inspect.Parameter.VAR_POSITIONAL:
                given = tuple(given or ())
                specs.arguments[pname] = tuple(given[i] if i < len(given) else default for i in range(len(value)))
            elif kind == inspect.Parameter.VAR_KEYWORD:
                given = dict(given or {})
                specs.arguments[pname] = {k: given.get(k, default) for k in value}
            else:
                specs.arguments[pname] = spec_bound.arguments.get(pname, default)
        return bound.args, bound.kwargs, specs.args, specs.kwargs

    @functools.wraps(fn)
    def mapped(*call_args, **call_kwargs):
        call_args, call_kwargs, pos_specs, kw_specs = canonical(call_args, call_kwargs)
        leaves, treedef = jax.tree_util.tree_flatten_with_path((call_args, call_kwargs), is_leaf=_is_named)
        specs = _specs_per_leaf((pos_specs, kw_specs), (call_args, call_kwargs), "(args=/kwargs=/default=)")
        size = axis.size if isinstance(axis, Axis) else None
        size_from = "the Axis given to vmap"
        inputs, in_axes, plan = [], [], []  # plan: per leaf ("named", inner axes) | ("array",) | ("static", leaf)
        for (path, leaf), spec in zip(leaves, specs):
            where = _path_str(path, describe)
            if isinstance(leaf, NamedArray):
                idx = next((i for i, a in enumerate(leaf.axes) if a.name == name), None)
                inputs.append(leaf.array)
                in_axes.append(idx)
                if idx is None:
                    plan.append(("named", leaf.axes))
                    continue
                plan.append(("named", leaf.axes[:idx] + leaf.axes[idx + 1:]))
                n, what = leaf.axes[idx].size, f"{where} (axes {_axes_str(leaf.axes)})"
            elif _is_array(leaf):
                dim = spec(leaf) if callable(spec) else spec
                inputs.append(leaf)
                in_axes.append(dim)
                plan.append(("array",))
                if dim is None:
                    continue
                ndim = len(leaf.shape)
                if not isinstance(dim, int) or not -ndim <= dim < ndim:
                    raise ValueError(
                        f"vmap over {name!r}: {where} is an unnamed array of shape {tuple(leaf.shape)} that cannot be "
                        f"mapped over dimension {dim!r}; name its axes, or give None for it in args=/kwargs=/default= "
                        f"to pass it whole"
                    )
                n, what = leaf.shape[dim], f"{where} (shape {tuple(leaf.shape)}, dimension {dim})"
            else:
                plan.append(("static", leaf))
                continue
            if size is None:
                size, size_from = n, what
            elif n != size:
                raise ValueError(f"vmap over {name!r}: {what} has size {n} but {size_from} has size {size}")
        if size is None:
            raise ValueError(
                f"vmap over {name!r}: no argument has the axis {name!r} and no unnamed array is mapped; give an "
                f"Axis with a size (nx.Axis({name!r}, n)) to call the function n times on the same arguments"
            )
        out_plan: list = []

        def per_example(*values):
            out_plan.clear()  # jax may trace more than once
            it = iter(values)
            rebuilt = []
            for step in plan:
                if step[0] == "named":
                    rebuilt.append(wrap(next(it), step[1]))
                elif step[0] == "array":
                    rebuilt.append(next(it))
                else:
                    rebuilt.append(step[1])
            a, k = jax.tree_util.tree_unflatten(treedef, rebuilt)
            out = fn(*a, **k)
            out_leaves, out_def = jax.tree_util.tree_flatten(out, is_leaf=_is_named)
            raw = []
            for leaf in out_leaves:
                if isinstance(leaf, NamedArray):
                    if leaf.has_axis(name):
                        raise ValueError(
                            f"vmap over {name!r}: the function returned an array with axes {_axes_str(leaf.axes)} "
                            f"that already has {name!r}; rename it before vmap adds the mapped axis"
                        )
                    out_plan.append(("named", leaf.axes))
                    raw.append(leaf.array)
                elif _is_array(leaf):
                    out_plan.append(("array",))
                    raw.append(leaf)
                else:
                    out_plan.append(("static", leaf))
            out_plan.append(out_def)
            return raw

        raw_out = jax.vmap(per_example, in_axes=tuple(in_axes), out_axes=0, axis_size=size, axis_name=name)(*inputs)
        *leaf_plan, out_def = out_plan
        Mapped = Axis(name, size)
        it = iter(raw_out)
        result = []
        for step in leaf_plan:
            if step[0] == "named":
                result.append(wrap(next(it), (Mapped,) + step[1]))
            elif step[0] == "array":
                result.append(next(it))
            else:
                result.append(step[1])
        return jax.tree_util.tree_unflatten(out_def, result)

    return mapped


# --- scan, fold, map -----------------------------------------------------------------------


def _nested_outer_size(nested: Union[bool, int], length: int) -> Optional[int]:
    if nested is False:
        return None
    if nested is True:
        return next(k for k in range(math.isqrt(length), 0, -1) if length % k == 0) if length else None
    return nested


def _run_scan(step: Callable, init: Any, xs: list, length: int, outer: Optional[int], name: str,
              reverse: bool, unroll: Any) -> tuple[Any, list]:
    if outer is None:
        return jax.lax.scan(step, init, xs, length=length, reverse=reverse, unroll=unroll)
    if length % outer:
        raise ValueError(
            f"scan over {name!r}: nested={outer} chunks do not divide the axis size {length}; "
            f"use a divisor of {length} (or nested=True)"
        )
    inner = length // outer

    def chunk(carry, chunk_xs):
        return jax.lax.scan(step, carry, chunk_xs, length=inner, reverse=reverse, unroll=unroll)

    chunked = [x.reshape((outer, inner) + tuple(x.shape[1:])) for x in xs]
    carry, ys = jax.lax.scan(jax.checkpoint(chunk), init, chunked, length=outer, reverse=reverse)
    return carry, [y.reshape((length,) + tuple(y.shape[2:])) for y in ys]


def _structure_str(tree: Any) -> str:
    described = jax.tree_util.tree_map(
        lambda v: f"NamedArray{_axes_str(v.axes)}" if isinstance(v, NamedArray)
        else (f"array{tuple(v.shape)}" if _is_array(v) else type(v).__name__),
        tree, is_leaf=_is_named)
    return str(described)


def scan(f: Callable, axis: AxisSelector, *, remat: RematSpec = False, reverse: bool = False, unroll: int = 1,
         is_scanned: Union[bool, Callable[[Any], bool]] = _is_named_or_shaped_array) -> Callable:
    """``f(carry, *xs) -> (carry, y)`` run over the axis named ``axis``; the ``y`` are stacked.

    >>> import jax.numpy as jnp, namax as nx
    >>> Time, Embed = nx.make_axes(time=3, embed=2)
    >>> xs = nx.named(jnp.arange(6.0).reshape(2, 3), (Embed, Time))
    >>> def step(total, x):
    ...     total = total + x
    ...     return total, nx.sum(total, "embed")
    >>> total, sums = nx.scan(step, Time)(nx.zeros(Embed), xs)
    >>> total.array.tolist(), sums.axes, sums.array.tolist()
    ([3.0, 12.0], (Axis('time', 3),), [3.0, 8.0, 15.0])

    Curried like Haliax: ``scan(f, axis)(init, *args, **kwargs)`` is ``jax.lax.scan``
    over the arguments' ``axis``. A NamedArray argument with the axis is scanned over it
    wherever it sits; the step sees it without that axis. A NamedArray without it, and
    every leaf for which ``is_scanned(leaf)`` is false, is passed whole to every step. By
    default plain arrays of rank >= 1 are scanned over their first dimension. NamedArrays
    in ``y`` get ``axis`` in front; plain arrays a leading dimension. ``remat`` is a
    :class:`ScanCheckpointPolicy` or its shorthand; the step names its carry
    ``scan(<axis>)__carry`` and its inputs ``scan(<axis>)__input`` for the policy.
    """
    return _make_scan(f, axis, remat, reverse, unroll, is_scanned, _argument_names(f, skip=1))


def _make_scan(f: Callable, axis: AxisSelector, remat: RematSpec, reverse: bool, unroll: int,
               is_scanned: Union[bool, Callable[[Any], bool]], describe: Callable[[int], str]) -> Callable:
    policy = ScanCheckpointPolicy.from_bool_or_str(remat)
    name = axis_name(axis)
    scanned_leaf = (lambda _: is_scanned) if isinstance(is_scanned, bool) else is_scanned
    carry_name, input_name = f"scan({name})__carry", f"scan({name})__input"

    def scanned(init, *args, **kwargs):
        leaves, treedef = jax.tree_util.tree_flatten_with_path((args, kwargs), is_leaf=_is_named)
        size = axis.size if isinstance(axis, Axis) else None
        size_from = "the Axis given to scan"
        xs, plan = [], []  # plan: per leaf ("named", inner axes) | ("array",) | ("static", leaf)
        for path, leaf in leaves:
            where = _path_str(path, describe)
            if isinstance(leaf, NamedArray):
                idx = next((i for i, a in enumerate(leaf.axes) if a.name == name), None)
                if idx is None or not scanned_leaf(leaf):
                    plan.append(("static", leaf))
                    continue
                xs.append(leaf.array if idx == 0 else leaf.rearrange((name, ...)).array)
                plan.append(("named", leaf.axes[:idx] + leaf.axes[idx + 1:]))
                n, what = leaf.axes[idx].size, f"{where} (axes {_axes_str(leaf.axes)})"
            elif _is_array(leaf) and scanned_leaf(leaf):
                if len(leaf.shape) == 0:
                    raise ValueError(
                        f"scan over {name!r}: {where} is a 0-d array and has no dimension to scan over; "
                        f"exclude it with is_scanned"
                    )
                xs.append(leaf)
                plan.append(("array",))
                n, what = leaf.shape[0], f"{where} (unnamed, shape {tuple(leaf.shape)}, scanned over dimension 0)"
            else:
                plan.append(("static", leaf))
                continue
            if size is None:
                size, size_from = n, what
            elif n != size:
                raise ValueError(f"scan over {name!r}: {what} has size {n} but {size_from} has size {size}")
        if size is None:
            present = sorted({a.name for _, leaf in leaves if isinstance(leaf, NamedArray) for a in leaf.axes})
            raise ValueError(
                f"scan over {name!r}: no argument has the axis {name!r} (the arguments' axes: {present}); "
                f"give an Axis with a size (nx.Axis({name!r}, n)) to run n steps without scanned inputs"
            )
        y_plan: list = []

        def step(carry, x_leaves):
            y_plan.clear()  # lax.scan may trace the step more than once
            carry_in = carry
            carry = tree_checkpoint_name(carry, carry_name)
            it = iter(x_leaves)
            rebuilt = []
            for entry in plan:
                if entry[0] == "named":
                    rebuilt.append(wrap(checkpoint_name(next(it), input_name), entry[1]))
                elif entry[0] == "array":
                    rebuilt.append(checkpoint_name(next(it), input_name))
                else:
                    rebuilt.append(entry[1])
            a, k = jax.tree_util.tree_unflatten(treedef, rebuilt)
            out = f(carry, *a, **k)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError(
                    f"scan over {name!r}: the step must return a pair (carry, output), got {type(out).__name__}"
                    + ("" if not isinstance(out, (tuple, list)) else f" of length {len(out)}")
                )
            new_carry, y = out
            if jax.tree_util.tree_structure(new_carry) != jax.tree_util.tree_structure(carry_in):
                raise ValueError(
                    f"scan over {name!r}: the step must return a carry like the one it gets; it got "
                    f"{_structure_str(carry_in)} and returned {_structure_str(new_carry)}"
                )
            y_leaves, y_def = jax.tree_util.tree_flatten(y, is_leaf=_is_named)
            raw = []
            for leaf in y_leaves:
                if isinstance(leaf, NamedArray):
                    if leaf.has_axis(name):
                        raise ValueError(
                            f"scan over {name!r}: the step returned an output with axes {_axes_str(leaf.axes)} that "
                            f"already has {name!r}; rename it before scan stacks the outputs along {name!r}"
                        )
                    y_plan.append(leaf.axes)
                    raw.append(leaf.array)
                else:
                    y_plan.append(None)
                    raw.append(leaf)
            y_plan.append(y_def)
            return new_carry, raw

        step = policy.checkpoint(carry_name, input_name, step)
        outer = _nested_outer_size(policy.nested, size)
        with jax.named_scope(f"scan({name})"):
            carry, ys = _run_scan(step, init, xs, size, outer, name, reverse, unroll)
        *axes_per_y, y_def = y_plan
        Scanned = Axis(name, size)
        stacked = [y if axes is None else wrap(y, (Scanned,) + axes) for y, axes in zip(ys, axes_per_y)]
        return carry, jax.tree_util.tree_unflatten(y_def, stacked)

    return scanned


def fold(fn: Callable, axis: AxisSelector, *, remat: RematSpec = False, reverse: bool = False, unroll: int = 1,
         is_scanned: Union[bool, Callable[[Any], bool]] = _is_named_or_shaped_array) -> Callable:
    """``fn(carry, *xs) -> carry`` run over the axis named ``axis``: :func:`scan` without outputs.

    >>> import jax.numpy as jnp, namax as nx
    >>> Layers, Embed = nx.make_axes(layers=3, embed=2)
    >>> scales = nx.named(jnp.array([1.0, 2.0, 3.0]), Layers)
    >>> nx.fold(lambda h, s: h * s, Layers)(nx.ones(Embed), scales).array.tolist()
    [6.0, 6.0]

    ``fold(fn, axis)(init, *args, **kwargs)`` returns the final carry; arguments are split
    as in :func:`scan`.
    """
    scanner = _make_scan(lambda carry, *a, **k: (fn(carry, *a, **k), None), axis, remat, reverse, unroll,
                         is_scanned, _argument_names(fn, skip=1))

    @functools.wraps(fn)
    def folded(init, *args, **kwargs):
        return scanner(init, *args, **kwargs)[0]

    return folded


def map(fn: Callable, axis: AxisSelector, *, remat: RematSpec = False, reverse: bool = False, unroll: int = 1,
        is_mapped: Union[bool, Callable[[Any], bool]] = _is_named_or_array) -> Callable:
    """``fn`` applied to one slice along ``axis`` at a time, in a loop (``jax.lax.map`` by name).

    >>> import jax.numpy as jnp, namax as nx
    >>> Batch, Embed = nx.make_axes(batch=3, embed=2)
    >>> x = nx.named(jnp.arange(6.0).reshape(2, 3), (Embed, Batch))
    >>> out = nx.map(lambda col: nx.sum(col, "embed"), Batch)(x)
    >>> out.axes, out.array.tolist()
    ((Axis('batch', 3),), [3.0, 5.0, 7.0])

    Like :func:`vmap` in its result but a sequential loop (less memory). Every NamedArray
    with ``axis`` and, by default, every plain array (over its first dimension) is mapped;
    the rest is passed whole. Outputs get ``axis`` in front.
    """
    scanner = _make_scan(lambda _, *a, **k: (None, fn(*a, **k)), axis, remat, reverse, unroll, is_mapped,
                         _argument_names(fn))

    @functools.wraps(fn)
    def mapped(*args, **kwargs):
        return scanner(None, *args, **kwargs)[1]

    return mapped


__all__ = ["vmap", "scan", "fold", "map", "ScanCheckpointPolicy", "tree_checkpoint_name"]
