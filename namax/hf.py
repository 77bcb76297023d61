"""Axis names for Hugging Face transformers' Flax models, so they run under namedjit unchanged.

:func:`flax_gpt2_names` names every parameter of ``FlaxGPT2LMHeadModel`` (and
``FlaxGPT2Model``) by its path; give it, with ``("batch", "position")`` for the token ids,
as ``in_axes``. ``FlaxConv1D`` kernels are stored ``(out, in)``: c_attn's output is the
fused ``qkv`` dim, the attention c_proj's input the merged ``heads`` dim (the names pass
carries ``heads`` back through the head split and merge onto q, k, v), the MLP's hidden
dim ``mlp``. :data:`GPT2_MEGATRON` is the tensor-parallel mapping over these names.

>>> import numpy as np
>>> params = {"transformer": {"wte": {"embedding": np.zeros((10, 4))},
...                           "h": {"0": {"attn": {"c_attn": {"kernel": np.zeros((12, 4))}}}}}}
>>> names = flax_gpt2_names(params)
>>> names["transformer"]["wte"]["embedding"], names["transformer"]["h"]["0"]["attn"]["c_attn"]["kernel"]
(('vocab', 'embed'), ('qkv', 'embed'))
"""

from __future__ import annotations

from typing import Any

import jax

GPT2_MEGATRON = {"batch": "data", "heads": "model", "mlp": "model", "qkv": "model"}
"""Megatron tensor parallelism for GPT-2 named by :func:`flax_gpt2_names`: the batch over
``data``; c_attn and c_fc column-parallel, both c_proj row-parallel over ``model``."""


def gpt2_parameter_names(path: tuple, leaf: Any = None) -> tuple:
    """Axis names of one GPT-2 parameter from its key path (as ``tree_map_with_path`` gives it).

    >>> from jax.tree_util import DictKey
    >>> gpt2_parameter_names((DictKey("h"), DictKey("0"), DictKey("mlp"), DictKey("c_proj"), DictKey("kernel")))
    ('embed', 'mlp')
    """
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if len(keys) < 2:
        raise KeyError(f"no names for GPT-2 parameter {jax.tree_util.keystr(path)}")
    module, kind = keys[-2], keys[-1]
    if module == "wte":
        return ("vocab", "embed")
    if module == "wpe":
        return ("position", "embed")
    if isinstance(module, str) and module.startswith("ln"):
        return ("embed",)
    if module == "c_attn":
        return ("qkv", "embed") if kind == "kernel" else ("qkv",)
    if module == "c_fc":
        return ("mlp", "embed") if kind == "kernel" else ("mlp",)
    if module == "c_proj" and "mlp" in keys:
        return ("embed", "mlp") if kind == "kernel" else ("embed",)
    if module == "c_proj":  # attention output projection: its input is the merged heads
        return ("embed", "heads") if kind == "kernel" else ("embed",)
    raise KeyError(f"no names for GPT-2 parameter {jax.tree_util.keystr(path)}")


def flax_gpt2_names(params: Any) -> Any:
    """``params`` with each array replaced by its axis names (an ``in_axes`` entry)."""
    return jax.tree_util.tree_map_with_path(gpt2_parameter_names, params)


__all__ = ["GPT2_MEGATRON", "flax_gpt2_names", "gpt2_parameter_names"]
