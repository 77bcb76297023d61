"""The names pass through the usual model idioms: split heads, embedding and conv gradients, GPT-2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from namax.infer import infer_names
from namax.partitioning import pspec_for
from namax.passes.names import AxisNameConflictError
from namax.tag import tag

B, S, E, H, D = 2, 8, 48, 4, 12  # batch, position, embed = heads * head_dim
X_AXES = ("batch", "position", "embed")


def _split_heads(t):
    return t.reshape(B, S, H, D)


# --- splitting a named dim --------------------------------------------------------------


def test_split_names_the_major_part_after_the_parent():
    r = infer_names(_split_heads, jnp.ones((B, S, E)), in_axes=(X_AXES,))
    assert r.out_names == [("batch", "position", "embed", None)]
    (split,) = r.equations("reshape")
    assert split.in_names == [X_AXES]  # the parent keeps its own name


def test_split_major_part_is_placed_by_the_parents_mapping():
    r = infer_names(_split_heads, jnp.ones((B, S, E)), in_axes=(X_AXES,))
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    spec = pspec_for(r.out_names[0], (B, S, H, D), {"embed": "model"}, mesh, strict=False)
    assert spec == jax.sharding.PartitionSpec(None, None, "model")


def test_split_is_a_link_not_a_unification():
    # the sizes differ (4 vs 48): two nodes, not one; check_sizes does not apply to the carried name
    r = infer_names(_split_heads, jnp.ones((B, S, E)), in_axes=(X_AXES,), check_sizes=True)
    assert r.out_names == [("batch", "position", "embed", None)]
    # a name of its own on the major part wins, without a conflict, and stays on the part
    r = infer_names(lambda x: tag(_split_heads(x), ("batch", "position", "heads", "head_dim")), jnp.ones((B, S, E)),
                    in_axes=(X_AXES,))
    assert r.out_names == [("batch", "position", "heads", "head_dim")]
    assert r.in_names == [X_AXES]
    # check_sizes still rejects one name given at two sizes
    with pytest.raises(AxisNameConflictError, match=r"'embed' has size 48 .* but size 4"):
        infer_names(lambda x, h: (_split_heads(x), h), jnp.ones((B, S, E)), jnp.ones((H,)),
                    in_axes=(X_AXES, ("embed",)), check_sizes=True)


def test_major_part_names_an_unnamed_whole():
    # an unnamed dim split into (heads, head_dim) whose heads dim is named: the whole is named after it
    r = infer_names(lambda x, w: jnp.einsum("bshd,hk->bsk", _split_heads(x), w), jnp.ones((B, S, E)), jnp.ones((H, 5)),
                    in_axes=(("batch", "position", None), ("heads", None)))
    assert r.in_names[0] == ("batch", "position", "heads")
    # but not a merge whose other parts are named too: that stays a composite
    r = infer_names(lambda x: x.reshape(B * S, E), jnp.ones((B, S, E)), in_axes=(X_AXES,))
    assert r.out_names == [(("batch", "position"), "embed")]


def test_merge_back_gives_the_parent_name():
    def f(x):
        heads = _split_heads(x)
        direct = heads.reshape(B, S, E)
        moved = jnp.swapaxes(jnp.swapaxes(heads, 1, 2), 1, 2).reshape(B, S, E)
        scaled = (jax.nn.gelu(heads) * 2).reshape(B, S, E)
        return direct, moved, scaled

    r = infer_names(f, jnp.ones((B, S, E)), in_axes=(X_AXES,))
    assert r.out_names == [X_AXES] * 3


def test_merge_back_into_another_name_conflicts():
    # the merged-back dim is embed again, so contracting it with an "mlp" dim is a conflict
    def f(x, w):
        return _split_heads(x).reshape(B, S, E) @ w

    with pytest.raises(AxisNameConflictError, match=r"(?s)`reshape`.*('embed'.*'mlp'|'mlp'.*'embed')"):
        infer_names(f, jnp.ones((B, S, E)), jnp.ones((E, 5)), in_axes=(X_AXES, ("mlp", "out")))


# --- attention ------------------------------------------------------------------------


def attention(x, wq, wk, wv, wo):
    def heads(t):
        return _split_heads(t).transpose(0, 2, 1, 3)

    q, k, v = heads(x @ wq), heads(x @ wk), heads(x @ wv)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
    probs = jax.nn.softmax(scores, axis=-1)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(B, S, E)
    return {"q": q, "scores": scores, "probs": probs, "out": out, "proj": out @ wo}


def test_attention_keeps_the_heads_dim_named():
    x, w = jnp.ones((B, S, E)), jnp.ones((E, E))
    r = infer_names(attention, x, w, w, w, w, in_axes=(X_AXES,) + (("embed", "embed"),) * 4)
    names = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(attention(x, w, w, w, w)), r.out_names)
    assert names == {"q": ("batch", "embed", "position", None),
                     "scores": ("batch", "embed", "position", "position"),
                     "probs": ("batch", "embed", "position", "position"),
                     "out": X_AXES, "proj": X_AXES}
    for e in r.equations():  # every value with a heads dim has it named, softmax statistics too
        for names, v in zip(e.out_names, e.eqn.outvars):
            if len(v.aval.shape) >= 3 and v.aval.shape[1] == H:
                assert names[1] == "embed", e


def fused_attention(x, w_qkv, wo):
    """GPT-2's layout: one (embed, 3 * embed) projection, split into q, k, v, then into heads."""
    q, k, v = (_split_heads(t) for t in jnp.split(x @ w_qkv, 3, axis=-1))
    probs = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(B, S, E) @ wo


def test_fused_qkv_attention_names_heads_from_the_output_projection():
    # the q, k, v pieces are cuts of "qkv" (unnamed); the output projection names the merged
    # heads dim "heads", the merge is v's piece again, and its major part names every heads dim
    r = infer_names(fused_attention, jnp.ones((B, S, E)), jnp.ones((E, 3 * E)), jnp.ones((E, E)),
                    in_axes=(X_AXES, ("embed", "qkv"), ("heads", "embed")))
    assert r.out_names == [X_AXES]
    assert [e.out_names for e in r.equations("split")] == [[("batch", "position", "heads")] * 3]
    heads_shaped = [e.out_names[0] for e in r.equations("reshape") if len(e.out_names[0]) == 4]
    assert heads_shaped == [("batch", "position", "heads", None)] * 3
    (scores,) = [e for e in r.equations("dot_general") if e.eqn.outvars[0].aval.shape == (B, H, S, S)]
    assert scores.out_names == [("batch", "heads", "position", "position")]


# --- gradients of embedding lookups and convolutions ------------------------------------


@pytest.mark.parametrize("loss", [lambda t, i: t[i].sum(), lambda t, i: (jnp.take(t, i, axis=0) ** 2).mean()])
def test_embedding_gradient_keeps_the_table_names(loss):
    table, ids = jnp.ones((7, E)), jnp.zeros((B, S), jnp.int32)
    r = infer_names(jax.grad(loss), table, ids, in_axes=(("vocab", "embed"), ("batch", "position")))
    assert r.out_names == [("vocab", "embed")]
    (scatter,) = r.equations("scatter-add")
    assert scatter.out_names == [("vocab", "embed")]
    assert scatter.in_names[2] == ("batch", "position", "embed")


def _lookups(f1, f2):
    """A loss that looks both tables up with one index array, through ``f1`` and ``f2``."""
    dn = lax.GatherDimensionNumbers(offset_dims=(2,), collapsed_slice_dims=(0,), start_index_map=(0,))

    def loss(t1, t2, i):
        idx = i[..., None]
        look = lambda t: lax.gather(t, idx, dn, (1, E), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
        return f1(look(t1)).sum() + f2(look(t2)).sum()

    return loss


def test_one_index_array_into_two_tables_pairs_each_gradient_with_its_table():
    tables, ids = jnp.ones((7, E)), jnp.zeros((B, S), jnp.int32)
    in_axes = (("vocab", "embed"), ("vocab", "feature"), ("batch", "position"))
    # the cotangents go through tanh and sin of each lookup: each scatter-add knows its table
    r = infer_names(jax.grad(_lookups(jnp.tanh, jnp.sin), (0, 1)), tables, tables, ids, in_axes=in_axes)
    assert r.out_names == [("vocab", "embed"), ("vocab", "feature")]
    # nothing tells the two tables apart: the gradients stay unnamed rather than guess
    r = infer_names(jax.grad(_lookups(lambda y: y, lambda y: y), (0, 1)), tables, tables, ids, in_axes=in_axes)
    assert r.out_names == [(None, None), (None, None)]


KERNEL = ("kh", "kw", "channel", "out_channel")
IMAGE = ("batch", "h", "w", "channel")


@pytest.mark.parametrize("image, strides, padding", [
    (8, (1, 1), "SAME"), (8, (2, 2), "SAME"), (8, (1, 1), "VALID"),
    (3, (1, 1), "SAME"),  # the kernel as large as the image: its window dims are still not the image's
])
def test_conv_kernel_gradient_keeps_the_kernel_names(image, strides, padding):
    def loss(k, x):
        return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()

    k, x = jnp.ones((3, 3, 4, 5)), jnp.ones((2, image, image, 4))
    r = infer_names(jax.grad(loss), k, x, in_axes=(KERNEL, IMAGE))
    assert r.out_names == [KERNEL]
    r = infer_names(jax.grad(loss, (0, 1)), k, x, in_axes=(KERNEL, IMAGE))
    assert r.out_names == [KERNEL, IMAGE]


def test_conv_kernel_gradient_in_channels_first_layout():
    conv = lambda k, x: jnp.tanh(lax.conv_general_dilated(x, k, (1,), "SAME")).mean()  # NCW, OIW
    r = infer_names(jax.grad(conv), jnp.ones((4, 3, 3)), jnp.ones((B, 3, 8)),
                    in_axes=(("out_channel", "channel", "kw"), ("batch", "channel", "position")))
    assert r.out_names == [("out_channel", "channel", "kw")]


# --- an unmodified third-party model ----------------------------------------------------

GPT2_LEAF_AXES = {
    "wte/embedding": ("vocab", "embed"),
    "wpe/embedding": ("max_position", "embed"),
    "c_attn/kernel": ("qkv", "embed"),  # Flax GPT-2 kernels are (out features, in features)
    "c_attn/bias": ("qkv",),
    "attn/c_proj/kernel": ("embed", "heads"),  # its input is the merged (heads, head_dim) dim
    "c_fc/kernel": ("mlp", "embed"),
    "c_fc/bias": ("mlp",),
    "mlp/c_proj/kernel": ("embed", "mlp"),
    "c_proj/bias": ("embed",),
    "scale": ("embed",),
    "bias": ("embed",),
}


def gpt2_param_axes(params):
    def axes(path, leaf):
        key = "/".join(str(getattr(k, "key", k)) for k in path)
        return next(a for suffix, a in GPT2_LEAF_AXES.items() if key.endswith(suffix))

    return jax.tree_util.tree_map_with_path(axes, params)


@pytest.fixture(scope="module")
def gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=64, n_positions=16)
    model = transformers.FlaxGPT2LMHeadModel(config, seed=0)
    return model, model.params, jnp.zeros((2, 8), jnp.int32)


def test_gpt2_forward_and_backward_are_named(gpt2):
    model, params, ids = gpt2
    axes = gpt2_param_axes(params)
    loss = lambda p, i: model(i, params=p).logits.mean()
    for fn in (lambda p, i: model(i, params=p).logits, jax.value_and_grad(loss)):
        r = infer_names(fn, params, ids, in_axes=(axes, ("batch", "position")))
        named, total = r.dim_coverage()
        assert named / total >= 0.85, (named, total)
        assert r.unknown_primitives == {}
        heads = [e.out_names[0] for e in r.equations("reshape") if e.eqn.outvars[0].aval.shape == (2, 8, 4, 8)]
        assert heads and all(n == ("batch", "position", "heads", None) for n in heads), heads
        pieces = [n for e in r.equations("split") for n in e.out_names]  # q, k, v cut from "qkv"
        assert pieces and all(n == ("batch", "position", "heads") for n in pieces), pieces
    assert r.out_names[1:] == jax.tree_util.tree_leaves(axes, is_leaf=lambda a: isinstance(a, tuple))


# --- coverage -----------------------------------------------------------------------------


def test_dim_coverage_counts_every_result_dim_once():
    r = infer_names(lambda x, w: (jnp.tanh(x @ w) @ jnp.ones((5, 3))).sum(-1, keepdims=True), jnp.ones((B, E)),
                    jnp.ones((E, 5)), in_axes=(("batch", "embed"), ("embed", "mlp")))
    rows = [(n, s) for e in r.equations() for v, ns in zip(e.eqn.outvars, e.out_names)
            for n, s in zip(ns, v.aval.shape)]
    assert r.dim_coverage(skip_unit=False) == (sum(n is not None for n, _ in rows), len(rows))
    assert r.dim_coverage() == (sum(n is not None for n, s in rows if s != 1), sum(s != 1 for _, s in rows))
    assert r.dim_coverage()[0] < r.dim_coverage()[1]
