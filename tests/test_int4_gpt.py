"""The named GPT (examples/gpt.py) with int4 Linear weights: stacked over ``layers``, run under
``lax.scan`` one layer's codes at a time, logits within quantisation error, no materialization."""

import pathlib
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))

import namax as nx  # noqa: E402
import namax.nn as nn  # noqa: E402
import namax.quant as qax  # noqa: E402
from gpt import GPT, GPTConfig, KVCache  # noqa: E402

CONFIG = GPTConfig(seq_len=16, embed=64, heads=2, layers=3, vocab=64)  # 3 layers: no int4 chunk scan has length 3
GROUP = 32


def _in_names(lin: nn.Linear) -> tuple[str, ...]:
    return tuple(a.name for a in (lin.In if isinstance(lin.In, tuple) else (lin.In,)))


def _quantize(model, symmetric: bool):
    def convert(node):
        if not isinstance(node, nn.Linear):
            return node
        w = qax.int4.quantize_named(node.weight, _in_names(node), "layers", group_size=GROUP, symmetric=symmetric)
        return eqx.tree_at(lambda lin: lin.weight, node, w)

    return jax.tree_util.tree_map(convert, model, is_leaf=lambda n: isinstance(n, nn.Linear))


def codes_of(model) -> list:
    return [x for x in jax.tree_util.tree_leaves(model, is_leaf=lambda x: isinstance(x, qax.Int4Weight))
            if isinstance(x, qax.Int4Weight)]


def _dequantize(model):
    is_int4 = lambda x: isinstance(x, qax.Int4Weight)  # noqa: E731
    return jax.tree_util.tree_map(lambda x: x.materialize() if is_int4(x) else x, model, is_leaf=is_int4)


@pytest.fixture(scope="module")
def models():
    model = eqx.filter_jit(GPT.init)(CONFIG, key=jax.random.key(0))
    return model, eqx.filter_jit(_quantize)(model, symmetric=False)


def _ids(batch=2):
    return nx.named(jax.random.randint(jax.random.key(1), (batch, CONFIG.seq_len), 0, CONFIG.vocab),
                    ("batch", "position"))


def test_every_linear_weight_is_stacked_int4(models):
    model, qmodel = models
    qkv = qmodel.blocks.stacked.attn.qkv.weight
    assert isinstance(qkv.array, qax.Int4Weight)
    assert qkv.axis_names == model.blocks.stacked.attn.qkv.weight.axis_names
    assert qkv.array.packed.shape[0] == CONFIG.layers and qkv.array.n_stack == 1
    codes = codes_of(qmodel)
    assert len(codes) == 4  # qkv, out, mlp up, mlp down
    dense = sum(x.size * 4 for x in codes)
    assert qax.int4.weight_bytes(codes) / dense < 0.16  # group 32, asymmetric: (0.5 + 2/32 + 0.5/32) / 4


def test_logits_match_dequantized_and_dense_without_warnings(models):
    model, qmodel = models
    ids = _ids()
    forward = eqx.filter_jit(qax.use_implicit_args(lambda m, ids: m(ids).array))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = forward(qmodel, ids)
    plain = eqx.filter_jit(lambda m, ids: m(ids).array)
    want = plain(eqx.filter_jit(_dequantize)(qmodel), ids)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    dense = plain(model, ids)
    # quantisation error only: small relative to the logits, and far below the change a
    # different model would make
    assert np.linalg.norm(got - dense) / np.linalg.norm(dense) < 0.3
    other = plain(eqx.filter_jit(GPT.init)(CONFIG, key=jax.random.key(5)), ids)
    assert np.linalg.norm(got - dense) < 0.5 * np.linalg.norm(other - dense)


def test_scan_body_sees_one_layer_of_codes(models):
    _, qmodel = models
    jaxpr = jax.make_jaxpr(qax.use_implicit_args(lambda m, ids: m(ids).array))(qmodel, _ids())

    def scans(j):
        for e in j.eqns:
            if e.primitive.name == "scan":
                yield e
            for p in e.params.values():
                sub = getattr(p, "jaxpr", p)
                if hasattr(sub, "eqns"):
                    yield from scans(sub)

    (layer_scan,) = [e for e in scans(jaxpr.jaxpr) if e.params["length"] == CONFIG.layers]
    # the stacked codes go in as scanned xs: uint8 [layers, in, out/2]
    xs = layer_scan.invars[layer_scan.params["num_consts"] + layer_scan.params["num_carry"]:]
    uint8_xs = [v.aval.shape for v in xs if v.aval.dtype == jnp.uint8]
    assert len(uint8_xs) == 8 and all(s[0] == CONFIG.layers for s in uint8_xs)  # codes + zero points, 4 weights
    dense_shapes = {tuple(x.shape) for x in codes_of(qmodel)}
    assert not any(tuple(v.aval.shape) in dense_shapes for v in xs)  # no dense stacked weight goes in


def test_symmetric_int4_batched_over_layers_and_decode(models):
    model, _ = models
    qmodel = eqx.filter_jit(_quantize)(model, symmetric=True)
    deq = eqx.filter_jit(_dequantize)(qmodel)
    # the stacked weights as a batch dim of dot_general: every layer's MLP at once
    x = nx.named(jax.random.normal(jax.random.key(2), (CONFIG.layers, 3, CONFIG.embed)), ("layers", "batch", "embed"))
    up = eqx.filter_jit(qax.use_implicit_args(lambda lin, x: lin(x).array))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = up(qmodel.blocks.stacked.mlp.layers[0], x)
    np.testing.assert_allclose(got, deq.blocks.stacked.mlp.layers[0](x).array, rtol=1e-4, atol=1e-4)
    # decoding indexes the stack with a traced layer number (dynamic_slice + squeeze of the codes)
    Batch = nx.Axis("batch", 1)

    def decode(m, tok):
        logits, _ = m.decode_step(tok, KVCache.init(CONFIG, Batch), 0)
        return logits.array

    tok = nx.named(jnp.array([3]), ("batch",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = eqx.filter_jit(qax.use_implicit_args(decode))(qmodel, tok)
    np.testing.assert_allclose(got, eqx.filter_jit(decode)(deq, tok), rtol=1e-4, atol=1e-4)


def test_compiled_temp_below_the_dense_weights(models):
    model, qmodel = models
    ids = _ids(1)
    params, static = eqx.partition(qmodel, eqx.is_array)
    implicit = qax.use_implicit_args(lambda p, ids: eqx.combine(p, static)(ids).array)
    fwd = jax.jit(implicit).lower(params, ids).compile()
    dequantizing = jax.jit(lambda p, ids: _dequantize(eqx.combine(p, static))(ids).array).lower(params, ids).compile()
    linear_dense = sum(lin.weight.array.size * 4 for lin in jax.tree_util.tree_leaves(
        model, is_leaf=lambda n: isinstance(n, nn.Linear)) if isinstance(lin, nn.Linear))
    temp = fwd.memory_analysis().temp_size_in_bytes
    assert temp < dequantizing.memory_analysis().temp_size_in_bytes - 0.5 * linear_dense
