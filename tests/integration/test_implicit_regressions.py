"""Regressions from the old call path, where implicit arguments reached the function as
implicit arrays (now they reach it dense and the implicit pass rewrites their uses):

(i)   ``tree_map(lambda t: t * 2, p)`` over LoRA params, then ``x @ p["w"]``: was silently wrong;
(ii)  ``jax.vmap`` over a (stacked) LoRA weight inside the function;
(iii) a ``tree_map`` dtype cast of int4 params inside the function.
((iv), Flax's parameter shape check with int4 params, is in test_hf_gpt2.py.)

Every result is compared with plain ``jax.jit`` of the same function on the dense weights.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
import namax.quant as qax

from .helpers import assert_trees_close, report, strict_warnings

IN, OUT, BATCH, LAYERS = 16, 8, 4, 3


def _random_b(lora, key):
    keys = iter(jax.random.split(key, 16))
    return jax.tree_util.tree_map(
        lambda l: qax.LoraWeight(l.w, l.a, jax.random.normal(next(keys), l.b.shape), alpha=l.alpha)
        if isinstance(l, qax.LoraWeight) else l, lora, is_leaf=lambda l: isinstance(l, qax.LoraWeight))


@pytest.fixture(scope="module")
def data():
    k = jax.random.split(jax.random.key(0), 4)
    params = {"w": jax.random.normal(k[0], (IN, OUT)) / 4, "bias": jax.random.normal(k[1], (OUT,))}
    stacked = {"w": jax.random.normal(k[2], (LAYERS, IN, OUT)) / 4}
    x = jax.random.normal(k[3], (BATCH, IN))
    return params, stacked, x


def _call_recording_warnings(fn, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(w.message).splitlines()[0] for w in caught]


@pytest.mark.parametrize("named", [False, True], ids=["plain", "in_axes"])
def test_tree_map_scaling_of_lora_params(data, named):
    params, _, x = data
    lora = _random_b(qax.lora.wrap(params, rank=2, key=jax.random.key(1), alpha=3.0), jax.random.key(2))

    def f(p, x):
        p = jax.tree_util.tree_map(lambda t: t * 2, p)
        return x @ p["w"] + p["bias"]

    in_axes = ({"w": ("embed", "mlp"), "bias": ("mlp",)}, ("batch", "embed")) if named else None
    got, caught = _call_recording_warnings(nx.namedjit(f, in_axes=in_axes), lora, x)
    want = jax.jit(f)(qax.lora.merge(lora), x)
    assert not np.allclose(want, jax.jit(f)(params, x), atol=1e-3)  # the low-rank term matters
    report(f"regression (i) tree_map * 2 on LoRA [{'in_axes' if named else 'plain'}]",
           max_abs_diff=assert_trees_close(got, want), warnings=caught)


def test_vmap_over_stacked_lora_weight(data):
    _, stacked, x = data
    lora = _random_b(qax.lora.wrap(stacked, rank=2, key=jax.random.key(3), where=lambda p, l: l.ndim == 3),
                     jax.random.key(4))
    assert isinstance(lora["w"], qax.LoraWeight) and lora["w"].shape == (LAYERS, IN, OUT)
    xs = jnp.stack([x * (i + 1) for i in range(LAYERS)])

    def matmuls(p, x, xs):
        shared = jax.vmap(lambda w: x @ w)(p["w"])          # one input, every layer's weight
        paired = jax.vmap(lambda w, xi: xi @ w)(p["w"], xs)  # layer i's weight on input i
        return shared, paired

    def rows(p):
        return jax.vmap(lambda w: jnp.sum(w, axis=0))(p["w"])  # a reduction per layer (materializes)

    with strict_warnings():  # the matmuls keep the weight factored
        got = nx.namedjit(matmuls)(lora, x, xs)
    merged = qax.lora.merge(lora)
    diff = assert_trees_close(got, jax.jit(matmuls)(merged, x, xs))
    got_rows, caught = _call_recording_warnings(nx.namedjit(rows), lora)
    diff = max(diff, assert_trees_close(got_rows, jax.jit(rows)(merged)))
    report("regression (ii) vmap over a LoRA weight", max_abs_diff=diff, warnings_of_the_reduction=caught)


def test_tree_map_dtype_cast_of_int4_params(data):
    params, _, x = data
    q = qax.int4.quantize(params, group_size=8)
    assert isinstance(q["w"], qax.Int4Weight)

    def f(p, x):
        p = jax.tree_util.tree_map(lambda t: t.astype(jnp.bfloat16), p)
        return x.astype(jnp.bfloat16) @ p["w"] + p["bias"]

    got, caught = _call_recording_warnings(
        nx.namedjit(f, in_axes=({"w": ("embed", "mlp"), "bias": ("mlp",)}, ("batch", "embed"))), q, x)
    want = jax.jit(f)(qax.int4.dequantize(q), x)
    assert got.dtype == want.dtype == jnp.bfloat16
    report("regression (iii) bf16 cast of int4 params",
           max_abs_diff=assert_trees_close(got, want, rtol=1e-2, atol=1e-2), warnings=caught)
