"""muP ("abc") parameterisations for ``Linear`` and ``Embedding`` (Haliax's ``haliax.nn.mup``).

A parameterisation (arXiv:2011.14522) says, for one layer, how its weight is scaled at
initialisation (``init_scale(In, Out)``, a static method, the factor on a unit
truncated-normal sample), how its output is scaled in the forward pass (``active_scale``,
a multiplier on the weight) and how its learning rate should be scaled (``lr_scale``, for
an optimizer to read; namax's layers do not apply it). ``n`` is the total size of the
layer's ``In`` axes (for an embedding: of its ``Embed`` axes):

====================== ============== ============ ===========
class                  init_scale     active_scale lr_scale
====================== ============== ============ ===========
LinearStandardParam    1/sqrt(n)      1            1
InputLinearMup         1              1            1
HiddenLinearMup        1/sqrt(n)      1            1/n
OutputLinearMup        1              1/n          1
EmbeddingStandardParam 1/n            1            1
EmbeddingMup           1              1            1
====================== ============== ============ ===========

Embedding parameterisations also have ``unembed_active_scale`` (the multiplier on tied
unembedding logits): 1 for ``EmbeddingStandardParam``, ``1/n`` for ``EmbeddingMup``.

Pass a class as ``reparam_cls=`` to ``Linear.init`` / ``Embedding.init``; the layer keeps
it, and ``layer.reparam`` is an instance bound to the layer's axes.

>>> import jax, namax as nx
>>> In, Out = nx.Axis("embed", 64), nx.Axis("out", 8)
>>> head = nx.nn.Linear.init(In, Out, key=jax.random.key(0), reparam_cls=OutputLinearMup)
>>> head.reparam.active_scale, HiddenLinearMup(In, Out).lr_scale
(0.015625, 0.015625)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..axis import Axis, AxisSpec, ensure_tuple


def _size(spec: AxisSpec, arg: str, what: str) -> int:
    """The total size of an Axis or a tuple of Axes."""
    axes = ensure_tuple(spec)
    if not axes or not all(isinstance(a, Axis) for a in axes):
        raise TypeError(f"{what}: {arg} must be an Axis or a tuple of Axes (with sizes), got {spec!r}")
    n = math.prod(a.size for a in axes)
    if n < 1:
        raise ValueError(f"{what}: {arg} {spec!r} has total size {n}; a layer needs at least 1")
    return n


class AbstractReparam(ABC):
    """The interface of an abc-parameterisation: ``init_scale`` (static), ``active_scale``
    and ``lr_scale`` (properties).

    >>> issubclass(HiddenLinearMup, AbstractReparam)
    True
    """

    @staticmethod
    @abstractmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        """The factor on a unit truncated-normal sample at initialisation."""

    @property
    def lr_scale(self) -> float:
        """The learning-rate multiplier (for an optimizer to apply); 1 unless a class says otherwise."""
        return 1

    @property
    def active_scale(self) -> float:
        """The multiplier on the weight in the forward pass; 1 unless a class says otherwise."""
        return 1


@dataclass(frozen=True)
class AbstractLinearReparam(AbstractReparam):
    """A ``Linear`` parameterisation, bound to the layer's ``In`` and ``Out`` axes.

    >>> import namax as nx
    >>> LinearStandardParam(nx.Axis("embed", 4), nx.Axis("out", 2)).active_scale
    1
    """

    In: AxisSpec
    Out: AxisSpec


class LinearStandardParam(AbstractLinearReparam):
    """The standard parameterisation: ``1/sqrt(fan_in)`` init, no forward or lr scaling
    (``Linear``'s default).

    >>> import namax as nx
    >>> LinearStandardParam.init_scale(nx.Axis("embed", 16), nx.Axis("out", 2))
    0.25
    """

    @staticmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        return 1 / math.sqrt(_size(In, "In", "LinearStandardParam.init_scale"))


class InputLinearMup(AbstractLinearReparam):
    """muP for an input layer (from a fixed-size input): unit init, no scaling.

    >>> import namax as nx
    >>> InputLinearMup.init_scale(nx.Axis("embed", 16), nx.Axis("out", 2))
    1
    """

    @staticmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        return 1


class HiddenLinearMup(AbstractLinearReparam):
    """muP for a hidden layer: ``1/sqrt(fan_in)`` init and a ``1/fan_in`` learning rate.

    >>> import namax as nx
    >>> HiddenLinearMup(nx.Axis("embed", 16), nx.Axis("out", 2)).lr_scale
    0.0625
    """

    @staticmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        return 1 / math.sqrt(_size(In, "In", "HiddenLinearMup.init_scale"))

    @property
    def lr_scale(self) -> float:
        return 1 / _size(self.In, "In", "HiddenLinearMup.lr_scale")


class OutputLinearMup(AbstractLinearReparam):
    """muP for an output layer (to a fixed-size output): unit init, output times ``1/fan_in``.

    >>> import namax as nx
    >>> OutputLinearMup(nx.Axis("embed", 16), nx.Axis("out", 2)).active_scale
    0.0625
    """

    @staticmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        return 1

    @property
    def active_scale(self) -> float:
        return 1 / _size(self.In, "In", "OutputLinearMup.active_scale")


@dataclass(frozen=True)
class AbstractEmbeddingReparam(AbstractReparam):
    """An ``Embedding`` parameterisation, bound to the table's ``Embed`` and ``Vocab`` axes;
    ``unembed_active_scale`` multiplies tied unembedding logits.

    >>> import namax as nx
    >>> EmbeddingMup(nx.Axis("embed", 8), nx.Axis("vocab", 100)).unembed_active_scale
    0.125
    """

    Embed: AxisSpec
    Vocab: AxisSpec

    @property
    def unembed_active_scale(self) -> float:
        """The multiplier on the logits of ``Embedding.unembed``; 1 unless a class says otherwise."""
        return 1


class EmbeddingStandardParam(AbstractEmbeddingReparam):
    """Haliax's standard embedding: init ``1/|Embed|`` (called as ``init_scale(Vocab, Embed)``),
    no forward scaling.

    >>> import namax as nx
    >>> EmbeddingStandardParam.init_scale(nx.Axis("vocab", 100), nx.Axis("embed", 8))
    0.125
    """

    @staticmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        return 1 / _size(Out, "Embed", "EmbeddingStandardParam.init_scale")


class EmbeddingMup(AbstractEmbeddingReparam):
    """muP embedding: unit init; tied unembedding logits times ``1/|Embed|``.

    >>> import namax as nx
    >>> EmbeddingMup.init_scale(nx.Axis("vocab", 100), nx.Axis("embed", 8))
    1
    """

    @staticmethod
    def init_scale(In: AxisSpec, Out: AxisSpec) -> float:
        return 1

    @property
    def unembed_active_scale(self) -> float:
        return 1 / _size(self.Embed, "Embed", "EmbeddingMup.unembed_active_scale")


class ReparamEnabled(ABC):
    """A module with a parameterisation: its ``reparam`` property (``Linear``, ``Embedding``).

    >>> import jax, namax as nx
    >>> layer = nx.nn.Linear.init(nx.Axis("embed", 4), nx.Axis("out", 2), key=jax.random.key(0))
    >>> isinstance(layer, ReparamEnabled), type(layer.reparam).__name__
    (True, 'LinearStandardParam')
    """

    @property
    @abstractmethod
    def reparam(self) -> AbstractReparam:
        """The layer's parameterisation, bound to its axes."""


__all__ = [
    "AbstractReparam", "AbstractLinearReparam", "AbstractEmbeddingReparam", "LinearStandardParam",
    "InputLinearMup", "HiddenLinearMup", "OutputLinearMup", "EmbeddingStandardParam", "EmbeddingMup",
    "ReparamEnabled",
]
