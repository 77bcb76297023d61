"""Int4Weight: packing, quantization error, the chunked dot (values, dims, stacks, grads, memory), QLoRA, errors."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import namax as nx
import namax.quant as qax
from quant_cases import dot_with_roles, no_warnings
from namax.quant import Int4Weight, LoraWeight
from namax.quant import int4_dot
from namax.quant.int4 import pack_int4, quantize, quantize_array, quantize_named, unpack_int4, weight_bytes

# quantize once per shape as one compiled program (eagerly it is ~30 small compiles per shape)
_quantize = jax.jit(quantize_array, static_argnums=(1, 2, 3, 4), static_argnames=("stack_dims",))
_materialize = jax.jit(lambda q: q.materialize())


@settings(max_examples=4)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2 ** 16))
def test_pack_unpack_exact(rows, half, seed):
    codes = np.random.default_rng(seed).integers(-8, 8, size=(rows, 2 * half)).astype(np.int8)
    packed = pack_int4(codes)
    assert packed.dtype == jnp.uint8 and packed.shape == (rows, half)
    np.testing.assert_array_equal(unpack_int4(packed), codes)
    # byte j holds code j in its low nibble and code half + j in its high nibble, as documented
    np.testing.assert_array_equal(np.asarray(packed) & 0xF, codes[:, :half].astype(np.uint8) & 0xF)
    np.testing.assert_array_equal(np.asarray(packed) >> 4, codes[:, half:].astype(np.uint8) & 0xF)


@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_roundtrip_error_bound(symmetric):
    w = jax.random.normal(jax.random.key(0), (512, 96))
    q = _quantize(w, 128, symmetric)
    err = np.abs(np.asarray(_materialize(q) - w)).reshape(4, 128, 96)
    g = np.asarray(w).reshape(4, 128, 96)
    if symmetric:
        step = np.abs(g).max(axis=1) / 7
    else:
        step = (np.maximum(g.max(axis=1), 0) - np.minimum(g.min(axis=1), 0)) / 15
    # half a quantization step, plus the bf16 rounding of the scale over the largest code
    assert np.all(err <= step[:, None, :] * (0.5 + 8 * 2.0 ** -8) + 1e-6)
    assert np.allclose(qax.int4.dequantize({"w": q})["w"], _materialize(q))
    # closed over by a jitted function the codes are constants XLA may fold: same values
    np.testing.assert_array_equal(jax.jit(lambda: q.materialize())(), _materialize(q))


def test_stacked_multidim_quantize_matches_per_matrix():
    # [layers, out (qkv, heads), in (embed)]: each layer is quantized like the 2-D matrix [in, out]
    w = jax.random.normal(jax.random.key(1), (2, 3, 2, 64))
    q = _quantize(w, 32, False, 3, stack_dims=1)
    assert q.shape == w.shape and q.packed.shape == (2, 64, 3) and q.scales.shape == (2, 2, 6)
    assert q.in_shape == (64,) and q.out_shape == (3, 2) and q.order == (1, 2, 0)
    for layer in range(2):
        flat = w[layer].reshape(6, 64).T  # [in, out]
        ref = _quantize(flat, 32, False)
        np.testing.assert_array_equal(q.packed[layer], ref.packed)
        np.testing.assert_allclose(_materialize(q)[layer], _materialize(ref).T.reshape(3, 2, 64))
    named = quantize_named(nx.named(w, ("layers", "qkv", "heads", "embed")), "embed", "layers", group_size=32,
                           symmetric=False)
    np.testing.assert_array_equal(named.array.packed, q.packed)
    assert named.axis_names == ("layers", "qkv", "heads", "embed")


@pytest.mark.parametrize("form", ["scan", "grouped"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_matmul_matches_materialized_and_dense(form, symmetric, monkeypatch):
    monkeypatch.setattr(int4_dot, "DOT_FORM", form)
    w = jax.random.normal(jax.random.key(1), (512, 64))
    x = jax.random.normal(jax.random.key(2), (8, 512))
    q = _quantize(w, 128, symmetric)
    got = no_warnings(jax.jit(qax.use_implicit_args(lambda x, w: x @ w)), x, q)
    np.testing.assert_allclose(got, x @ _materialize(q), rtol=1e-4, atol=1e-3)
    dense = x @ w
    assert np.linalg.norm(got - dense) / np.linalg.norm(dense) < 0.15


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("x_shape", [(512,), (1, 512), (1, 1, 512)])
def test_matvec_scales_per_group_matches_materialized(symmetric, x_shape, monkeypatch):
    monkeypatch.setattr(int4_dot, "DOT_FORM", "scan")  # the jaxpr checks below are the scan form's
    w = jax.random.normal(jax.random.key(1), (512, 64))
    x = jax.random.normal(jax.random.key(2), x_shape)
    q = _quantize(w, 128, symmetric)
    fn = jax.jit(qax.use_implicit_args(lambda x, w: x @ w))
    got = no_warnings(fn, x, q)
    np.testing.assert_allclose(got, x @ _materialize(q), rtol=1e-4, atol=1e-4)
    # the per-group form: a dot batched over the 4 groups of the chunk, [.., 128] . [.., 128, 32] per half
    jaxpr = str(jax.make_jaxpr(qax.use_implicit_args(lambda x, w: x @ w))(x, q))
    assert "f32[1,128,32]" in jaxpr and "dot_general" in jaxpr
    grad = jax.grad(lambda x: jnp.sum(jnp.tanh(fn(x, q))))(x)
    np.testing.assert_allclose(grad, jax.grad(lambda x: jnp.sum(jnp.tanh(x @ _materialize(q))))(x), rtol=1e-3,
                               atol=1e-4)


def test_matvec_per_layer_and_bf16_activations():
    w = jax.random.normal(jax.random.key(3), (3, 256, 64))
    q = _quantize(w, 128, False, 1, stack_dims=1)
    x = jax.random.normal(jax.random.key(4), (3, 1, 256))
    per_layer = qax.use_implicit_args(lambda x, w: jnp.einsum("lbi,lio->lbo", x, w))
    np.testing.assert_allclose(no_warnings(jax.jit(per_layer), x, q),
                               jnp.einsum("lbi,lio->lbo", x, _materialize(q)), rtol=1e-4, atol=1e-4)
    # bf16 activations and weight: the result is bf16, as for dense bf16 arrays
    qb = _quantize(w.astype(jnp.bfloat16), 128, True, 1, stack_dims=1)
    xb = x[0, 0].astype(jnp.bfloat16)
    got = no_warnings(jax.jit(qax.use_implicit_args(lambda x, w: x @ w[0])), xb, qb)
    want = xb @ _materialize(qb)[0]
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32), rtol=2e-2, atol=5e-2)


_IN_SHAPES = [(32,), (2, 16), (16,)]
_OUT_SHAPES = [(4,), (2, 3), (6,)]


@st.composite
def _dot_case(draw):
    """A (stacked, multi-dim) weight and a dot_general giving each stack dim and each group one role."""
    n_stack = draw(st.integers(0, 1))
    in_shape, out_shape = draw(st.sampled_from(_IN_SHAPES)), draw(st.sampled_from(_OUT_SHAPES))
    trailing = draw(st.permutations([("in", k) for k in range(len(in_shape))]
                                    + [("out", k) for k in range(len(out_shape))]))
    logical = [("stack", 0, 2)] * n_stack + [(g, k, (in_shape if g == "in" else out_shape)[k]) for g, k in trailing]
    group_role = {g: draw(st.sampled_from(["contract", "batch", "free"])) for g in ("stack", "in", "out")}
    roles = [group_role[g] for g, _, _ in logical]
    x_dims = [(d, size) for d, (_, _, size) in enumerate(logical) if roles[d] != "free"]
    x_dims += [(None, 3)] * draw(st.integers(0 if x_dims else 1, 1))
    order = draw(st.permutations(range(len(x_dims))))
    return (n_stack, in_shape, out_shape, logical), roles, [x_dims[i] for i in order], draw(st.booleans()), draw(
        st.integers(0, 2 ** 16))


@settings(max_examples=6)
@given(_dot_case())
def test_dot_general_any_dims_matches_materialized(case):
    (n_stack, in_shape, out_shape, logical), roles, x_dims, on_left, seed = case
    key = jax.random.key(seed)
    # build the weight in storage-compatible order [stack, in..., out...], then permute to `logical`
    base = jax.random.normal(key, (2,) * n_stack + in_shape + out_shape)
    names = [("stack", 0)] * n_stack + [("in", k) for k in range(len(in_shape))] + [("out", k) for k in range(
        len(out_shape))]
    want_names = [("stack", 0)] * n_stack + [(g, k) for g, k, _ in logical[n_stack:]]
    perm = tuple(names.index(n) for n in want_names)
    w = jnp.transpose(base, perm)
    in_axis = tuple(d for d, n in enumerate(want_names) if n[0] == "in")
    q = _quantize(w, 16, bool(seed % 2), in_axis, stack_dims=n_stack)
    assert q.shape == w.shape
    x = jax.random.normal(jax.random.fold_in(key, 1), tuple(s for _, s in x_dims))
    fn = dot_with_roles(roles, x_dims, on_left)
    got = no_warnings(jax.jit(qax.use_implicit_args(fn)), q, x)
    want = jax.jit(lambda q, x: fn(q.materialize(), x))(q, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_transposed_weight_and_mixed_roles():
    q = _quantize(jax.random.normal(jax.random.key(2), (2, 32, 4)), 16, True, (0, 1))  # in = (2, 32)
    t = qax.use_implicit_args(lambda w: jnp.transpose(w, (2, 0, 1)))(q)
    assert isinstance(t, Int4Weight) and t.shape == (4, 2, 32) and t.transposed
    np.testing.assert_array_equal(_materialize(t), jnp.transpose(_materialize(q), (2, 0, 1)))
    # contracting only part of the `in` group cannot use the packed layout: materialized, with a warning
    x = jnp.ones((3, 32))
    fn = lambda w, x: lax.dot_general(x, w, (((1,), (1,)), ((), ())))  # noqa: E731
    with pytest.warns(UserWarning, match="dot_general was not handled by class Int4Weight"):
        got = qax.use_implicit_args(fn)(q, x)
    np.testing.assert_allclose(got, fn(_materialize(q), x), rtol=1e-5, atol=1e-5)


def test_scan_and_index_over_stacked_layers():
    layers, n = 3, 64
    w = jax.random.normal(jax.random.key(3), (layers, n, n)) / 8
    q = _quantize(w, 32, False, 2, stack_dims=1)  # [layers, out, in], as namax's Linear on CPU
    dense = _materialize(q)
    x = jax.random.normal(jax.random.key(4), (2, n))

    def scanned(ws, x):
        return lax.scan(lambda h, w: (jnp.tanh(h @ w.T), None), x, ws)[0]

    def indexed(ws, x):
        return lax.fori_loop(0, layers, lambda i, h: jnp.tanh(h @ ws[i].T), x)

    for fn in (scanned, indexed):
        f = jax.jit(qax.use_implicit_args(fn))
        np.testing.assert_allclose(no_warnings(f, q, x), jax.jit(fn)(dense, x), rtol=1e-4, atol=1e-5)
    # each scan step sees one layer's codes: the body's inputs are [out, in/2]-sized, never a dense layer
    body = [e for e in jax.make_jaxpr(qax.use_implicit_args(scanned))(q, x).jaxpr.eqns
            if e.primitive.name == "scan"][0].params["jaxpr"].jaxpr
    assert (n, n // 2) in [tuple(v.aval.shape) for v in body.invars]
    assert not any(tuple(v.aval.shape) == (n, n) for v in body.invars)


def _dots(jaxpr):
    """Every dot_general eqn in ``jaxpr`` and its sub-jaxprs."""
    found = []
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            found.append(e)
        for p in e.params.values():
            sub = getattr(p, "jaxpr", p)
            if hasattr(sub, "eqns"):
                found += _dots(sub)
    return found


def test_activation_stays_lhs_and_no_transposed_lhs_dot(monkeypatch):
    monkeypatch.setattr(int4_dot, "DOT_FORM", "scan")  # the CPU kernel has no dot_general to inspect
    q = quantize_array(jnp.ones((8, 256)), in_axis=1)  # [out, in] as in equinox: W @ x
    assert q.shape == (8, 256) and q.transposed
    x = jnp.ones((4, 256))
    jaxpr = jax.make_jaxpr(qax.use_implicit_args(lambda w, x: (w @ x.T).T))(q, x).jaxpr
    dots = _dots(jaxpr)
    assert dots
    for e in dots:
        (lc, _), _ = e.params["dimension_numbers"]
        lhs = e.invars[0].aval
        assert lhs.shape[0] == 4 and lc == (lhs.ndim - 1,)  # the activation, contracting its last dim


def test_grad_wrt_x_matches_materialized():
    q = _quantize(jax.random.normal(jax.random.key(3), (384, 16)), 128, False)
    x = jax.random.normal(jax.random.key(4), (5, 384))
    loss = qax.use_implicit_args(lambda x, w: jnp.sum(jnp.tanh(x @ w) ** 2))
    got = jax.jit(jax.grad(loss))(x, q)
    want = jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(x @ q.materialize()) ** 2)))(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_compiled_temp_below_half_dense_weight_and_bytes_per_param():
    n = 1024
    q = _quantize(jax.random.normal(jax.random.key(5), (n, n)))
    x = jnp.ones((16, n))
    compiled = jax.jit(qax.use_implicit_args(lambda x, w: x @ w)).lower(x, q).compile()
    stats = compiled.memory_analysis()
    dense_bytes = n * n * 4
    assert stats.temp_size_in_bytes < 0.5 * dense_bytes
    # the weight's compiled argument bytes (codes + scales) per parameter
    weight_args = stats.argument_size_in_bytes - x.size * 4
    assert weight_args == weight_bytes(q)
    assert weight_args / (n * n) <= 0.53
    dense_compiled = jax.jit(lambda x, w: x @ w.materialize()).lower(x, q).compile()
    assert dense_compiled.memory_analysis().temp_size_in_bytes >= dense_bytes


def test_qlora_forward_grads_and_training():
    key = jax.random.key(6)
    n_in, n_out, r = 256, 32, 4
    q = _quantize(jax.random.normal(key, (n_in, n_out)))
    a = jax.random.normal(jax.random.fold_in(key, 1), (n_in, r)) / 16
    b = jax.random.normal(jax.random.fold_in(key, 2), (n_out, r)) / 4
    lw = LoraWeight(q, a, b, alpha=2.0)
    x = jax.random.normal(jax.random.fold_in(key, 3), (8, n_in))
    y = jnp.sin(x[:, :n_out])
    fwd = jax.jit(qax.use_implicit_args(lambda w, x: x @ w))
    dense = _materialize(q)
    np.testing.assert_allclose(no_warnings(fwd, lw, x), x @ (dense + 0.5 * a @ b.T), rtol=1e-4, atol=1e-3)

    def loss(a, b):
        return qax.use_implicit_args(lambda w: jnp.mean((x @ w - y) ** 2))(LoraWeight(q, a, b, alpha=2.0))

    ga, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(a, b)
    wa, wb = jax.jit(jax.grad(lambda a, b: jnp.mean((x @ (dense + 0.5 * a @ b.T) - y) ** 2), argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(ga, wa, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, wb, rtol=1e-4, atol=1e-5)

    # never the whole dense weight at once, even for the gradient
    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(a, b).compile()
    assert grad_fn.memory_analysis().temp_size_in_bytes < 0.5 * n_in * n_out * 4 + 64 * 1024

    # training: only a and b move (lora.optimizer freezes w = the Int4Weight)
    params = {"w": lw}
    opt = qax.lora.optimizer(optax.adam(1e-2))
    state = opt.init(params)
    trainable = lambda p: (p["w"].a, p["w"].b)  # noqa: E731

    @jax.jit
    def step(params, state):
        value, (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1))(*trainable(params))
        grads = jax.tree_util.tree_map(jnp.zeros_like, params)
        grads = {"w": LoraWeight(grads["w"].w, ga, gb, alpha=2.0)}
        updates, state = opt.update(grads, state, params)
        return value, optax.apply_updates(params, updates), state

    first = None
    for _ in range(25):
        value, params, state = step(params, state)
        first = float(value) if first is None else first
    assert float(value) < 0.7 * first
    np.testing.assert_array_equal(params["w"].w.packed, q.packed)
    np.testing.assert_array_equal(params["w"].w.scales, q.scales)


def test_equinox_mlp_int4_unchanged_model():
    key = jax.random.key(7)
    mlp = eqx.nn.MLP(256, 4, 256, 2, key=key)
    qmlp = quantize(mlp, in_axis=1)  # equinox Linear weights are [out, in]
    assert sum(isinstance(l, Int4Weight) for l in jax.tree_util.tree_leaves(
        qmlp, is_leaf=lambda l: isinstance(l, Int4Weight))) == 3
    x = jax.random.normal(key, (4, 256))
    got = no_warnings(eqx.filter_jit(qax.use_implicit_args(lambda m, x: jax.vmap(m)(x))), qmlp, x)
    want = eqx.filter_jit(lambda m, x: jax.vmap(qax.int4.dequantize(m))(x))(qmlp, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    want = jax.vmap(mlp)(x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.15


def test_bad_inputs():
    with pytest.raises(ValueError, match="group_size 128 does not divide the contraction dim"):
        quantize_array(jnp.ones((200, 4)))
    with pytest.raises(ValueError, match=r"shape \(4,\) with stack_dims=0 has fewer than 2 matrix dims"):
        quantize({"b": jnp.ones(4)}, where=lambda p, l: True)
    with pytest.raises(ValueError, match=r"in_axis 0 includes one of the 1 stack dims"):
        quantize_array(jnp.ones((2, 128, 4)), in_axis=0, stack_dims=1)
    with pytest.raises(ValueError, match=r"in_axis 5 is not a dim of the weight of shape \(128, 4\)"):
        quantize_array(jnp.ones((128, 4)), in_axis=5)
    with pytest.raises(ValueError, match=r"stack axes \('layers',\) must lead"):
        quantize_named(nx.ones((nx.Axis("embed", 128), nx.Axis("layers", 2), nx.Axis("mlp", 4))), "embed", "layers")
    with pytest.raises(ValueError, match="has no axis 'heads'"):
        quantize_named(nx.ones((nx.Axis("embed", 128), nx.Axis("mlp", 4))), "heads")
    with pytest.raises(ValueError, match=r"\['b'\]"):
        quantize({"b": jnp.ones(4)}, where=lambda p, l: True)
    with pytest.raises(ValueError, match="output dim .* must be even"):
        quantize_array(jnp.ones((128, 3)))
    packed = pack_int4(jnp.zeros((256, 8), jnp.int8))
    with pytest.raises(ValueError, match=r"scales must be a float array of shape \(2, 8\)"):
        Int4Weight(packed, jnp.ones((1, 8)))
    with pytest.raises(TypeError, match="packed must be uint8"):
        Int4Weight(jnp.zeros((256, 4), jnp.int8), jnp.ones((2, 8)))
    with pytest.raises(ValueError, match="zero_points must be packed uint8 of shape"):
        Int4Weight(packed, jnp.ones((2, 8)), jnp.zeros((2, 8), jnp.uint8))
    with pytest.raises(ValueError, match=r"in_shape \(2, 64\) and out_shape \(8,\) do not flatten"):
        Int4Weight(packed, jnp.ones((2, 8)), in_shape=(2, 64))
    with pytest.raises(ValueError, match="order must be a permutation of range"):
        Int4Weight(packed, jnp.ones((2, 8)), order=(0, 0))
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        Int4Weight(packed, jnp.ones((2, 8)), group_size=0)
    with pytest.raises(ValueError, match="DOT_FORM"):
        int4_dot.DOT_FORM = "fast"
        try:
            int4_dot.form()
        finally:
            int4_dot.DOT_FORM = "auto"


def test_symmetric_stacked_weight_is_scanned_without_materializing():
    w = jax.random.normal(jax.random.PRNGKey(7), (3, 32, 32)) * 0.2
    q = quantize_array(w, group_size=16, in_axis=1, stack_dims=1)  # symmetric: zero_points is None
    assert q.zero_points is None

    def run(ws, x):
        return jax.lax.scan(lambda c, layer: (jnp.tanh(c @ layer), None), x, ws)[0]

    x = jax.random.normal(jax.random.PRNGKey(8), (4, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = qax.use_implicit_args(run)(q, x)
    np.testing.assert_allclose(got, run(q.materialize(), x), rtol=1e-4, atol=1e-4)
