"""Small programs to look at with ``dump-hlo`` (and used by its tests).

Each ``make_*`` function follows the target protocol: it returns ``(fn, args)`` or
``(fn, args, kwargs)``. The other public functions are meant for ``--args``::

    dump-hlo examples/dump_targets.py:make_mlp --stage names
    dump-hlo examples/dump_targets.py:make_plain_mlp --stage names
    dump-hlo examples/dump_targets.py:make_lora --stage implicit
    dump-hlo examples/dump_targets.py:make_mlp --devices 8 --mesh data=4,model=2 \\
        --axis-resources batch=data,mlp=model --stage summary
    dump-hlo examples/dump_targets.py:make_mlp_step --devices 8 --mesh data=8 --plan \\
        --plan-parameters 0 --stage summary
    dump-hlo examples/dump_targets.py:named_mlp --args x=batch:8,embed:16 \\
        w1=embed:16,mlp:32 w2=mlp:32,embed:16 --stage names
    dump-hlo examples/dump_targets.py:plain_mlp --raw --args x=batch:8,embed:16 \\
        w1=embed:16,mlp:32 w2=mlp:32,embed:16 --stage names
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

import namax as nx

Batch, Embed, Mlp = nx.make_axes(batch=8, embed=16, mlp=32)


def named_mlp(x: nx.NamedArray, w1: nx.NamedArray, w2: nx.NamedArray) -> nx.NamedArray:
    """A two-layer MLP written with named ops: ``gelu(x . w1) . w2`` over ``embed``/``mlp``."""
    h = nx.nn.gelu(nx.dot(x, w1, axis="embed"))
    return nx.dot(h, w2, axis="mlp")


def plain_mlp(x: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
    """The same MLP in plain ``jax.numpy``: names come only from the inputs."""
    return jax.nn.gelu(x @ w1) @ w2


def lora_mlp(params: dict, x: jax.Array) -> jax.Array:
    """``tanh(x @ w1) @ w2`` plus a reduction: with LoRA weights the dots are rewritten."""
    h = jnp.tanh(x @ params["w1"])
    return h @ params["w2"]


def _normal(key: int, shape: tuple) -> jax.Array:
    return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def make_mlp() -> tuple[Callable, tuple]:
    """``named_mlp`` on NamedArrays ``x[batch, embed]``, ``w1[embed, mlp]``, ``w2[mlp, embed]``."""
    x = nx.named(_normal(0, (8, 16)), (Batch, Embed))
    w1 = nx.named(_normal(1, (16, 32)) * 0.2, (Embed, Mlp))
    w2 = nx.named(_normal(2, (32, 16)) * 0.2, (Mlp, Embed))
    return named_mlp, (x, w1, w2)


def mlp_loss(params: dict, x: nx.NamedArray) -> jax.Array:
    """The squared output of :func:`named_mlp` with ``params = {"w1": ..., "w2": ...}``."""
    return nx.sum(named_mlp(x, params["w1"], params["w2"]) ** 2).array


def make_mlp_step() -> tuple[Callable, tuple]:
    """A training step ``value_and_grad(mlp_loss)(params, x)``: the parameters are argument 0
    (``--plan --plan-parameters 0`` adds FSDP-style candidates)."""
    _, (x, w1, w2) = make_mlp()
    return jax.value_and_grad(mlp_loss), ({"w1": w1, "w2": w2}, x)


def make_plain_mlp() -> tuple[Callable, tuple, dict]:
    """``plain_mlp`` named from the outside: ``namedjit(plain_mlp, in_axes=...)``."""
    f = nx.namedjit(plain_mlp, in_axes=(("batch", "embed"), ("embed", "mlp"), ("mlp", "embed")))
    return f, (_normal(0, (8, 16)), _normal(1, (16, 32)) * 0.2, _normal(2, (32, 16)) * 0.2), {}


def make_lora() -> tuple[Callable, tuple]:
    """``lora_mlp`` with both weights wrapped as rank-2 LoRA weights (needs ``namax.quant``), named by in_axes."""
    from namax import quant

    params = {"w1": _normal(1, (16, 32)) * 0.2, "w2": _normal(2, (32, 16)) * 0.2}
    params = quant.lora.wrap(params, rank=2, key=jax.random.key(3))
    names = ({"w1": ("embed", "mlp"), "w2": ("mlp", "embed")}, ("batch", "embed"))
    return nx.namedjit(lora_mlp, in_axes=names, out_axes="infer"), (params, _normal(0, (8, 16)))


def make_int4() -> tuple[Callable, tuple]:
    """``lora_mlp``'s shape with int4 weights (group 16 along the contraction dim), named by in_axes."""
    from namax.quant import int4

    params = {"w1": int4.quantize_array(_normal(1, (16, 32)) * 0.2, group_size=16),
              "w2": int4.quantize_array(_normal(2, (32, 16)) * 0.2, group_size=16)}
    names = ({"w1": ("embed", "mlp"), "w2": ("mlp", "embed")}, ("batch", "embed"))
    return nx.namedjit(lora_mlp, in_axes=names, out_axes="infer"), (params, _normal(0, (8, 16)))


def make_zeros_bias() -> tuple[Callable, tuple]:
    """A dense weight plus a ``Zeros`` bias: the add is rewritten away, ``exp`` materializes it."""
    from namax import quant

    def f(x: jax.Array, w: jax.Array, bias: Any) -> jax.Array:
        return jnp.exp(bias) * (x @ w + bias)

    return f, (_normal(0, (8, 16)), _normal(1, (16, 32)), quant.Zeros(shape=(32,)))


def make_not_a_pair() -> int:
    """A broken target for the tests: returns an int, not ``(fn, args)``."""
    return 3


def make_bad_trace() -> tuple[Callable, tuple]:
    """A broken target for the tests: the function fails while tracing (shape mismatch)."""
    return (lambda a, b: a @ b), (jnp.ones((2, 3)), jnp.ones((4, 5)))
