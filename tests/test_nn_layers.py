"""namax.nn modules and layer functions against plain-jnp references: values, gradients
with respect to parameters and inputs, masks, dropout keys, Stacked vs an unrolled loop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
import namax.nn as hnn
from namax import Axis
from named_cases import rand, close, raw

B, P, E, H, D = Axis("batch", 2), Axis("position", 5), Axis("embed", 6), Axis("head", 2), Axis("head_size", 3)
KP = P.alias("key_position")
V, M, Layers = Axis("vocab", 7), Axis("mlp", 8), Axis("layers", 3)


def perturb(tree, seed=0):
    """Replace every parameter array with random values (so ones/zeros inits are not special)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    rng = np.random.default_rng(seed)
    new = [rng.normal(size=l.shape).astype(np.float32) if hasattr(l, "shape") else l for l in leaves]
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(n) for n in new])


def grads_match(named_fn, ref_fn, params, x, tol=1e-4):
    """Gradients of sum(out * cot) w.r.t. params and the raw input agree between the two fns."""
    out = jax.eval_shape(ref_fn, params, x)
    cot = np.random.default_rng(42).normal(size=out.shape).astype(np.float32)
    g1 = jax.jit(jax.grad(lambda p, a: jnp.sum(named_fn(p, a) * cot), argnums=(0, 1)))(params, x)
    g2 = jax.jit(jax.grad(lambda p, a: jnp.sum(ref_fn(p, a) * cot), argnums=(0, 1)))(params, x)
    l1, l2 = jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)
    assert len(l1) == len(l2)
    for a, b in zip(l1, l2):
        close(a, b, tol)


# --- Linear --------------------------------------------------------------------------------


@pytest.mark.parametrize("out_first", [True, False])
def test_linear_multi_axis_matches_einsum(out_first):
    lin = hnn.Linear.init(In=(H, D), Out=(E, M), key=jax.random.key(0), out_first=out_first)
    assert lin.weight.axis_names == (("embed", "mlp", "head", "head_size") if out_first
                                     else ("head", "head_size", "embed", "mlp"))
    assert lin.bias.axes == (E, M)
    lin = perturb(lin)
    x = rand((B, H, P, D), seed=1)

    def named_fn(l, a):
        return raw(l(nx.named(a, x.axes)), "batch", "position", "embed", "mlp")

    def ref_fn(l, a):
        w = raw(l.weight, "head", "head_size", "embed", "mlp")
        return jnp.einsum("bhpd,hdem->bpem", a, w) + raw(l.bias, "embed", "mlp")

    y = lin(x)
    assert y.axis_names == ("batch", "position", "embed", "mlp")
    close(jax.jit(named_fn)(lin, x.array), jax.jit(ref_fn)(lin, x.array), 1e-4)
    grads_match(named_fn, ref_fn, lin, x.array)


def test_linear_without_bias_and_init_scale():
    big = Axis("big", 400)
    lin = hnn.Linear.init(In=big, Out=M, key=jax.random.key(1), use_bias=False, init_scale=2.0)
    assert lin.bias is None
    w = lin.weight.array
    # truncated N(0,1) on [-3, 3] has std 0.9865; scaled by init_scale / sqrt(fan_in)
    expected = 2.0 / np.sqrt(400) * 0.9865
    assert abs(float(jnp.std(w)) - expected) < 0.1 * expected
    assert float(jnp.max(jnp.abs(w))) <= 3 * 2.0 / np.sqrt(400) + 1e-6
    x = rand((big,), seed=2)
    close(lin(x).array, x.array @ raw(lin.weight, "big", "mlp"), 1e-4)


def test_linear_errors():
    with pytest.raises(ValueError, match="share the axis names \\['embed'\\]"):
        hnn.Linear.init(In=E, Out=E, key=jax.random.key(0))
    lin = hnn.Linear.init(In=E, Out=M, key=jax.random.key(0))
    with pytest.raises(ValueError, match="lacks the In axes \\['embed'\\]"):
        lin(rand((B, P)))
    with pytest.raises(ValueError, match="axis 'embed' has size 4 but the layer's In axis has size 6"):
        hnn.Linear(lin.weight, lin.bias, E, M)(nx.ones((B, E.resize(4))))
    with pytest.raises(TypeError, match="must be a NamedArray"):
        lin(jnp.ones((6,)))
    with pytest.raises(TypeError, match="Axis or a tuple of Axes"):
        hnn.Linear.init(In="embed", Out=M, key=jax.random.key(0))


def test_linear_parameters_are_named_in_the_jaxpr():
    lin = hnn.Linear.init(In=E, Out=M, key=jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda l, x: l(x))(lin, rand((B, E)))
    tags = [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]
    assert tags[-1] == ("batch", "mlp")


# --- Embedding -----------------------------------------------------------------------------


def test_embedding_lookup_unembed_and_grads():
    emb = hnn.Embedding.init(V, E, key=jax.random.key(0), init_scale=0.5)
    assert emb.weight.axes == (V, E)
    ids = nx.named(jnp.array([[0, 3, 6, 3, 1], [2, 2, 5, 4, 0]]), (B, P))
    y = emb(ids)
    assert y.axes == (B, P, E)
    close(y.array, emb.weight.array[ids.array])
    logits = emb.unembed(y)
    assert logits.axes == (B, P, V)
    close(logits.array, jnp.einsum("bpe,ve->bpv", y.array, emb.weight.array), 1e-4)
    g = jax.grad(lambda m: jnp.sum(m.unembed(m(ids)).array ** 2))(emb)
    g_ref = jax.grad(lambda w: jnp.sum(jnp.einsum("bpe,ve->bpv", w[ids.array], w) ** 2))(emb.weight.array)
    close(g.weight.array, g_ref, 1e-4)


def test_embedding_errors():
    emb = hnn.Embedding.init(V, E, key=jax.random.key(0))
    with pytest.raises(TypeError, match="ids must be integers, got dtype float32"):
        emb(rand((P,)))
    with pytest.raises(TypeError, match="integer NamedArray"):
        emb(jnp.array([1, 2]))


# --- LayerNorm / RMSNorm -------------------------------------------------------------------


def test_layer_norm_matches_jnp():
    ln = perturb(hnn.LayerNorm.init(E, eps=1e-5))
    x = rand((B, E, P), seed=3, scale=2.0)

    def ref_fn(m, a):
        mu = a.mean(1, keepdims=True)
        var = ((a - mu) ** 2).mean(1, keepdims=True)
        return (a - mu) / jnp.sqrt(var + 1e-5) * m.weight.array[:, None] + m.bias.array[:, None]

    def named_fn(m, a):
        return raw(m(nx.named(a, x.axes)), "batch", "embed", "position")

    close(jax.jit(named_fn)(ln, x.array), jax.jit(ref_fn)(ln, x.array), 1e-4)
    grads_match(named_fn, ref_fn, ln, x.array, 1e-3)
    bare = hnn.LayerNorm.init(E, use_weight=False, use_bias=False)
    assert bare.weight is None and bare.bias is None
    close(bare(x).array, hnn.standardize(x, E).array)


def test_rms_norm_matches_jnp():
    rms = perturb(hnn.RMSNorm.init(E, eps=1e-6))
    assert rms.bias is None
    x = rand((B, P, E), seed=4)

    def ref_fn(m, a):
        return a / jnp.sqrt((a ** 2).mean(-1, keepdims=True) + 1e-6) * m.weight.array

    def named_fn(m, a):
        return m(nx.named(a, x.axes)).array

    close(jax.jit(named_fn)(rms, x.array), jax.jit(ref_fn)(rms, x.array), 1e-4)
    grads_match(named_fn, ref_fn, rms, x.array, 1e-3)


def test_norm_over_two_axes():
    ln = hnn.LayerNorm.init((P, E))
    x = rand((B, P, E), seed=5)
    a = x.array
    ref = (a - a.mean((1, 2), keepdims=True)) / jnp.sqrt(a.var((1, 2), keepdims=True) + 1e-5)
    close(ln(x).array, ref, 1e-4)


# --- Dropout -------------------------------------------------------------------------------


def test_dropout_determinism_scaling_and_inference():
    x = rand((B, P, E), seed=6)
    drop = hnn.Dropout(0.4)
    k1, k2 = jax.random.key(1), jax.random.key(2)
    y1, y1b, y2 = drop(x, key=k1), drop(x, key=k1), drop(x, key=k2)
    assert y1.axes == x.axes
    np.testing.assert_array_equal(y1.array, y1b.array)
    assert not np.array_equal(y1.array, y2.array)
    keep = np.asarray(jax.random.bernoulli(k1, 0.6, (2, 5, 6)))
    close(y1.array, np.where(keep, x.array / 0.6, 0.0))
    assert drop(x, key=k1, inference=True) is x
    assert hnn.Dropout(0.4, inference=True)(x) is x
    assert hnn.Dropout(0.0)(x, key=k1) is x
    # gradient: the kept elements get 1 / (1 - p)
    g = jax.grad(lambda a: jnp.sum(drop(nx.named(a, x.axes), key=k1).array))(x.array)
    close(g, np.where(keep, 1 / 0.6, 0.0))


def test_dropout_broadcast_axes_share_the_mask():
    x = nx.ones((B, P, E))
    y = hnn.Dropout(0.5, broadcast_axes=("batch", "position"))(x, key=jax.random.key(3))
    assert y.axes == x.axes
    a = np.asarray(y.array)
    assert np.all(a == a[:1, :1, :])  # the mask depends on embed only
    assert 0 < np.count_nonzero(a[0, 0]) < E.size or E.size == 0


def test_dropout_errors():
    x = nx.ones((B, E))
    with pytest.raises(ValueError, match="a key is required"):
        hnn.Dropout(0.1)(x)
    with pytest.raises(ValueError, match="pdrop must be in \\[0, 1\\), got 1.5"):
        hnn.Dropout(1.5)
    with pytest.raises(ValueError, match="broadcast axis 'head' is not an axis"):
        hnn.Dropout(0.1, broadcast_axes="head")(x, key=jax.random.key(0))


# --- MLP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_mlp_matches_unrolled_jnp(depth):
    Out = Axis("out", 4)
    mlp = perturb(hnn.MLP.init(E, Out, M, depth=depth, activation=hnn.gelu, key=jax.random.key(0)), seed=depth)
    assert len(mlp.layers) == depth + 1
    x = rand((B, E), seed=7)

    def ref_fn(m, a):
        for n, layer in enumerate(m.layers):
            ins = [ax.name for ax in nx.axis.ensure_tuple(layer.In)]
            outs = [ax.name for ax in nx.axis.ensure_tuple(layer.Out)]
            a = a @ raw(layer.weight, *ins, *outs) + layer.bias.array
            if n < len(m.layers) - 1:
                a = jax.nn.gelu(a)
        return a

    def named_fn(m, a):
        return raw(m(nx.named(a, x.axes)), "batch", "out")

    close(jax.jit(named_fn)(mlp, x.array), jax.jit(ref_fn)(mlp, x.array), 1e-4)
    grads_match(named_fn, ref_fn, mlp, x.array, 1e-3)


def test_mlp_can_be_differentiated_as_a_whole_module():
    mlp = hnn.MLP.init(E, Axis("out", 2), M, depth=2, key=jax.random.key(0))
    g = jax.grad(lambda m: jnp.sum(m(nx.ones((B, E))).array))(mlp)
    assert g.layers[1].weight.axis_names == ("mlp_out", "mlp")


# --- attention -----------------------------------------------------------------------------


def ref_attention(q, k, v, mask=None, bias=None):
    """q: [b p h d], k, v: [b k h d]; mask/bias: [b h p k] broadcastable."""
    s = jnp.einsum("bphd,bkhd->bhpk", q, k) / jnp.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = jnp.where(mask, s, jnp.finfo(s.dtype).min)
    w = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("bhpk,bkhd->bphd", w, v)


def test_masks():
    cm = hnn.causal_mask(P, KP)
    assert cm.axes == (P, KP)
    np.testing.assert_array_equal(cm.array, np.tril(np.ones((5, 5), bool)))
    np.testing.assert_array_equal(hnn.causal_mask(P, KP, q_start=2).array, np.tril(np.ones((5, 5), bool), 2))
    lengths = nx.named(jnp.array([2, 5]), B)
    pm = hnn.padding_mask(KP, lengths)
    assert pm.axes == (B, KP)
    np.testing.assert_array_equal(pm.array, np.arange(5)[None, :] < np.array([2, 5])[:, None])
    both = hnn.combine_masks_and(cm, pm)
    assert set(both.axis_names) == {"batch", "position", "key_position"}
    either = hnn.combine_masks_or(cm, None, pm)
    assert hnn.combine_masks_and(None, None) is None
    ref_and = np.tril(np.ones((5, 5), bool))[None] & np.asarray(pm.array)[:, None, :]
    np.testing.assert_array_equal(raw(both, "batch", "position", "key_position"), ref_and)
    ref_or = np.tril(np.ones((5, 5), bool))[None] | np.asarray(pm.array)[:, None, :]
    np.testing.assert_array_equal(raw(either, "batch", "position", "key_position"), ref_or)


def test_dot_product_attention_matches_jnp_with_masks_and_bias():
    q, k, v = rand((B, P, H, D), 1), rand((B, KP, H, D), 2), rand((B, KP, H, D), 3)
    mask = hnn.combine_masks_and(hnn.causal_mask(P, KP), hnn.padding_mask(KP, nx.named(jnp.array([3, 5]), B)))
    bias = rand((H, P, KP), 4)
    out = hnn.dot_product_attention(P, KP, D, q, k, v, mask=mask, bias=bias)
    assert out.axes == (B, P, H, D)
    m = raw(mask, "batch", "position", "key_position")[:, None]
    b = raw(bias, "head", "position", "key_position")[None]
    close(out.array, ref_attention(q.array, k.array, v.array, m, b), 1e-4)
    # masked keys get no weight: changing them does not change the output
    v2 = nx.named(v.array.at[0, 3:].set(100.0), v.axes)
    close(hnn.dot_product_attention(P, KP, D, q, k, v2, mask=mask).array,
          hnn.dot_product_attention(P, KP, D, q, k, v, mask=mask).array)

    def named_fn(qkv, _):
        a, b_, c = (nx.named(t, ax) for t, ax in zip(qkv, (q.axes, k.axes, v.axes)))
        return hnn.dot_product_attention(P, KP, D, a, b_, c, mask=mask).array

    def ref_fn(qkv, _):
        return ref_attention(*qkv, m)

    grads_match(named_fn, ref_fn, (q.array, k.array, v.array), jnp.zeros(()))


def test_dot_product_attention_errors():
    q, k = rand((P, D)), rand((KP, D))
    with pytest.raises(ValueError, match="key .* lacks the axes \\['key_position'\\]"):
        hnn.dot_product_attention(P, KP, D, q, rand((P, D)), k)
    with pytest.raises(ValueError, match="share a position axis name"):
        hnn.dot_product_attention(P, KP, D, q, rand((KP, P, D)), k)
    with pytest.raises(TypeError, match="mask must be bool"):
        hnn.dot_product_attention(P, KP, D, q, k, k, mask=hnn.causal_mask(P, KP).astype(jnp.float32))
    with pytest.raises(ValueError, match="mask/bias add axes \\['batch'\\]"):
        hnn.dot_product_attention(P, KP, D, q, k, k, mask=hnn.padding_mask(KP, nx.named(jnp.array([1, 2]), B)))


def test_multi_head_attention_matches_jnp():
    mha = perturb(hnn.MultiHeadAttention.init(P, E, H, D, causal=True, key=jax.random.key(0)))
    x = rand((B, P, E), seed=8)

    def proj(lin, a):
        return jnp.einsum("bpe,hde->bphd", a, raw(lin.weight, "head", "head_size", "embed")) + raw(lin.bias, "head", "head_size")

    def ref_fn(m, a):
        mask = jnp.tril(jnp.ones((5, 5), bool))
        o = ref_attention(proj(m.q_proj, a), proj(m.k_proj, a), proj(m.v_proj, a), mask)
        return jnp.einsum("bphd,ehd->bpe", o, raw(m.o_proj.weight, "embed", "head", "head_size")) + m.o_proj.bias.array

    def named_fn(m, a):
        return raw(m(nx.named(a, x.axes)), "batch", "position", "embed")

    close(jax.jit(named_fn)(mha, x.array), jax.jit(ref_fn)(mha, x.array), 1e-4)
    grads_match(named_fn, ref_fn, mha, x.array, 1e-3)
    # cross attention on a context of another length
    ctx = rand((B, P.resize(3), E), seed=9)
    assert hnn.MultiHeadAttention.init(P, E, H, D, key=jax.random.key(1))(x, ctx).axes == (B, P, E)


# --- Conv and pooling ----------------------------------------------------------------------

Hh, Ww, C, F = Axis("height", 6), Axis("width", 5), Axis("channels", 2), Axis("features", 3)


def ref_conv_valid(a, w, stride=(1, 1)):
    """a: [n c h w], w: [o c kh kw]: direct sum over kernel offsets."""
    n, c, h, wd = a.shape
    o, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride[0] + 1, (wd - kw) // stride[1] + 1
    out = jnp.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = a[:, :, i: i + stride[0] * (oh - 1) + 1: stride[0], j: j + stride[1] * (ow - 1) + 1: stride[1]]
            out = out + jnp.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def test_conv_valid_matches_direct_sum():
    conv = perturb(hnn.Conv.init((Hh, Ww), C, F, kernel_size=(3, 2), stride=(2, 1), padding="VALID",
                                 key=jax.random.key(0)))
    assert conv.weight.axis_names == ("features", "channels", "kernel_height", "kernel_width")
    x = rand((Hh, B, C, Ww), seed=10)
    y = conv(x)
    assert y.axes == (B, F, Hh.resize(2), Ww.resize(4))

    def ref_fn(m, a):
        a = jnp.transpose(a, (1, 2, 0, 3))
        return ref_conv_valid(a, m.weight.array, (2, 1)) + m.bias.array[None, :, None, None]

    def named_fn(m, a):
        return m(nx.named(a, x.axes)).array

    close(jax.jit(named_fn)(conv, x.array), jax.jit(ref_fn)(conv, x.array), 1e-4)
    grads_match(named_fn, ref_fn, conv, x.array, 1e-3)


def test_conv_same_padding_keeps_sizes_and_matches_padded_valid():
    conv = hnn.Conv.init((Hh, Ww), C, F, kernel_size=3, key=jax.random.key(1), use_bias=False)
    x = rand((C, Hh, Ww), seed=11)  # no batch axes at all
    y = conv(x)
    assert y.axes == (F, Hh, Ww)
    padded = jnp.pad(x.array, ((0, 0), (1, 1), (1, 1)))[None]
    close(y.array, ref_conv_valid(padded, conv.weight.array)[0], 1e-4)


def test_conv_errors():
    conv = hnn.Conv.init((Hh, Ww), C, F, kernel_size=3, key=jax.random.key(1))
    with pytest.raises(ValueError, match="lacks the axes \\['width'\\]"):
        conv(rand((C, Hh)))
    with pytest.raises(ValueError, match="kernel_size must be a positive int or 2"):
        hnn.Conv.init((Hh, Ww), C, F, kernel_size=(1, 2, 3), key=jax.random.key(1))


def test_pools_match_numpy():
    x = rand((B, Hh, Ww), seed=12)
    a = np.asarray(x.array)[:, :6, :4].reshape(2, 3, 2, 2, 2)
    win = (Hh.resize(2), Ww.resize(2))
    y = hnn.max_pool(win, x)
    assert y.axes == (B, Hh.resize(3), Ww.resize(2))
    close(y.array, a.max(axis=(2, 4)))
    close(hnn.min_pool(win, x).array, a.min(axis=(2, 4)))
    close(hnn.mean_pool(win, x).array, a.mean(axis=(2, 4)))
    # SAME padding with stride 1: the mean counts only real elements at the edges
    m = hnn.mean_pool(Ww.resize(3), x, stride=1, padding="SAME")
    assert m.axes == x.axes
    xa = np.asarray(x.array)
    ref = np.stack([xa[..., max(0, j - 1): j + 2].mean(-1) for j in range(5)], -1)
    close(m.array, ref)
    g = jax.grad(lambda v: jnp.sum(hnn.max_pool(win, nx.named(v, x.axes)).array))(x.array)
    g_ref = jax.grad(lambda v: jnp.sum(v[:, :6, :4].reshape(2, 3, 2, 2, 2).max(axis=(2, 4))))(x.array)
    close(g, g_ref)
    with pytest.raises(ValueError, match="window axis 'embed' is not an axis"):
        hnn.max_pool(E, x)


# --- losses --------------------------------------------------------------------------------


def test_one_hot():
    ids = nx.named(jnp.array([[0, 6, 3], [1, 7, -1]]), (B, P.resize(3)))
    # out-of-range ids (7, -1) are an error by default; mode="zeros" gives jax.nn.one_hot's zero rows
    with pytest.raises(IndexError, match="id 7 is out of range for axis 'vocab' of size 7"):
        hnn.one_hot(ids, V)
    oh = hnn.one_hot(ids, V, mode="zeros")
    assert oh.axes == ids.axes + (V,)
    close(oh.array, jax.nn.one_hot(ids.array, 7))
    in_range = nx.named(jnp.array([[0, 6, 3], [1, 2, 5]]), (B, P.resize(3)))
    close(hnn.one_hot(in_range, V).array, jax.nn.one_hot(in_range.array, 7))
    with pytest.raises(TypeError, match="ids must be integers"):
        hnn.one_hot(rand((B,)), V)


@pytest.mark.parametrize("reduction", ["mean", "sum", None])
def test_cross_entropy_integer_targets(reduction):
    logits = rand((B, P, V), seed=13, scale=2.0)
    targets = nx.named(jnp.array(np.random.default_rng(14).integers(0, 7, (2, 5))), (B, P))
    mask = nx.named(jnp.array(np.random.default_rng(15).random((2, 5)) > 0.3), (B, P))

    def ref(lg, w=None):
        per = -jnp.take_along_axis(jax.nn.log_softmax(lg, -1), targets.array[..., None], -1)[..., 0]
        if w is None:
            return {"mean": per.mean(), "sum": per.sum(), None: per}[reduction]
        return {"mean": (per * w).sum() / w.sum(), "sum": (per * w).sum(), None: per * w}[reduction]

    loss = hnn.cross_entropy_loss(logits, V, targets, reduction=reduction)
    close(loss.array, ref(logits.array), 1e-5)
    masked = hnn.cross_entropy_loss(logits, V, targets, reduction=reduction, where=mask)
    close(masked.array, ref(logits.array, mask.array), 1e-5)
    # soft targets (one-hot) give the same loss
    soft = hnn.cross_entropy_loss(logits, V, hnn.one_hot(targets, V), reduction=reduction)
    close(soft.array, loss.array, 1e-5)
    g = jax.jit(jax.grad(lambda a: jnp.sum(hnn.cross_entropy_loss(nx.named(a, logits.axes), V, targets,
                                                                  reduction=reduction, where=mask).array)))(logits.array)
    close(g, jax.jit(jax.grad(lambda a: jnp.sum(ref(a, mask.array))))(logits.array), 1e-5)


def test_cross_entropy_reduction_axis_and_errors():
    logits = rand((B, P, V), seed=16)
    targets = nx.named(jnp.zeros((2, 5), jnp.int32), (B, P))
    per_batch = hnn.cross_entropy_loss(logits, V, targets, reduction_axis=P)
    assert per_batch.axes == (B,)
    close(per_batch.array, hnn.cross_entropy_loss(logits, V, targets, reduction=None).array.mean(1))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or None"):
        hnn.cross_entropy_loss(logits, V, targets, reduction="max")
    with pytest.raises(TypeError, match="must be integer ids"):
        hnn.cross_entropy_loss(logits, V, targets.astype(jnp.float32))
    with pytest.raises(ValueError, match="'vocab' not found"):
        hnn.cross_entropy_loss(rand((B, P)), V, targets)


def test_binary_cross_entropy():
    logits, t = rand((B, P), seed=17, scale=3.0), nx.named(jnp.array(np.random.default_rng(18).random((2, 5)) > 0.5), (B, P))
    ref = -(t.array * jax.nn.log_sigmoid(logits.array) + (1 - t.array) * jax.nn.log_sigmoid(-logits.array))
    close(hnn.binary_cross_entropy_loss(logits, t).array, ref.mean())
    close(hnn.binary_cross_entropy_loss(logits, t, reduction=None).array, ref)


# --- Stacked -------------------------------------------------------------------------------


class Block(eqx.Module):
    norm: hnn.LayerNorm
    mlp: hnn.MLP
    scale: jax.Array  # a plain (unnamed) parameter, stacked too

    @staticmethod
    def init(Embed, Hidden, *, key):
        return Block(hnn.LayerNorm.init(Embed), hnn.MLP.init(Embed, Embed.alias("embed_out"), Hidden, key=key),
                     jnp.ones(()))

    def __call__(self, x, factor=1.0):
        return x + factor * self.scale * self.mlp(self.norm(x)).rename({"embed_out": "embed"})


def unrolled(stack, x, factor=1.0):
    for block in stack.unstacked():
        x = block(x, factor)
    return x


def test_stacked_init_adds_the_layers_axis_to_every_parameter():
    stack = hnn.Stacked.init(Layers, Block)(E, M, key=jax.random.key(0))
    named = [leaf for leaf in jax.tree_util.tree_leaves(stack, is_leaf=lambda v: isinstance(v, nx.NamedArray))
             if isinstance(leaf, nx.NamedArray)]
    assert len(named) == 6  # norm weight/bias, two linears' weights/biases
    for leaf in named:
        assert leaf.axes[0] == Layers and leaf.array.shape[0] == 3
    assert stack.stacked.mlp.layers[0].weight.axis_names == ("layers", "mlp", "embed")
    assert stack.stacked.scale.shape == (3,)
    # each layer got its own key: the layers' weights differ
    w = stack.stacked.mlp.layers[0].weight.array
    assert not np.allclose(w[0], w[1])
    # and equal what Block.init gives for the split keys
    keys = jax.random.split(jax.random.key(0), 3)
    close(w[2], Block.init(E, M, key=keys[2]).mlp.layers[0].weight.array)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_stacked_matches_unrolled_loop(checkpointing):
    stack = hnn.Stacked.init(Layers, Block, gradient_checkpointing=checkpointing)(E, M, key=jax.random.key(0))
    stack = perturb(stack, seed=3)
    x = rand((B, E), seed=19)
    y = stack(x, 0.5)
    assert y.axes == x.axes
    close(y.array, unrolled(stack, x, 0.5).array, 1e-4)

    def named_fn(s, a):
        return s(nx.named(a, x.axes), 0.5).array

    def ref_fn(s, a):
        return unrolled(s, nx.named(a, x.axes), 0.5).array

    grads_match(named_fn, ref_fn, stack, x.array, 1e-3)
    jaxpr = jax.make_jaxpr(named_fn)(stack, x.array)
    prims = {e.primitive.name for e in jaxpr.jaxpr.eqns}
    assert "scan" in prims
    scan_eqn = next(e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan")
    inner = {e.primitive.name for e in scan_eqn.params["jaxpr"].jaxpr.eqns}
    assert ("checkpoint" in inner or "remat2" in inner) == checkpointing


def test_stacked_vmap_init_tags_the_layers_axis():
    jaxpr = jax.make_jaxpr(lambda k: hnn.Stacked.init(Layers, Block)(E, M, key=k))(jax.random.key(0))
    text = str(jaxpr)
    assert "'layers'" in text


def test_stacked_scan_outputs_and_per_layer_keys():
    class Noisy(eqx.Module):
        lin: hnn.Linear

        @staticmethod
        def init(*, key):
            return Noisy(hnn.Linear.init(E, E.alias("e2"), key=key))

        def __call__(self, x, *, key):
            y = hnn.Dropout(0.5)(self.lin(x).rename({"e2": "embed"}), key=key)
            return y, nx.sum(y, "embed")

    stack = hnn.Stacked.init(Layers, Noisy)(key=jax.random.key(1))
    x = rand((B, E), seed=20)
    carry, outs = stack.scan(x, key=jax.random.key(5))
    assert outs.axes == (Layers, B)
    keys = jax.random.split(jax.random.key(5), 3)
    ref = x
    for i, block in enumerate(stack.unstacked()):
        ref, out = block(ref, key=keys[i])
        close(outs.array[i], out.array, 1e-5)
    close(carry.array, ref.array, 1e-5)


def test_stacked_errors():
    with pytest.raises(TypeError, match="Layers must be an Axis"):
        hnn.Stacked.init("layers", Block)
    stack = hnn.Stacked.init(Layers, Block)(E, M, key=jax.random.key(0))
    broken = eqx.tree_at(lambda s: s.stacked.norm.weight, stack, nx.ones(E))
    with pytest.raises(ValueError, match="lacks the Layers axis 'layers'"):
        broken(rand((B, E)))


def test_attention_never_transposes_the_scores():
    """q·k comes out of dot_general in its natural order: only the small q and output move."""
    import re

    from namax.nn import attention

    Bt, Pq, Hd, Kd = nx.make_axes(batch=3, position=8, heads=2, key=5)
    Pk = Pq.alias("key_position")
    q = nx.random.normal(jax.random.key(0), (Bt, Pq, Hd, Kd))
    k = nx.random.normal(jax.random.key(1), (Bt, Pk, Hd, Kd))
    v = nx.random.normal(jax.random.key(2), (Bt, Pk, Hd, Kd))
    mask = attention.causal_mask(Pq, Pk)

    def loss(q, k, v):
        out = attention.dot_product_attention(Pq, Pk, Kd, q, k, v, mask=mask)
        assert out.axis_names == ("batch", "position", "heads", "key")
        return nx.sum(out * out).array

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile().as_text()
    score_dims = sorted([3, 2, 8, 8])
    moved = [m.group(1) for m in re.finditer(r"= f32\[([\d,]+)\]\{[^}]*\} (?:transpose|copy)\(", hlo)]
    assert moved, "expected some transposes of q/k/v-sized values"
    assert all(sorted(int(d) for d in dims.split(",")) != score_dims for dims in moved), moved
