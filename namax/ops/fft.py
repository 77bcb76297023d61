"""Discrete Fourier transforms over named axes (``jnp.fft`` with names instead of positions).

Every transform takes ``axis`` in one of these forms (as Haliax does):

* ``None``: the last axis;
* a name, ``"time"``: that axis, at its own length;
* an :class:`~namax.axis.Axis`, ``Axis("time", 16)``: that axis (by name), transformed at
  length 16 (the input is cropped or zero-padded, as ``n=`` does in ``jnp.fft``);
* a sequence of names or Axes (whose sizes must match the array): several axes at once;
* a dict ``{axis: None | length | Axis}``: several axes, in order, each at its own length
  (``None``), at a new length (an int), or at the length of an Axis whose name the
  output axis takes (``{"time": Axis("freq", 16)}`` renames ``time`` to ``freq``).

A length is always the transform's ``n`` (``s`` of the n-dimensional transform); the
output axis has the size that transform produces. ``rfft``/``ihfft`` halve their last
transformed axis to ``n // 2 + 1``; ``irfft``/``hfft`` default their last transformed
axis's length to ``2 * (size - 1)``. ``hfft`` and ``ihfft`` take a single axis.

>>> import jax.numpy as jnp, namax as nx
>>> x = nx.named(jnp.ones((2, 8)), ("batch", "time"))
>>> nx.rfft(x, {"time": nx.Axis("freq", 16)}).axes
(Axis('batch', 2), Axis('freq', 9))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax.numpy as jnp

from ..axis import Axis, AxisSelection, AxisSelector, axis_name, ensure_tuple
from ..named import NamedArray, _axes_str, wrap

FFTAxis = Union[None, AxisSelector, Sequence[AxisSelector], Mapping[AxisSelector, Union[None, int, Axis]]]
"""How a transform's ``axis`` is given (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class _Transform:
    """One row of the table: a ``jnp.fft`` transform and how it sizes its output."""

    name: str
    one_d: Callable
    n_d: Optional[Callable]  # None: a single axis only
    halves_last: bool  # the last axis comes out at n // 2 + 1 (rfft, ihfft)
    doubles_last: bool  # the last axis's default length is 2 * (size - 1) (irfft, hfft)
    summary: str
    example: str  # (call, result) for the docstring, on x with axes (batch:2, time:8)


@dataclasses.dataclass(frozen=True)
class _Target:
    index: int  # position in the input
    n: int  # the transform's length along it
    renamed: Optional[str]  # the output axis's name when an Axis value renames it


def _check_named(x: Any, what: str) -> None:
    if not isinstance(x, NamedArray):
        raise TypeError(f"{what}: expected a NamedArray, got {type(x).__name__}; use jnp.fft.{what} on plain arrays")


def _check_length(n: Any, name: str, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what}: the length for axis {name!r} must be an int, None or an Axis, got {n!r}")
    if n < 1:
        raise ValueError(f"{what}: the length for axis {name!r} must be >= 1, got {n}")
    return n


def _index_of_listed(x: NamedArray, ax: AxisSelector, what: str, where: str) -> int:
    """An axis listed as a sequence entry or a dict key: an Axis must match the array's size."""
    i = x.axis_index(axis_name(ax))
    if isinstance(ax, Axis) and ax.size != x.axes[i].size:
        raise ValueError(
            f"{what}: axis {ax.name!r} has size {x.axes[i].size} in the array {_axes_str(x.axes)} but {ax.size} "
            f"as {where}; give a new length as a dict value, e.g. axis={{{ax.name!r}: {ax.size}}}"
        )
    return i


def _requests(x: NamedArray, axis: FFTAxis, what: str) -> list[tuple[int, Optional[int], Optional[str]]]:
    """(index, requested length or None, new name or None) for each transformed axis, in order."""
    if axis is None:
        if x.ndim == 0:
            raise ValueError(f"{what}: the array has no axes to transform")
        return [(x.ndim - 1, None, None)]
    if isinstance(axis, Axis):
        return [(x.axis_index(axis.name), _check_length(axis.size, axis.name, what), None)]
    if isinstance(axis, str):
        return [(x.axis_index(axis), None, None)]
    if isinstance(axis, Mapping):
        out = []
        for key, value in axis.items():
            i = _index_of_listed(x, key, what, "a dict key")
            if value is None:
                out.append((i, None, None))
            elif isinstance(value, Axis):
                out.append((i, _check_length(value.size, value.name, what), value.name))
            else:
                out.append((i, _check_length(value, x.axes[i].name, what), None))
        return out
    if isinstance(axis, Sequence):
        return [(_index_of_listed(x, a, what, "a listed axis"), None, None) for a in axis]
    raise TypeError(f"{what}: axis must be None, a name, an Axis, a sequence of them or a dict, got {axis!r}")


def _targets(x: NamedArray, axis: FFTAxis, t: _Transform) -> list[_Target]:
    requests = _requests(x, axis, t.name)
    if not requests:
        raise ValueError(f"{t.name}: no axis to transform was given (axis={axis!r})")
    indices = [i for i, _, _ in requests]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{t.name}: an axis is listed twice in axis={axis!r}")
    if t.n_d is None and len(requests) > 1:
        raise ValueError(f"{t.name} transforms a single axis; got {len(requests)} in axis={axis!r}")
    targets = []
    for k, (i, n, renamed) in enumerate(requests):
        if n is None:
            size = x.axes[i].size
            doubled = t.doubles_last and k == len(requests) - 1
            n = 2 * (size - 1) if doubled else size
            if n < 1 and doubled:
                raise ValueError(
                    f"{t.name}: axis {x.axes[i].name!r} has size {size}, so the default output length "
                    f"2 * ({size} - 1) is {n}; give the length, e.g. axis={{{x.axes[i].name!r}: 1}}"
                )
            if n < 1:
                raise ValueError(f"{t.name}: axis {x.axes[i].name!r} has size 0; there is nothing to transform")
        targets.append(_Target(i, n, renamed))
    return targets


def _output_axes(x: NamedArray, targets: list[_Target], t: _Transform) -> tuple[Axis, ...]:
    axes = list(x.axes)
    for k, tg in enumerate(targets):
        size = tg.n // 2 + 1 if t.halves_last and k == len(targets) - 1 else tg.n
        axes[tg.index] = Axis(tg.renamed or x.axes[tg.index].name, size)
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{t.name}: renaming gives two axes named {clash!r} (input axes {_axes_str(x.axes)})")
    return tuple(axes)


def _transform(t: _Transform, a: NamedArray, axis: FFTAxis, norm: Optional[str]) -> NamedArray:
    _check_named(a, t.name)
    targets = _targets(a, axis, t)
    out_axes = _output_axes(a, targets, t)
    if len(targets) == 1:
        out = t.one_d(a.array, n=targets[0].n, axis=targets[0].index, norm=norm)
    else:
        out = t.n_d(a.array, s=tuple(tg.n for tg in targets), axes=tuple(tg.index for tg in targets), norm=norm)
    return wrap(out, out_axes)


def _make_transform(t: _Transform) -> Callable[..., NamedArray]:
    def transform(a: NamedArray, axis: FFTAxis = None, norm: Optional[str] = None) -> NamedArray:
        return _transform(t, a, axis, norm)

    call, result = t.example
    transform.__name__ = transform.__qualname__ = t.name
    transform.__doc__ = (
        f"{t.summary} (``jnp.fft.{t.name}``{f', ``jnp.fft.{t.n_d.__name__}``' if t.n_d else ''}) over named axes.\n\n"
        f"``axis`` is None (the last axis), a name, an Axis (its size is the length), a sequence, or a\n"
        f"dict ``{{axis: None | length | Axis}}``; see :mod:`namax.ops.fft`.\n\n"
        f">>> import jax.numpy as jnp, namax as nx\n"
        f">>> x = nx.named(jnp.ones((2, 8)), ('batch', 'time'))\n"
        f">>> {call}.axes\n{result}\n"
    )
    return transform


_TRANSFORMS = (
    _Transform("fft", jnp.fft.fft, jnp.fft.fftn, False, False, "Discrete Fourier transform",
               ("nx.fft(x, {'time': nx.Axis('freq', 16)})", "(Axis('batch', 2), Axis('freq', 16))")),
    _Transform("ifft", jnp.fft.ifft, jnp.fft.ifftn, False, False, "Inverse discrete Fourier transform",
               ("nx.ifft(x, ('batch', 'time'))", "(Axis('batch', 2), Axis('time', 8))")),
    _Transform("rfft", jnp.fft.rfft, jnp.fft.rfftn, True, False, "Fourier transform of a real signal",
               ("nx.rfft(x, 'time')", "(Axis('batch', 2), Axis('time', 5))")),
    _Transform("irfft", jnp.fft.irfft, jnp.fft.irfftn, False, True, "Inverse of rfft (a real signal)",
               ("nx.irfft(x, 'time')", "(Axis('batch', 2), Axis('time', 14))")),
    _Transform("hfft", jnp.fft.hfft, None, False, True, "Fourier transform of a Hermitian-symmetric signal",
               ("nx.hfft(x, nx.Axis('time', 10))", "(Axis('batch', 2), Axis('time', 10))")),
    _Transform("ihfft", jnp.fft.ihfft, None, True, False, "Inverse of hfft",
               ("nx.ihfft(x)", "(Axis('batch', 2), Axis('time', 5))")),
)

_g = globals()
for _t in _TRANSFORMS:
    _g[_t.name] = _make_transform(_t)
del _g, _t


def _shift(fn: Callable, name: str, x: NamedArray, axes: Optional[AxisSelection]) -> NamedArray:
    _check_named(x, name)
    if axes is None:
        return wrap(fn(x.array), x.axes)
    idx = tuple(x.axis_index(a) for a in ensure_tuple(axes))
    if len(set(idx)) != len(idx):
        raise ValueError(f"{name}: an axis is listed twice in axes={axes!r}")
    return wrap(fn(x.array, axes=idx), x.axes)


def _make_shift(fn: Callable, name: str, example: str) -> Callable[..., NamedArray]:
    def shift(x: NamedArray, axes: Optional[AxisSelection] = None) -> NamedArray:
        return _shift(fn, name, x, axes)

    shift.__name__ = shift.__qualname__ = name
    shift.__doc__ = (
        f"``jnp.fft.{name}`` over the named ``axes`` (None: every axis); axes unchanged.\n\n"
        f">>> import namax as nx\n"
        f">>> nx.{name}(nx.arange(nx.Axis('freq', 5)), 'freq').array.tolist()\n{example}\n"
    )
    return shift


fftshift = _make_shift(jnp.fft.fftshift, "fftshift", "[3, 4, 0, 1, 2]")
ifftshift = _make_shift(jnp.fft.ifftshift, "ifftshift", "[2, 3, 4, 0, 1]")


def _frequencies(fn: Callable, name: str, halves: bool, axis: Axis, d: Any) -> NamedArray:
    if not isinstance(axis, Axis):
        raise TypeError(f"{name}: axis must be an Axis (the signal's axis, with its length), got {axis!r}")
    if axis.size < 1:
        raise ValueError(f"{name}: axis {axis.name!r} has size {axis.size}; a signal needs length >= 1")
    out = axis.resize(axis.size // 2 + 1) if halves else axis
    return wrap(fn(axis.size, d), (out,))


def _make_frequencies(fn: Callable, name: str, halves: bool, example: str) -> Callable[..., NamedArray]:
    def frequencies(axis: Axis, d: float = 1.0) -> NamedArray:
        return _frequencies(fn, name, halves, axis, d)

    frequencies.__name__ = frequencies.__qualname__ = name
    frequencies.__doc__ = (
        f"``jnp.fft.{name}``: the sample frequencies of a signal along ``axis`` with spacing ``d``"
        f"{' (on the axis resized to size // 2 + 1, as rfft leaves it)' if halves else ''}.\n\n"
        f">>> import namax as nx\n>>> f = nx.{name}(nx.Axis('time', 4), d=0.5)\n"
        f">>> f.axes, f.array.tolist()\n{example}\n"
    )
    return frequencies


fftfreq = _make_frequencies(jnp.fft.fftfreq, "fftfreq", False, "((Axis('time', 4),), [0.0, 0.5, -1.0, -0.5])")
rfftfreq = _make_frequencies(jnp.fft.rfftfreq, "rfftfreq", True, "((Axis('time', 3),), [0.0, 0.5, 1.0])")

__all__ = [*(t.name for t in _TRANSFORMS), "fftfreq", "rfftfreq", "fftshift", "ifftshift"]
