"""The later namax.nn names (issue 13, item 4) against plain-jnp references written here:
ConvTranspose, ragged_dot / MoELinear (and the MoE MLP example), the attention helpers,
relu_squared, the loss helpers and the muP parameterisations."""

import importlib.util
import math
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
import namax.nn as hnn
from namax import Axis
from namax.nn import mup
from named_cases import rand, close, raw

B, C, D = Axis("batch", 2), Axis("channels", 4), Axis("features", 6)
Hs, Ws = Axis("height", 5), Axis("width", 4)


# --- ConvTranspose ------------------------------------------------------------------------------
def _conv_t_ref(x, w, b, stride, padding, output_padding, dilation, groups=1):
    """jax.lax.conv_transpose on raw NCH.../OIH... arrays with the transposed-conv padding, per group."""
    n = len(stride)
    spec = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW")}[n]
    ks = w.shape[2:]
    pad = [(d * (k - 1) - lo, d * (k - 1) - hi + o) for k, (lo, hi), o, d in zip(ks, padding, output_padding, dilation)]
    xs, ws = jnp.split(x, groups, axis=1), jnp.split(w, groups, axis=0)
    outs = [jax.lax.conv_transpose(xg, wg, stride, pad, rhs_dilation=dilation, dimension_numbers=spec)
            for xg, wg in zip(xs, ws)]
    y = jnp.concatenate(outs, axis=1)
    return y if b is None else y + b.reshape((1, -1) + (1,) * n)


@pytest.mark.parametrize("stride, padding, output_padding, dilation, groups", [
    (1, 0, 0, 1, 1),
    (2, 1, 1, 1, 1),
    ((2, 3), ((1, 0), (2, 1)), (1, 0), (1, 2), 2),
])
def test_conv_transpose_matches_lax_values_and_grads(stride, padding, output_padding, dilation, groups):
    layer = hnn.ConvTranspose.init((Hs, Ws), C, D, kernel_size=(3, 2), stride=stride, padding=padding,
                                   output_padding=output_padding, dilation=dilation, groups=groups,
                                   key=jax.random.key(0))
    x = rand((Ws, B, C, Hs), seed=1)  # axes in any order: matched by name
    n2 = lambda v: (v,) * 2 if isinstance(v, int) else tuple(v)
    pads = ((padding, padding),) * 2 if isinstance(padding, int) else tuple(tuple(p) for p in padding)
    args = (n2(stride), pads, n2(output_padding), n2(dilation), groups)

    def named_loss(layer, x):
        y = layer(x)
        return (raw(y, "batch", "features", "height", "width") ** 2).sum(), y

    def ref_loss(w, b, xr):
        y = _conv_t_ref(xr, w, b, *args)
        return (y ** 2).sum(), y

    w = raw(layer.weight, "features", "channels", "kernel_height", "kernel_width")
    xr = raw(x, "batch", "channels", "height", "width")
    (_, y), (g_layer, g_x) = jax.value_and_grad(named_loss, argnums=(0, 1), has_aux=True)(layer, x)
    (_, y_ref), (g_w, g_b, g_xr) = jax.value_and_grad(ref_loss, argnums=(0, 1, 2), has_aux=True)(
        w, layer.bias.array, xr)
    assert y.axes[:2] == (B, D) and y.axis_names[2:] == ("height", "width")
    for s, m, st, (lo, hi), k, o, d in zip(("height", "width"), (5, 4), *args[:1], pads, (3, 2), *args[2:4]):
        assert y.axis_size(s) == (m - 1) * st - (lo + hi) + d * (k - 1) + o + 1
    close(raw(y, "batch", "features", "height", "width"), y_ref, 1e-4)
    close(raw(g_layer.weight, "features", "channels", "kernel_height", "kernel_width"), g_w, 1e-3)
    close(g_layer.bias.array, g_b, 1e-3)
    close(raw(g_x, "batch", "channels", "height", "width"), g_xr, 1e-3)


def test_conv_transpose_1d_matches_a_scatter_loop():
    """out[o, x*s + j*d - lo] += in[i, x] * w[o, i, k-1-j]: the transposed-conv definition, by hand."""
    L, s, d, (lo, hi), o = 4, 2, 2, (1, 2), 1
    layer = hnn.ConvTranspose.init(Hs.resize(L), C, D, kernel_size=3, stride=s, padding=[(lo, hi)],
                                   output_padding=o, dilation=d, use_bias=False, key=jax.random.key(2))
    x = rand((C, Hs.resize(L)), seed=3)
    w = np.asarray(raw(layer.weight, "features", "channels", "kernel_height"))
    xr = np.asarray(raw(x, "channels", "height"))
    k = w.shape[-1]
    size = (L - 1) * s - (lo + hi) + d * (k - 1) + o + 1
    ref = np.zeros((D.size, size), np.float32)
    for i in range(C.size):
        for p in range(L):
            for j in range(k):
                y = p * s + j * d - lo
                if 0 <= y < size:
                    ref[:, y] += xr[i, p] * w[:, i, k - 1 - j]
    close(raw(layer(x), "features", "height"), ref, 1e-5)


def test_conv_transpose_init_and_errors():
    layer = hnn.ConvTranspose.init(Hs, C, D, kernel_size=3, groups=2, key=jax.random.key(0))
    lim = 1 / math.sqrt(C.size // 2 * 3)
    assert layer.weight.axes == (D, C.resize(2), Axis("kernel_height", 3)) and layer.bias.axes == (D,)
    assert float(jnp.abs(layer.weight.array).max()) <= lim and float(jnp.abs(layer.bias.array).max()) <= lim
    with pytest.raises(ValueError, match="Out 'features' of size 6 is not divisible by groups=4"):
        hnn.ConvTranspose.init(Hs, C, D, kernel_size=3, groups=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="output_padding 2 for spatial axis 'height' must be smaller"):
        hnn.ConvTranspose.init(Hs, C, D, kernel_size=3, stride=2, output_padding=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="lacks the axes \\['height'\\]"):
        layer(rand((B, C)))
    with pytest.raises(ValueError, match="'channels' axis has size 3, the layer's In has 4"):
        layer(rand((B, C.resize(3), Hs)))
    big_pad = hnn.ConvTranspose.init(Hs, C, D, kernel_size=1, padding=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="spatial axis 'height' of size 5 would give an output of size -1"):
        big_pad(rand((C, Hs)))


# --- ragged_dot / MoELinear ---------------------------------------------------------------------
Tok, Ex, Em, Mlp = Axis("token", 7), Axis("experts", 3), Axis("embed", 4), Axis("mlp", 5)


def _ragged_ref(x, w, sizes):
    """Each group of consecutive rows times its expert's matrix, by a Python loop."""
    out, start = jnp.zeros((x.shape[0], w.shape[-1]), x.dtype), 0
    for e, n in enumerate(sizes):
        out = out.at[start:start + n].set(x[start:start + n] @ w[e])
        start += n
    return out


@pytest.mark.parametrize("sizes", [(2, 0, 5), (1, 2, 2)])  # the second leaves 2 rows past the groups
def test_ragged_dot_matches_a_per_expert_loop(sizes):
    x, w = rand((Tok, Em), seed=1), rand((Mlp, Ex, Em), seed=2)  # rhs axes in any order
    gs = nx.named(jnp.array(sizes, jnp.int32), Ex)
    wr = raw(w, "experts", "embed", "mlp")

    y, vjp = jax.vjp(lambda x, w: hnn.ragged_dot(x, w, gs, "embed"), x, w)
    y_ref, vjp_ref = jax.vjp(lambda x, w: _ragged_ref(x, w, sizes), x.array, wr)
    assert y.axes == (Tok, Mlp)
    close(y.array, y_ref)
    ct = rand((Tok, Mlp), seed=3)
    gx, gw = vjp(ct)
    gx_ref, gw_ref = vjp_ref(ct.array)
    close(raw(gx, "token", "embed"), gx_ref)
    close(raw(gw, "experts", "embed", "mlp"), gw_ref)


def test_ragged_dot_several_output_axes_and_errors():
    Head, Hd = Axis("head", 2), Axis("head_dim", 3)
    x, w = rand((Tok, Em), seed=1), rand((Ex, Em, Head, Hd), seed=2)
    gs = nx.named(jnp.array([3, 3, 1]), Ex)
    y = hnn.ragged_dot(x, w, gs, Em)
    ref = _ragged_ref(x.array, w.array.reshape(3, 4, 6), (3, 3, 1)).reshape(7, 2, 3)
    assert y.axes == (Tok, Head, Hd)
    close(y.array, ref)
    with pytest.raises(ValueError, match="group_sizes over 'experts' sum to 9, more than the 7 tokens of axis 'token'"):
        hnn.ragged_dot(x, w, nx.named(jnp.array([3, 3, 3]), Ex), Em)
    with pytest.raises(ValueError, match="group_sizes\\['experts'=1\\] is -1"):
        hnn.ragged_dot(x, w, nx.named(jnp.array([3, -1, 1]), Ex), Em)
    with pytest.raises(ValueError, match="'experts' has size 2 in group_sizes but 3 in rhs"):
        hnn.ragged_dot(x, w, nx.named(jnp.array([3, 3]), Ex.resize(2)), Em)
    with pytest.raises(ValueError, match="must have exactly one axis besides 'embed'"):
        hnn.ragged_dot(rand((B, Tok, Em)), w, gs, Em)
    with pytest.raises(ValueError, match="'embed' has size 3 in lhs"):
        hnn.ragged_dot(rand((Tok, Em.resize(3))), w, gs, Em)
    with pytest.raises(TypeError, match="group_sizes must be integers, got dtype float32"):
        hnn.ragged_dot(x, w, nx.named(jnp.array([3.0, 3.0, 1.0]), Ex), Em)


@pytest.mark.parametrize("out_first", [False, True])
def test_moe_linear_matches_dense_loop(out_first):
    layer = hnn.MoELinear.init(Ex, Em, Mlp, key=jax.random.key(0), out_first=out_first)
    layer = eqx.tree_at(lambda m: m.bias, layer, rand((Mlp,), seed=5))
    assert layer.out_first == out_first
    assert layer.weight.axes == ((Ex, Mlp, Em) if out_first else (Ex, Em, Mlp))
    sizes = (3, 1, 3)
    gs = nx.named(jnp.array(sizes), Ex)
    x = rand((Tok, Em), seed=1)

    def loss(layer, x):
        return (hnn.tanh(layer(x, gs)).array ** 2).sum()

    def ref(w, b, x):
        return (jnp.tanh(_ragged_ref(x, w, sizes) + b) ** 2).sum()

    w = raw(layer.weight, "experts", "embed", "mlp")
    (v, (g_layer, g_x)) = jax.value_and_grad(loss, argnums=(0, 1))(layer, x)
    (v_ref, (g_w, g_b, g_xr)) = jax.value_and_grad(ref, argnums=(0, 1, 2))(w, layer.bias.array, x.array)
    close(v, v_ref, 1e-4)
    close(raw(g_layer.weight, "experts", "embed", "mlp"), g_w, 1e-4)
    close(g_layer.bias.array, g_b, 1e-4)
    close(g_x.array, g_xr, 1e-4)


def test_moe_linear_init_scale_and_errors():
    Big = Axis("embed", 256)
    layer = hnn.MoELinear.init(Ex, Big, Axis("mlp", 64), key=jax.random.key(0), use_bias=False)
    assert layer.bias is None
    close(float(jnp.std(layer.weight.array)) * math.sqrt(Big.size), _TRUNC_STD, 0.03)
    with pytest.raises(ValueError, match="use_gmm=True"):
        hnn.MoELinear.init(Ex, Em, Mlp, key=jax.random.key(0), use_gmm=True)
    layer = hnn.MoELinear.init(Ex, Em, Mlp, key=jax.random.key(0))
    with pytest.raises(ValueError, match="lacks the In axis 'embed'"):
        layer(rand((Tok, Mlp)), nx.named(jnp.array([1, 1, 1]), Ex))
    with pytest.raises(ValueError, match="group_sizes \\(batch:2\\) must have exactly the Experts axis 'experts'"):
        layer(rand((Tok, Em)), nx.named(jnp.array([1, 1]), B))


def _load_example():
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "moe.py"
    spec = importlib.util.spec_from_file_location("moe_example_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_moe_mlp_example_matches_dense_per_expert_loop_values_and_grads():
    ex = _load_example()
    Token, Experts, Embed, Hidden, k = Axis("token", 6), Axis("experts", 4), Axis("embed", 5), Axis("mlp", 7), 2
    moe = ex.MoEMLP.init(Experts, Embed, Hidden, k, key=jax.random.key(0))
    moe = eqx.tree_at(lambda m: (m.up.bias, m.down.bias), moe, (rand((Hidden,), 7), rand((Embed,), 8)))
    x = rand((Token, Embed), seed=1)

    def ref(wr, wu, bu, wd, bd, x):
        probs = jax.nn.softmax(x @ wr, axis=-1)  # (token, experts)
        top_p, top_e = jax.lax.top_k(probs, k)
        top_p = top_p / top_p.sum(-1, keepdims=True)
        out = jnp.zeros_like(x)
        for e in range(Experts.size):  # every expert densely, on the tokens that picked it
            y_e = jnp.square(jax.nn.relu(x @ wu[e] + bu)) @ wd[e] + bd
            weight_e = (top_p * (top_e == e)).sum(-1)
            out = out + weight_e[:, None] * y_e
        return (out ** 2).sum(), out

    def named(moe, x):
        y = moe(x)
        return (raw(y, "token", "embed") ** 2).sum(), y

    (_, y), (g_moe, g_x) = jax.jit(jax.value_and_grad(named, argnums=(0, 1), has_aux=True))(moe, x)
    params = (raw(moe.router.weight, "embed", "experts"), raw(moe.up.weight, "experts", "embed", "mlp"),
              moe.up.bias.array, raw(moe.down.weight, "experts", "mlp", "embed"), moe.down.bias.array, x.array)
    (_, y_ref), g_ref = jax.jit(jax.value_and_grad(ref, argnums=tuple(range(6)), has_aux=True))(*params)
    close(raw(y, "token", "embed"), y_ref, 1e-4)
    got = (raw(g_moe.router.weight, "embed", "experts"), raw(g_moe.up.weight, "experts", "embed", "mlp"),
           g_moe.up.bias.array, raw(g_moe.down.weight, "experts", "mlp", "embed"), g_moe.down.bias.array,
           raw(g_x, "token", "embed"))
    for a, b in zip(got, g_ref):
        close(a, b, 1e-4)


# --- attention helpers --------------------------------------------------------------------------
Q, K, Hd, Kd = Axis("position", 5), Axis("key_position", 6), Axis("heads", 3), Axis("key", 4)


@pytest.mark.parametrize("prefix_len, q_start, k_start", [(2, 0, 0), (0, 1, 0), (3, 2, 1)])
def test_prefix_lm_mask(prefix_len, q_start, k_start):
    m = hnn.attention.prefix_lm_mask(Q, K, prefix_len, q_start, k_start)
    i, j = jnp.arange(Q.size)[:, None], jnp.arange(K.size)[None, :]
    ref = (i + q_start >= j + k_start) | (j < prefix_len)
    assert m.axes == (Q, K)
    np.testing.assert_array_equal(m.array, ref)
    with pytest.raises(ValueError, match="prefix_len must be >= 0, got -1"):
        hnn.attention.prefix_lm_mask(Q, K, -1)


def test_forgetful_causal_mask():
    L = Axis("key_position", 64)
    key = jax.random.key(3)
    assert hnn.attention.forgetful_causal_mask(L, 0.0, key=key).array.all()
    np.testing.assert_array_equal(hnn.attention.forgetful_causal_mask(L, 1.0, key=key).array, jnp.arange(64) == 0)
    m = hnn.attention.forgetful_causal_mask(L, 0.4, sample_prob=False, key=key)
    np.testing.assert_array_equal(m.array, jax.random.bernoulli(key, 0.6, (64,)) | (jnp.arange(64) == 0))
    k1, k2 = jax.random.split(key)
    p = jax.random.uniform(k2, (), minval=0.0, maxval=0.4)
    m = hnn.attention.forgetful_causal_mask(L, 0.4, key=key)
    np.testing.assert_array_equal(m.array, jax.random.bernoulli(k1, 1 - p, (64,)) | (jnp.arange(64) == 0))
    with pytest.raises(ValueError, match="mask_prob must lie in \\[0, 1\\], got 1.5"):
        hnn.attention.forgetful_causal_mask(L, 1.5, key=key)


@pytest.mark.parametrize("heads", [4, 6])
def test_alibi_attention_bias_matches_the_paper(heads):
    def slopes(n):  # Press et al.: geometric from 2^(-8/n); non powers of two interleave the next power
        def pow2(m):
            return [2 ** (-8 * (i + 1) / m) for i in range(m)]
        low = 2 ** math.floor(math.log2(n))
        return pow2(n) if low == n else pow2(low) + pow2(2 * low)[0::2][: n - low]

    H = Axis("heads", heads)
    bias = hnn.attention.alibi_attention_bias(H, K)
    assert bias.axes == (H, K)
    close(bias.array, np.array(slopes(heads))[:, None] * np.arange(K.size)[None, :], 1e-7)
    # as a bias on the scores, it equals -slope * (i - j) up to a per-query constant
    rel = -np.array(slopes(heads))[:, None, None] * (np.arange(Q.size)[:, None] - np.arange(K.size)[None, :])
    shifted = np.asarray(bias.array)[:, None, :] - rel
    close(shifted - shifted[..., :1], np.zeros_like(shifted), 1e-5)


def test_mask_to_bias_and_combine_masks():
    m1 = nx.named(jnp.array([[True, False, True]] * 2), (Axis("position", 2), Axis("key_position", 3)))
    m2 = nx.named(jnp.array([True, True, False]), "key_position")
    close(hnn.attention.mask_to_bias(m1).array, jnp.where(m1.array, 0.0, -1e9))
    close(hnn.attention.mask_to_bias(m2, -5.0).array, jnp.where(m2.array, 0.0, -5.0))
    np.testing.assert_array_equal(raw(hnn.attention.combine_masks_and(m1, m2), "position", "key_position"),
                                  m1.array & m2.array[None])
    np.testing.assert_array_equal(raw(hnn.attention.combine_masks_or(m1, m2), "position", "key_position"),
                                  m1.array | m2.array[None])
    assert hnn.attention.combine_masks_and(None, m2) is m2 and hnn.attention.combine_masks_or(m1, None) is m1
    with pytest.raises(TypeError, match="must be bool \\(True = attend\\), got dtype float32"):
        hnn.attention.mask_to_bias(m2.astype(jnp.float32))


@pytest.mark.parametrize("scaling_factor", [None, 0.3])
def test_dot_product_attention_weights(scaling_factor):
    q, k, v = rand((B, Hd, Q, Kd), seed=1), rand((B, K, Hd, Kd), seed=2), rand((B, Hd, K, Kd), seed=4)
    mask = hnn.causal_mask(Q, K)
    bias = rand((Hd, K), seed=3)
    scale = 1 / math.sqrt(Kd.size) if scaling_factor is None else scaling_factor

    def named(q, k):
        return hnn.attention.dot_product_attention_weights(Kd, K, q, k, mask=mask, bias=bias,
                                                           scaling_factor=scaling_factor)

    def ref(qr, kr):
        s = jnp.einsum("bhqd,bkhd->bhqk", qr * scale, kr) + bias.array[None, :, None, :]
        s = jnp.where(mask.array, s, jnp.finfo(s.dtype).min)
        return jax.nn.softmax(s, axis=-1)

    w, vjp = jax.vjp(named, q, k)
    w_ref, vjp_ref = jax.vjp(ref, q.array, k.array)
    assert w.axes == (B, Hd, Q, K)
    close(w.array, w_ref)
    ct = rand((B, Hd, Q, K), seed=5)
    for g, g_ref in zip(vjp(ct), vjp_ref(ct.array)):
        close(g.array, g_ref, 1e-4)
    if scaling_factor is None:  # weights . value is dot_product_attention
        out = hnn.dot_product_attention(Q, K, Kd, q, k, v, mask=mask, bias=bias)
        close(raw(nx.dot(w, v, axis=K), "batch", "heads", "position", "key"), raw(out, "batch", "heads", "position", "key"))


def test_dot_product_attention_weights_errors():
    q, k = rand((Q, Kd)), rand((K, Kd))
    with pytest.raises(ValueError, match="key \\(key_position:6\\) lacks the axes \\['key'\\]"):
        hnn.attention.dot_product_attention_weights(Kd, K, q, rand((K,)))
    with pytest.raises(ValueError, match="the 'key' axis has size 4 in the query .* but 3 in the key"):
        hnn.attention.dot_product_attention_weights(Kd, K, q, rand((K, Kd.resize(3))))
    with pytest.raises(ValueError, match="the query .* has the key position axes \\['key_position'\\]"):
        hnn.attention.dot_product_attention_weights(Kd, K, rand((K, Kd)), k)
    with pytest.raises(TypeError, match="mask must be a bool NamedArray"):
        hnn.attention.dot_product_attention_weights(Kd, K, q, k, mask=hnn.causal_mask(Q, K).astype(jnp.float32))
    with pytest.raises(ValueError, match="mask/bias add axes \\['batch'\\]"):
        hnn.attention.dot_product_attention_weights(Kd, K, q, k, bias=rand((B, K)))


# --- activations and losses ---------------------------------------------------------------------
def test_relu_squared_values_and_grad():
    x = rand((B, Em), seed=1)
    y, vjp = jax.vjp(hnn.relu_squared, x)
    y_ref, vjp_ref = jax.vjp(lambda a: jnp.maximum(a, 0) ** 2, x.array)
    assert y.axes == x.axes
    close(y.array, y_ref)
    close(vjp(x)[0].array, vjp_ref(x.array)[0])
    close(hnn.activations.relu_squared(jnp.array([-1.0, 3.0])), jnp.array([0.0, 9.0]))


def test_haliax_activations_all_exist():
    # Haliax's haliax.nn.activations functions (listed by hand from its module)
    for name in ("celu", "elu", "gelu", "glu", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "leaky_relu",
                 "log_sigmoid", "quick_gelu", "relu", "relu6", "relu_squared", "selu", "sigmoid", "silu",
                 "soft_sign", "softplus", "swish"):
        assert callable(getattr(hnn.activations, name)) and getattr(hnn, name) is getattr(hnn.activations, name)


Lab = Axis("label", 5)


def test_cross_entropy_loss_and_log_normalizers():
    logits = rand((B, Tok, Lab), seed=1)
    ids = nx.named(jnp.array(np.random.default_rng(2).integers(0, 5, size=(2, 7))), (B, Tok))
    lse_ref = jax.scipy.special.logsumexp(logits.array, axis=-1)
    loss_ref = lse_ref - jnp.take_along_axis(logits.array, ids.array[..., None], -1)[..., 0]
    loss, lse = hnn.cross_entropy_loss_and_log_normalizers(logits, Lab, ids)
    assert loss.axes == lse.axes == (B, Tok)
    close(loss.array, loss_ref)
    close(lse.array, lse_ref)
    # distribution targets: Haliax's dot(target, lse - logits), gradients included
    t = nx.nn.softmax(rand((B, Tok, Lab), seed=3), Lab)
    (loss_d, _), vjp = jax.vjp(lambda lg: hnn.cross_entropy_loss_and_log_normalizers(lg, Lab, t), logits)
    ref_fn = lambda lg: ((jax.scipy.special.logsumexp(lg, -1)[..., None] - lg) * t.array).sum(-1)
    d_ref, vjp_ref = jax.vjp(ref_fn, logits.array)
    close(loss_d.array, d_ref)
    ct = rand((B, Tok), seed=4)
    close(vjp((ct, nx.zeros((B, Tok))))[0].array, vjp_ref(ct.array)[0])
    # out-of-range ids: an IndexError when concrete, NaN (never another class's loss) under jit
    bad = nx.named(jnp.array([0, 5]), B)
    with pytest.raises(IndexError, match="cross_entropy_loss_and_log_normalizers: id 5 is out of range for axis "
                                         "'label' of size 5"):
        hnn.cross_entropy_loss_and_log_normalizers(rand((B, Lab)), Lab, bad)
    loss_j, _ = jax.jit(lambda lg, i: hnn.cross_entropy_loss_and_log_normalizers(lg, Lab, i))(rand((B, Lab)), bad)
    assert not np.isnan(loss_j.array[0]) and np.isnan(loss_j.array[1])


def test_reduce_loss():
    loss = rand((B, Tok), seed=1)
    a = np.asarray(loss.array)
    where = nx.named(jnp.array([True, False, True, True, False, True, True]), Tok)
    weight = nx.named(jnp.abs(jnp.asarray(np.random.default_rng(2).normal(size=(2, 7)), jnp.float32)), (B, Tok))
    w = np.asarray(weight.array)
    wh = np.broadcast_to(np.asarray(where.array)[None, :].astype(np.float32), a.shape)
    close(hnn.reduce_loss(loss).array, a.mean())
    close(hnn.reduce_loss(loss, "sum", Tok).array, a.sum(1))
    close(hnn.reduce_loss(loss, nx.max, "batch").array, a.max(0))
    assert hnn.reduce_loss(loss, None) is loss and hnn.reduce_loss(loss, "mean", ()) is loss
    close(hnn.reduce_loss(loss, where=where).array, (a * wh).sum() / wh.sum())
    close(hnn.reduce_loss(loss, weight=weight).array, (a * w).sum() / w.sum())
    close(hnn.reduce_loss(loss, "mean", Tok, where=where, weight=weight).array, (a * w * wh).sum(1) / (w * wh).sum(1))
    close(hnn.reduce_loss(loss, "sum", where=where, weight=weight).array, (a * w * wh).sum())
    close(raw(hnn.reduce_loss(loss, None, where=where, weight=weight), "batch", "token"), a * w * wh)
    close(hnn.loss.maybe_reduce_loss(loss, "sum", None, where, None).array, (a * wh).sum())
    # a zero total weight gives 0 (Haliax's rule); NaN at masked-out entries does not leak
    nothing = nx.named(jnp.zeros(7, bool), Tok)
    assert float(hnn.reduce_loss(loss, where=nothing).array) == 0.0
    nan_loss = nx.named(jnp.where(jnp.asarray(wh[0], bool), loss.array, jnp.nan), (B, Tok))
    close(hnn.reduce_loss(nan_loss, where=where).array, (a * wh).sum() / wh.sum())
    g = jax.grad(lambda l: hnn.reduce_loss(l, where=where, weight=weight).array)(loss)
    close(g.array, w * wh / (w * wh).sum())
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum', None or a reduction function, got 'max'"):
        hnn.reduce_loss(loss, "max")
    with pytest.raises(ValueError, match="where= has axes \\['label'\\] that the loss \\(batch:2, token:7\\) lacks"):
        hnn.reduce_loss(loss, where=nx.named(jnp.ones(5, bool), Lab))
    with pytest.raises(TypeError, match="where= must be a bool mask, got dtype float32"):
        hnn.reduce_loss(loss, where=where.astype(jnp.float32))
    with pytest.raises(ValueError, match="weight= has axis 'token' of size 3 but the loss"):
        hnn.reduce_loss(loss, weight=nx.ones(Tok.resize(3)))
    with pytest.raises(ValueError, match="reduction_axis 'label' is not an axis of the loss"):
        hnn.reduce_loss(loss, "sum", "label")


# --- muP ----------------------------------------------------------------------------------------
def _truncated_normal_std(a=3.0):
    """The standard deviation of a unit normal truncated to [-a, a]."""
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return math.sqrt(1 - 2 * a * pdf / mass)


_TRUNC_STD = _truncated_normal_std()


@pytest.mark.parametrize("cls, init_of_n, active_of_n, lr_of_n", [
    (mup.LinearStandardParam, lambda n: n ** -0.5, lambda n: 1, lambda n: 1),
    (mup.InputLinearMup, lambda n: 1, lambda n: 1, lambda n: 1),
    (mup.HiddenLinearMup, lambda n: n ** -0.5, lambda n: 1, lambda n: 1 / n),
    (mup.OutputLinearMup, lambda n: 1, lambda n: 1 / n, lambda n: 1),
])
def test_linear_reparam_init_std_and_output_multiplier(cls, init_of_n, active_of_n, lr_of_n):
    Out = Axis("out", 128)
    for n in (64, 256):
        In = Axis("embed", n)
        layer = hnn.Linear.init(In, Out, key=jax.random.key(n), reparam_cls=cls, init_scale=2.0)
        assert isinstance(layer.reparam, cls) and isinstance(layer, mup.ReparamEnabled)
        assert layer.reparam.active_scale == active_of_n(n) and layer.reparam.lr_scale == lr_of_n(n)
        std = float(jnp.std(layer.weight.array))
        close(std / (2.0 * init_of_n(n) * _TRUNC_STD), 1.0, 0.03)
        layer = eqx.tree_at(lambda m: m.bias, layer, rand((Out,), seed=1))
        x = rand((B, In), seed=2)
        y, vjp = jax.vjp(lambda lay, x: lay(x), layer, x)
        wr = raw(layer.weight, "embed", "out")
        ref, vjp_ref = jax.vjp(lambda w, b, x: x @ w * active_of_n(n) + b, wr, layer.bias.array, x.array)
        close(raw(y, "batch", "out"), ref, 1e-4)
        ct = rand((B, Out), seed=3)
        g_layer, g_x = vjp(ct)
        gw, gb, gx = vjp_ref(ct.array)
        close(raw(g_layer.weight, "embed", "out"), gw, 1e-4)
        close(g_x.array, gx, 1e-4)


def test_linear_default_is_unchanged_and_reparam_helpers():
    In, Out = (Axis("head", 2), Axis("key", 8)), Axis("out", 4)
    key = jax.random.key(7)
    layer = hnn.Linear.init(In, Out, key=key, init_scale=0.5)
    expected = nx.random.truncated_normal(key, layer.weight.axes, -3.0, 3.0) * (0.5 / math.sqrt(16))
    np.testing.assert_array_equal(layer.weight.array, expected.array)
    assert type(layer.reparam) is mup.LinearStandardParam and layer.reparam.In == In
    x = rand((B, *In), seed=1)
    close(raw(layer(x), "batch", "out"), jnp.einsum("bhk,ohk->bo", x.array, raw(layer.weight, "out", "head", "key")))
    assert (hnn.Linear.input_reparam(), hnn.Linear.hidden_reparam(), hnn.Linear.output_reparam()) == \
        (mup.InputLinearMup, mup.HiddenLinearMup, mup.OutputLinearMup)
    assert hnn.Linear.hidden_reparam(use_mup=False) is mup.LinearStandardParam
    with pytest.raises(TypeError, match="reparam_cls must be an AbstractLinearReparam subclass"):
        hnn.Linear.init(Em, Out, key=key, reparam_cls=mup.EmbeddingMup)


@pytest.mark.parametrize("cls, init_of_n, unembed_of_n", [
    (None, lambda n: 1, lambda n: 1),  # namax's default: unit normal, no scaling
    (mup.EmbeddingStandardParam, lambda n: 1 / n, lambda n: 1),
    (mup.EmbeddingMup, lambda n: 1, lambda n: 1 / n),
])
def test_embedding_reparam(cls, init_of_n, unembed_of_n):
    Vocab = Axis("vocab", 512)
    for n in (16, 64):
        Embed = Axis("embed", n)
        key = jax.random.key(n)
        emb = hnn.Embedding.init(Vocab, Embed, key=key, reparam_cls=cls)
        expected = nx.random.normal(key, emb.weight.axes) * init_of_n(n)
        close(emb.weight.array, expected.array, 1e-6)
        close(float(jnp.std(emb.weight.array)) / init_of_n(n), 1.0, 0.03)
        assert emb.reparam.active_scale == 1 and emb.reparam.unembed_active_scale == unembed_of_n(n)
        ids = nx.named(jnp.array([3, 7]), "position")
        table = raw(emb.weight, "vocab", "embed")
        close(raw(emb(ids), "position", "embed"), table[ids.array])
        x = rand((B, Embed), seed=1)
        logits, vjp = jax.vjp(lambda e: e.unembed(x), emb)
        ref, vjp_ref = jax.vjp(lambda t: x.array @ t.T * unembed_of_n(n), table)
        close(raw(logits, "batch", "vocab"), ref, 1e-4)
        ct = rand((B, Vocab), seed=2)
        close(raw(vjp(ct)[0].weight, "vocab", "embed"), vjp_ref(ct.array)[0], 1e-4)
    with pytest.raises(TypeError, match="reparam_cls must be None or an AbstractEmbeddingReparam subclass"):
        hnn.Embedding.init(Vocab, Em, key=jax.random.key(0), reparam_cls=mup.HiddenLinearMup)


def test_mup_abstract_classes():
    for cls in (mup.AbstractReparam, mup.AbstractLinearReparam, mup.AbstractEmbeddingReparam, mup.ReparamEnabled):
        with pytest.raises(TypeError, match="abstract"):
            cls(Em, Mlp) if cls not in (mup.AbstractReparam, mup.ReparamEnabled) else cls()
    assert issubclass(mup.EmbeddingMup, mup.AbstractEmbeddingReparam)
    with pytest.raises(TypeError, match="In must be an Axis or a tuple of Axes"):
        mup.LinearStandardParam.init_scale("embed", Mlp)
