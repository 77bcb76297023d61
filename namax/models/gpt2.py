"""GPT-2 in namax, with Hugging Face checkpoints in and out.

:class:`Gpt2LMHeadModel` is OpenAI's GPT-2 (transformers' ``GPT2LMHeadModel``): token and
position embeddings, ``n_layer`` pre-norm blocks (causal self-attention and a
``gelu_new`` MLP) stored as one :class:`namax.nn.Stacked`, a final LayerNorm and logits from
the tied token embedding. Every parameter has axis names (``vocab``, ``position``,
``embed``, ``qkv``, ``heads``, ``head_size``, ``mlp``, ``layers``) and the field names are
transformers', so the state-dict keys are transformers' keys.

:func:`from_hf` reads a transformers GPT-2 folder (``config.json`` and
``model.safetensors``, in PyTorch's layout as ``GPT2LMHeadModel.save_pretrained`` writes
it, or the Flax layout of ``FlaxGPT2LMHeadModel.save_pretrained(..., safe_serialization=True)``);
:func:`to_hf` writes a folder in PyTorch's layout (the canonical Hugging Face format), which
transformers' Flax class loads without torch.

>>> import jax, namax as nx
>>> config = GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=2, n_head=2)
>>> model = Gpt2LMHeadModel.init(config, key=jax.random.key(0))
>>> ids = nx.zeros((nx.Axis("batch", 2), nx.Axis("position", 5)), dtype=jnp.int32)
>>> model(ids).axes
(Axis('batch', 2), Axis('position', 5), Axis('vocab', 50))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from typing import Any, Mapping, Optional, Sequence, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import nn, random as nxrandom
from ..axis import Axis
from ..layout import weight_axes
from ..named import NamedArray
from ..ops import creation, dot as _dot, elementwise as ew, shape as _shape
from ..state_dict import (
    LazyStateDict, LazyTensor, ModuleWithStateDictSerialization, flatten_modules_for_export,
    from_torch_compatible_state_dict, save_state_dict, to_state_dict, to_torch_compatible_state_dict,
)

PathLike = Union[str, os.PathLike]

# transformers' GPT2Config fields whose other values this model does not implement
_REQUIRED = {"activation_function": "gelu_new", "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
             "reorder_and_upcast_attn": False}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The sizes of a GPT-2 (transformers' ``GPT2Config`` field names); the properties are its axes.

    >>> GPT2Config(n_embd=32, n_head=4).HeadSize
    Axis('head_size', 8)
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5
    n_inner: Optional[int] = None
    activation_function: str = "gelu_new"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        for f in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GPT2Config: {f} must be an int >= 1, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPT2Config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.activation_function != "gelu_new":
            raise ValueError(f"GPT2Config: activation_function {self.activation_function!r} is not implemented "
                             f"(only 'gelu_new')")

    Vocab = property(lambda self: Axis("vocab", self.vocab_size))
    Pos = property(lambda self: Axis("position", self.n_positions))
    Embed = property(lambda self: Axis("embed", self.n_embd))
    Heads = property(lambda self: Axis("heads", self.n_head))
    HeadSize = property(lambda self: Axis("head_size", self.n_embd // self.n_head))
    Mlp = property(lambda self: Axis("mlp", self.n_inner or 4 * self.n_embd))
    Layers = property(lambda self: Axis("layers", self.n_layer))
    Qkv = Axis("qkv", 3)

    @staticmethod
    def from_hf_config(config: Mapping[str, Any]) -> "GPT2Config":
        """A config from transformers' ``config.json`` (a dict); settings this model lacks are errors.

        >>> GPT2Config.from_hf_config({"model_type": "gpt2", "n_embd": 16, "n_head": 2}).n_embd
        16
        """
        if config.get("model_type", "gpt2") != "gpt2":
            raise ValueError(f"GPT2Config.from_hf_config: model_type {config.get('model_type')!r} is not 'gpt2'")
        for key, want in _REQUIRED.items():
            if key in config and config[key] != want:
                raise ValueError(f"GPT2Config.from_hf_config: {key}={config[key]!r} is not implemented "
                                 f"(only {want!r})")
        names = {f.name for f in dataclasses.fields(GPT2Config)}
        return GPT2Config(**{k: v for k, v in config.items() if k in names})

    def to_hf_config(self) -> dict[str, Any]:
        """transformers' ``config.json`` for this config (a GPT2LMHeadModel).

        >>> GPT2Config(n_layer=2).to_hf_config()["architectures"]
        ['GPT2LMHeadModel']
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(_REQUIRED)
        out.update({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_ctx": self.n_positions,
                    "tie_word_embeddings": True})
        return out


class Conv1D(nn.Linear, ModuleWithStateDictSerialization):
    """A :class:`namax.nn.Linear` whose torch layout is GPT-2's ``Conv1D``: weight ``[in, out]``.

    >>> import jax, namax as nx
    >>> from namax.state_dict import to_torch_compatible_state_dict
    >>> E, M = nx.make_axes(embed=4, mlp=6)
    >>> to_torch_compatible_state_dict(Conv1D.init(E, M, key=jax.random.key(0)))["weight"].shape
    (4, 6)
    """

    @staticmethod
    def init(In, Out, *, key, init_std: float = 0.02, dtype: Any = jnp.float32) -> "Conv1D":
        """N(0, ``init_std``) weights (GPT-2's scheme) and a zero bias, stored in the backend's order.

        >>> import jax, namax as nx
        >>> E, M = nx.make_axes(embed=4, mlp=6)
        >>> Conv1D.init(E, M, key=jax.random.key(0))(nx.ones(E)).axes
        (Axis('mlp', 6),)
        """
        weight = nxrandom.normal(key, weight_axes(_tuple(In), _tuple(Out)), dtype=dtype) * init_std
        return Conv1D(weight, creation.zeros(Out, dtype=dtype), In, Out)

    def _export_layout(self):
        ins = tuple(a.name for a in _tuple(self.In))
        outs = tuple(a.name for a in _tuple(self.Out))
        return {"weight": (ins, outs), "bias": (outs,)}


def _tuple(spec):
    return spec if isinstance(spec, tuple) else (spec,)


class Gpt2Attention(ModuleWithStateDictSerialization):
    """Causal multi-head self-attention: ``c_attn`` (embed -> qkv, heads, head_size), ``c_proj`` back.

    >>> import jax, namax as nx
    >>> config = GPT2Config(n_positions=4, n_embd=8, n_head=2)
    >>> attn = Gpt2Attention.init(config, key=jax.random.key(0))
    >>> Pos = nx.Axis("position", 3)
    >>> attn(nx.ones((Pos, config.Embed)), nx.nn.causal_mask(Pos, Pos.alias("key_position"))).axes
    (Axis('position', 3), Axis('embed', 8))
    """

    c_attn: Conv1D
    c_proj: Conv1D
    config: GPT2Config = eqx.field(static=True)

    @staticmethod
    def init(config: GPT2Config, *, key: jax.Array) -> "Gpt2Attention":
        k1, k2 = jax.random.split(key)
        inner = (config.Heads, config.HeadSize)
        return Gpt2Attention(Conv1D.init(config.Embed, (config.Qkv, *inner), key=k1),
                             Conv1D.init(inner, config.Embed, key=k2,
                                         init_std=config.initializer_range / math.sqrt(2 * config.n_layer)),
                             config)

    def __call__(self, x: NamedArray, mask: NamedArray) -> NamedArray:
        q, k, v = _shape.unbind(self.c_attn(x), "qkv")
        k = k.rename({"position": "key_position"})
        v = v.rename({"position": "key_position"})
        scores = _dot.dot(q, k, axis="head_size") / math.sqrt(self.config.HeadSize.size)
        scores = ew.where(mask, scores, jnp.finfo(scores.dtype).min)
        weights = nn.softmax(scores.astype(jnp.float32), "key_position").astype(x.dtype)
        return self.c_proj(_dot.dot(weights, v, axis="key_position"))


class Gpt2Mlp(ModuleWithStateDictSerialization):
    """``c_proj(gelu_new(c_fc(x)))``.

    >>> import jax, namax as nx
    >>> config = GPT2Config(n_embd=8, n_head=2)
    >>> Gpt2Mlp.init(config, key=jax.random.key(0)).c_fc.weight.shape == {"embed": 8, "mlp": 32}
    True
    """

    c_fc: Conv1D
    c_proj: Conv1D

    @staticmethod
    def init(config: GPT2Config, *, key: jax.Array) -> "Gpt2Mlp":
        k1, k2 = jax.random.split(key)
        return Gpt2Mlp(Conv1D.init(config.Embed, config.Mlp, key=k1),
                       Conv1D.init(config.Mlp, config.Embed, key=k2,
                                   init_std=config.initializer_range / math.sqrt(2 * config.n_layer)))

    def __call__(self, x: NamedArray) -> NamedArray:
        return self.c_proj(nn.gelu(self.c_fc(x), approximate=True))


class Gpt2Block(ModuleWithStateDictSerialization):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``.

    >>> import jax
    >>> from namax.state_dict import to_torch_compatible_state_dict
    >>> block = Gpt2Block.init(GPT2Config(n_embd=8, n_head=2), key=jax.random.key(0))
    >>> to_torch_compatible_state_dict(block)["attn.c_attn.weight"].shape  # transformers' Conv1D: [in, out]
    (8, 24)
    """

    ln_1: nn.LayerNorm
    attn: Gpt2Attention
    ln_2: nn.LayerNorm
    mlp: Gpt2Mlp

    @staticmethod
    def init(config: GPT2Config, *, key: jax.Array) -> "Gpt2Block":
        k1, k2 = jax.random.split(key)
        eps = config.layer_norm_epsilon
        return Gpt2Block(nn.LayerNorm.init(config.Embed, eps=eps), Gpt2Attention.init(config, key=k1),
                         nn.LayerNorm.init(config.Embed, eps=eps), Gpt2Mlp.init(config, key=k2))

    def __call__(self, x: NamedArray, mask: NamedArray) -> NamedArray:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Gpt2Transformer(ModuleWithStateDictSerialization):
    """transformers' ``GPT2Model``: ``wte``, ``wpe``, the blocks ``h`` and ``ln_f``.

    >>> import jax
    >>> from namax.state_dict import to_torch_compatible_state_dict
    >>> config = GPT2Config(vocab_size=10, n_positions=4, n_embd=8, n_layer=2, n_head=2)
    >>> sd = to_torch_compatible_state_dict(Gpt2Transformer.init(config, key=jax.random.key(0)))
    >>> sd["wte.weight"].shape, sd["h.1.mlp.c_proj.weight"].shape
    ((10, 8), (32, 8))
    """

    wte: nn.Embedding
    wpe: nn.Embedding
    h: nn.Stacked
    ln_f: nn.LayerNorm

    @staticmethod
    def init(config: GPT2Config, *, key: jax.Array) -> "Gpt2Transformer":
        k1, k2, k3 = jax.random.split(key, 3)
        std = config.initializer_range
        return Gpt2Transformer(nn.Embedding.init(config.Vocab, config.Embed, key=k1, init_scale=std),
                               nn.Embedding.init(config.Pos, config.Embed, key=k2, init_scale=std / 2),
                               nn.Stacked.init(config.Layers, Gpt2Block)(config, key=k3),
                               nn.LayerNorm.init(config.Embed, eps=config.layer_norm_epsilon))

    def __call__(self, ids: NamedArray) -> NamedArray:
        """The final hidden states ``[..., position, embed]`` for the token ``ids`` ``[..., position]``."""
        Pos = ids.resolve_axis("position")
        if Pos.size > self.wpe.Vocab.size:
            raise ValueError(f"GPT-2: ids have {Pos.size} positions, the model has n_positions={self.wpe.Vocab.size}")
        x = self.wte(ids) + self.wpe.weight["position", 0:Pos.size]
        mask = nn.causal_mask(Pos, Pos.alias("key_position"))
        return self.ln_f(self.h(x, mask))


class Gpt2LMHeadModel(ModuleWithStateDictSerialization):
    """GPT-2 with its tied LM head: ``model(ids)`` maps ``[..., position]`` ids to ``[..., position, vocab]`` logits.

    >>> import jax, jax.numpy as jnp, namax as nx
    >>> model = Gpt2LMHeadModel.init(GPT2Config(vocab_size=10, n_positions=4, n_embd=8, n_layer=1, n_head=2),
    ...                              key=jax.random.key(0))
    >>> model(nx.zeros(nx.Axis("position", 3), dtype=jnp.int32)).axes
    (Axis('position', 3), Axis('vocab', 10))
    """

    transformer: Gpt2Transformer
    config: GPT2Config = eqx.field(static=True)

    @staticmethod
    def init(config: GPT2Config, *, key: jax.Array) -> "Gpt2LMHeadModel":
        """Random weights (GPT-2's scheme)."""
        return Gpt2LMHeadModel(Gpt2Transformer.init(config, key=key), config)

    def __call__(self, ids: NamedArray) -> NamedArray:
        if not isinstance(ids, NamedArray) or not ids.has_axis("position"):
            raise ValueError("GPT-2: ids must be an integer NamedArray with a 'position' axis")
        return self.transformer.wte.unembed(self.transformer(ids))


# --- Hugging Face folders ----------------------------------------------------------------------
_WEIGHTS = "model.safetensors"
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers some GPT-2 checkpoints hold


def load_hf_config(directory: PathLike) -> GPT2Config:
    """The :class:`GPT2Config` of a transformers folder (its ``config.json``).

    >>> import tempfile, json, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = open(os.path.join(d, "config.json"), "w").write(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    ...     load_hf_config(d).n_layer
    3
    """
    path = pathlib.Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"GPT-2: no config.json in {str(directory)!r}")
    return GPT2Config.from_hf_config(json.loads(path.read_text()))


def _torch_names(config: GPT2Config) -> dict[str, tuple[str, ...]]:
    """The axis names of each dimension of each torch-layout tensor (``h.0.attn.c_attn.weight``:
    ``('embed', 'qkv*heads*head_size')``), from this module's own export layouts."""
    template = eqx.filter_eval_shape(Gpt2Transformer.init, config, key=jax.random.key(0))
    flat = jax.eval_shape(lambda t: to_state_dict(flatten_modules_for_export(t)), template)
    return {k: v.axis_names for k, v in flat.items()}


def _named(array: np.ndarray, names: tuple[str, ...]) -> NamedArray:
    return NamedArray(array, tuple(Axis(n, s) for n, s in zip(names, array.shape)))


def hf_state_dict(directory: PathLike, *, positions: Optional[int] = None) -> dict[str, Any]:
    """A transformers GPT-2 folder's weights as a named, torch-layout ``GPT2Model`` state dict.

    >>> import jax, tempfile
    >>> model = Gpt2LMHeadModel.init(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
    ...                              key=jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     to_hf(model, d)
    ...     sd = hf_state_dict(d, positions=4)
    ...     sd["h.0.attn.c_attn.weight"].axis_names, sd["wpe.weight"].shape
    (('embed', 'qkv*heads*head_size'), (4, 8))

    Keys lose a ``transformer.`` prefix; the tied ``lm_head`` (checked equal to ``wte``) and
    causal-mask buffers are dropped. Each value is labelled with its axis names (a
    flattened dimension is named ``qkv*heads*head_size``), so any namax model whose layers
    use GPT-2's axis names reads it by name, e.g. with
    :func:`namax.state_dict.from_torch_compatible_state_dict`. PyTorch-layout tensors stay
    in the file (:class:`~namax.state_dict.LazyTensor`, read per device); Flax-layout ones
    are read and transposed. ``positions`` keeps the first rows of ``wpe`` only (a model
    with a shorter context).
    """
    directory = pathlib.Path(directory)
    config = load_hf_config(directory)
    if positions is not None and not 1 <= positions <= config.n_positions:
        raise ValueError(f"GPT-2: positions={positions} is not within [1, n_positions={config.n_positions}]")
    names = _torch_names(config)
    path = directory / _WEIGHTS
    if not path.is_file():
        found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise FileNotFoundError(f"GPT-2: no {_WEIGHTS} in {str(directory)!r} (found {found}; save with "
                                f"save_pretrained(..., safe_serialization=True))")
    sd = LazyStateDict(path)
    fmt = sd.metadata.get("format")
    if fmt not in ("pt", "flax"):
        raise ValueError(f"GPT-2: {path} has format {fmt!r} in its metadata; expected 'pt' or 'flax'")
    out: dict[str, Any] = {}
    lm_head = None
    for key, tensor in sd.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name in ("lm_head.weight", "lm_head.kernel"):
            lm_head = (key, tensor)
            continue
        if name.endswith(_BUFFERS):
            continue
        value: Any = tensor
        if fmt == "flax":  # Flax: kernel [out, in] (Conv1D's transpose), embedding, scale
            stem, _, leaf = name.rpartition(".")
            if leaf == "kernel":
                name, value = f"{stem}.weight", np.ascontiguousarray(np.asarray(tensor).T)
            elif leaf in ("embedding", "scale"):
                name = f"{stem}.weight"
        if name not in names:
            raise ValueError(f"GPT-2: {path} has a tensor {key!r} that a GPT-2 with this config does not have")
        if name == "wpe.weight" and positions is not None:
            value = value.truncated(positions) if isinstance(value, LazyTensor) else np.asarray(value)[:positions]
        if isinstance(value, LazyTensor):
            value = value.with_axis_names(names[name])
        else:
            value = _named(np.asarray(value), names[name])
        out[name] = value
    if lm_head is not None:  # tied to wte: accepted only if it is wte
        wte = out.get("wte.weight")
        wte_values = None if wte is None else np.asarray(wte.array if isinstance(wte, NamedArray) else wte)
        if wte_values is None or not np.array_equal(np.asarray(lm_head[1]).reshape(-1), wte_values.reshape(-1)):
            raise ValueError(f"GPT-2: {path} has an untied {lm_head[0]!r}; GPT-2 here ties the LM head to wte")
    return out


def from_hf(directory: PathLike, *, mapping: Optional[Mapping[str, Any]] = None, mesh: Any = None,
            dtype: Any = jnp.float32) -> Gpt2LMHeadModel:
    """A :class:`Gpt2LMHeadModel` with the weights of a transformers GPT-2 folder.

    >>> import jax, tempfile
    >>> model = Gpt2LMHeadModel.init(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
    ...                              key=jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     to_hf(model, d)
    ...     back = from_hf(d)
    >>> bool((back.transformer.wte.weight.array == model.transformer.wte.weight.array).all())
    True

    Reads ``config.json`` and ``model.safetensors`` (see :func:`hf_state_dict`). Under an
    axis mapping (``mapping=``/``mesh=`` or :func:`namax.axis_mapping`) each device reads
    only its block of each PyTorch-layout tensor. Unknown keys, missing keys, shape
    mismatches and an untied ``lm_head`` are errors naming the key.
    """
    directory = pathlib.Path(directory)
    config = load_hf_config(directory)
    template = eqx.filter_eval_shape(Gpt2LMHeadModel.init, config, key=jax.random.key(0))
    if dtype != jnp.float32:
        template = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype), template)
    transformer = from_torch_compatible_state_dict(template.transformer, hf_state_dict(directory), mapping=mapping,
                                                   mesh=mesh)
    return Gpt2LMHeadModel(transformer, config)


EXAMPLES_GPT_KEYS = (
    (r"^wte\.", "token_embed."),
    (r"^wpe\.", "pos_embed."),
    (r"^h\.(\d+)\.ln_1\.", r"blocks.\1.ln1."),
    (r"^h\.(\d+)\.ln_2\.", r"blocks.\1.ln2."),
    (r"^h\.(\d+)\.attn\.c_attn\.", r"blocks.\1.attn.qkv."),
    (r"^h\.(\d+)\.attn\.c_proj\.", r"blocks.\1.attn.out."),
    (r"^h\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.layers.0."),
    (r"^h\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.layers.1."),
    (r"^ln_f\.", "ln_f."),
)
"""transformers GPT-2 keys -> the keys of ``examples/gpt.py``'s ``GPT`` (regex, replacement): the same
architecture and axis names, other field names."""


def from_hf_into(template: Any, directory: PathLike, key_map: Sequence[tuple[str, str]] = EXAMPLES_GPT_KEYS, *,
                 positions: Optional[int] = None, mapping: Optional[Mapping[str, Any]] = None,
                 mesh: Any = None) -> Any:
    """Any GPT-2-shaped namax model (``template``) with a transformers GPT-2 folder's weights, by axis name.

    >>> import jax, tempfile
    >>> model = Gpt2LMHeadModel.init(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
    ...                              key=jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     to_hf(model, d)
    ...     back = from_hf_into(model, d, [(r"^", "transformer.")])  # this module's own model, as a check
    >>> w = back.transformer.h.stacked.attn.c_attn.weight
    >>> bool((w.array == model.transformer.h.stacked.attn.c_attn.weight.array).all())
    True

    Each key of :func:`hf_state_dict` is renamed by the first ``key_map`` rule that matches
    (``re.sub``; no match is an error); the default maps onto ``examples/gpt.py``'s ``GPT``
    (build its template with ``GPTConfig(seq_len=S, embed=n_embd, heads=n_head,
    layers=n_layer, vocab=vocab_size)`` and pass ``positions=S``). The template's layers
    read the tensors in their own torch layouts by axis name (a ``Linear`` reads
    GPT-2's ``[in, out]`` Conv1D weights transposed), per device under an axis mapping.
    """
    hf = hf_state_dict(directory, positions=positions)
    renamed: dict[str, Any] = {}
    for key, value in hf.items():
        for pattern, replacement in key_map:
            if re.search(pattern, key):
                renamed[re.sub(pattern, replacement, key, count=1)] = value
                break
        else:
            raise KeyError(f"from_hf_into: no key_map rule renames the GPT-2 key {key!r}")
    return from_torch_compatible_state_dict(template, renamed, mapping=mapping, mesh=mesh)


def to_hf(model: Gpt2LMHeadModel, directory: PathLike, *, prefix: Optional[str] = "transformer") -> None:
    """Write ``model`` as a transformers folder: ``config.json`` and a PyTorch-layout ``model.safetensors``.

    >>> import jax, tempfile, os
    >>> model = Gpt2LMHeadModel.init(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
    ...                              key=jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     to_hf(model, d)
    ...     sorted(os.listdir(d))
    ['config.json', 'model.safetensors']

    Keys are those of transformers' ``GPT2LMHeadModel.save_pretrained`` (``transformer.h.0.attn.c_attn.weight``,
    Conv1D weights ``[in, out]``; the tied ``lm_head.weight`` left out); ``prefix=None``
    gives a ``GPT2Model``'s keys (``h.0...``). transformers' ``FlaxGPT2LMHeadModel.from_pretrained``
    loads the folder without torch (it converts a ``format: pt`` safetensors file itself);
    the PyTorch class reads this same layout (not tested here: torch is not installed).
    """
    if not isinstance(model, Gpt2LMHeadModel):
        raise TypeError(f"to_hf: expected a Gpt2LMHeadModel, got {type(model).__name__}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = to_torch_compatible_state_dict(model.transformer, prefix=prefix)
    save_state_dict(sd, directory / _WEIGHTS)
    (directory / "config.json").write_text(json.dumps(model.config.to_hf_config(), indent=2))


def init_from_hf(directory: PathLike, *, mapping: Optional[Mapping[str, Any]] = None,
                 mesh: Any = None) -> tuple[Gpt2LMHeadModel, GPT2Config]:
    """``(model, config)`` from a transformers GPT-2 folder, for a training script's ``--init-from-hf DIR``.

    >>> import jax, tempfile
    >>> model = Gpt2LMHeadModel.init(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2),
    ...                              key=jax.random.key(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     to_hf(model, d)
    ...     loaded, config = init_from_hf(d)
    >>> config.n_embd, loaded.config == config
    (8, True)

    The model maps ``[batch, position]`` int ids (at most ``n_positions`` positions, ids
    below ``vocab_size``) to ``[batch, position, vocab]`` logits, as ``examples/gpt.py``'s
    ``GPT`` does, so the same loss applies.
    """
    model = from_hf(directory, mapping=mapping, mesh=mesh)
    return model, model.config


__all__ = ["GPT2Config", "Conv1D", "Gpt2Attention", "Gpt2Mlp", "Gpt2Block", "Gpt2Transformer", "Gpt2LMHeadModel",
           "load_hf_config", "hf_state_dict", "from_hf", "from_hf_into", "EXAMPLES_GPT_KEYS", "to_hf", "init_from_hf"]
