"""Optimizer helpers for parameters that contain implicit arrays."""

from __future__ import annotations

from typing import Any, Iterable

import jax
import optax

from .implicit import ImplicitArray, _fields, _split


def freeze_keys(optimizer: optax.GradientTransformation, cls: type, keys: Iterable[str]
                ) -> optax.GradientTransformation:
    """``optimizer`` with the fields ``keys`` of every ``cls`` instance frozen (zero updates).

    >>> import optax, jax.numpy as jnp
    >>> from namax.quant.lora import LoraWeight
    >>> opt = freeze_keys(optax.sgd(1.0), LoraWeight, ["w"])
    >>> p = LoraWeight(w=jnp.ones((2, 3)), a=jnp.ones((2, 1)), b=jnp.ones((3, 1)))
    >>> updates, _ = opt.update(jax.tree_util.tree_map(jnp.ones_like, p), opt.init(p), p)
    >>> float(abs(updates.w).max()), float(updates.a.max())  # w frozen, a trained
    (0.0, -1.0)
    """
    keys = frozenset(keys)
    if not (isinstance(cls, type) and issubclass(cls, ImplicitArray)):
        raise TypeError(f"freeze_keys expects an ImplicitArray subclass, got {cls!r}")
    unknown = keys - set(_fields(cls)[0])
    if unknown:
        raise ValueError(f"{cls.__name__} has no array fields {sorted(unknown)}; fields: {list(_fields(cls)[0])}")

    def label(node: Any) -> Any:
        if isinstance(node, cls):
            children, rebuild = _split(node)
            names = _fields(type(node))[0]
            return rebuild([jax.tree_util.tree_map(lambda _: "freeze" if n in keys else "train", c,
                                                   is_leaf=lambda x: x is None)
                            for n, c in zip(names, children)])
        if isinstance(node, ImplicitArray):
            children, rebuild = _split(node)
            return rebuild([labels(c) for c in children])
        return "train"

    def labels(params: Any) -> Any:
        return jax.tree_util.tree_map(label, params, is_leaf=lambda x: isinstance(x, ImplicitArray))

    return optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, labels)
