"""The names pass: axis names solved over whole jaxprs, forward and backward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import namax as nx
from namax.infer import infer_names
from namax.passes.names import AxisNameConflictError, infer
from namax.tag import tag

B, T, E, H, D, M = 2, 4, 6, 2, 3, 5  # batch, position, embed, heads, head_dim, mlp
Batch, Pos, Embed, Heads, HeadDim, Mlp = nx.make_axes(batch=B, position=T, embed=E, heads=H, head_dim=D, mlp=M)
KPos = Pos.alias("key_position")

PARAM_AXES = {
    "ln": ("embed",),
    "wq": ("embed", "heads", "head_dim"),
    "wk": ("embed", "heads", "head_dim"),
    "wv": ("embed", "heads", "head_dim"),
    "wo": ("heads", "head_dim", "embed"),
    "w1": ("embed", "mlp"),
    "w2": ("mlp", "embed"),
}
SIZES = {"batch": B, "position": T, "embed": E, "heads": H, "head_dim": D, "mlp": M}


def _params(key=0):
    keys = jax.random.split(jax.random.PRNGKey(key), len(PARAM_AXES))
    return {k: jax.random.normal(kk, tuple(SIZES[a] for a in axes)) for kk, (k, axes) in zip(keys, PARAM_AXES.items())}


def _fully_named(names):
    return all(n is not None for n in names)


# --- a GPT-style block in plain jnp, names only on the inputs ------------------------


def plain_block(p, x):
    def layernorm(h):
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        return (h - mu) / jnp.sqrt(var + 1e-5) * p["ln"]

    h = layernorm(x)
    q = jnp.einsum("bte,ehd->bthd", h, p["wq"])
    k = jnp.einsum("bte,ehd->bthd", h, p["wk"])
    v = jnp.einsum("bte,ehd->bthd", h, p["wv"])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
    mask = jnp.tril(jnp.ones((T, T), bool))
    scores = jnp.where(mask, scores, -1e9)
    probs = jax.nn.softmax(scores, axis=-1)
    attn = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    x = x + jnp.einsum("bqhd,hde->bqe", attn, p["wo"])
    mlp = jax.nn.gelu(layernorm(x) @ p["w1"])
    out = x + mlp @ p["w2"]
    return {"q": q, "scores": scores, "probs": probs, "attn": attn, "mlp": mlp, "out": out}


PLAIN_EXPECTED = {
    "q": ("batch", "position", "heads", "head_dim"),
    "scores": ("batch", "heads", "position", "position"),
    "probs": ("batch", "heads", "position", "position"),
    "attn": ("batch", "position", "heads", "head_dim"),
    "mlp": ("batch", "position", "mlp"),
    "out": ("batch", "position", "embed"),
}


def _plain_result():
    p, x = _params(), jnp.ones((B, T, E))
    return infer_names(plain_block, p, x, in_axes=(PARAM_AXES, ("batch", "position", "embed")))


def test_plain_block_outputs_named_from_inputs():
    r = _plain_result()
    out_tree = jax.tree_util.tree_structure(plain_block(_params(), jnp.ones((B, T, E))))
    got = jax.tree_util.tree_unflatten(out_tree, r.out_names)
    assert got == PLAIN_EXPECTED
    assert r.unknown_primitives == {}


def test_plain_block_every_dot_and_reduce_named():
    r = _plain_result()
    dots = r.equations("dot_general")
    assert len(dots) == 8
    allowed = {frozenset(v) for v in PLAIN_EXPECTED.values()} | {frozenset(("batch", "heads", "position", "head_dim"))}
    for e in dots:
        assert _fully_named(e.out_names[0]), e
        assert frozenset(e.out_names[0]) in allowed, e.out_names
        # the output sizes agree with the names' sizes
        assert tuple(SIZES[n] for n in e.out_names[0]) == e.eqn.outvars[0].aval.shape
    reduces = [e for e in r.equations() if e.primitive.startswith("reduce_")]
    assert len(reduces) >= 4
    for e in reduces:
        assert _fully_named(e.out_names[0]), e
        assert tuple(SIZES[n] for n in e.out_names[0]) == e.eqn.outvars[0].aval.shape
    # layernorm statistics reduce embed away; softmax reduces a key position away
    assert ("batch", "position") in [e.out_names[0] for e in reduces]
    assert ("batch", "heads", "position") in [e.out_names[0] for e in reduces]


def test_plain_block_causal_mask_gets_position_names():
    r = _plain_result()
    selects = [e for e in r.equations("select_n") if len(e.in_names[0]) == 4]
    assert selects and selects[0].in_names[0] == ("batch", "heads", "position", "position")
    iotas = r.equations("iota")
    assert iotas and all(e.out_names[0] == ("position", "position") for e in iotas)


# --- the same block in named code (every op tags its result) --------------------------


def named_block(p, x):
    def layernorm(h):
        mu = nx.mean(h, Embed)
        var = nx.mean((h - mu) ** 2, Embed)
        return (h - mu) / nx.sqrt(var + 1e-5) * p["ln"]

    h = layernorm(x)
    q = nx.dot(h, p["wq"], axis=Embed)
    k = nx.dot(h, p["wk"], axis=Embed).rename({"position": "key_position"})
    v = nx.dot(h, p["wv"], axis=Embed).rename({"position": "key_position"})
    scores = nx.dot(q, k, axis=HeadDim) / np.sqrt(D)
    causal = nx.arange(Pos) >= nx.arange(KPos)
    scores = nx.where(causal, scores, -1e9)
    scores = scores - nx.max(scores, KPos)
    e = nx.exp(scores)
    probs = e / nx.sum(e, KPos)
    attn = nx.dot(probs, v, axis=KPos)
    x = x + nx.dot(attn, p["wo"], axis=(Heads, HeadDim))
    mlp = nx.tanh(nx.dot(layernorm(x), p["w1"], axis=Embed))
    return x + nx.dot(mlp, p["w2"], axis=Mlp)


def _named_inputs():
    raw = _params()
    p = {k: nx.named(v, PARAM_AXES[k]) for k, v in raw.items()}
    return p, nx.named(jnp.ones((B, T, E)), (Batch, Pos, Embed))


def test_named_block_every_var_named_and_matches_tags():
    p, x = _named_inputs()
    r = infer_names(named_block, p, x)
    assert r.out_names == [("batch", "position", "embed")]
    top = r.closed_jaxpr.jaxpr
    for eqn in top.eqns:
        for v in eqn.outvars:
            # size-1 dims that `align` inserts for broadcasting are placeholders, not axes
            named = [n for n, size in zip(r.names_of(v), v.aval.shape) if size != 1]
            assert _fully_named(named), (eqn, r.names_of(v))
    tags = {id(e.eqn.invars[0]): e.eqn.params["axes"] for e in r.equations("named_axes")}
    dots = r.equations("dot_general")
    assert len(dots) == 8
    for e in dots:
        assert set(e.out_names[0]) <= set(SIZES) | {"key_position"}
        assert tuple({**SIZES, "key_position": T}[n] for n in e.out_names[0]) == e.eqn.outvars[0].aval.shape
    score_dots = [e for e in dots if set(e.out_names[0]) == {"batch", "position", "heads", "key_position"}]
    assert len(score_dots) == 1
    # wherever a dot's result is tagged directly, the solved names are the tag's
    for e in dots:
        if id(e.eqn.outvars[0]) in tags:
            assert set(tags[id(e.eqn.outvars[0])]) == set(e.out_names[0])
    for e in r.equations():
        if e.primitive.startswith("reduce_"):
            assert _fully_named(e.out_names[0])


def test_rename_tag_does_not_conflict_and_renames():
    x = nx.named(jnp.ones((T, E)), (Pos, Embed))
    r = infer_names(lambda x: x.rename({"position": "key_position"}).array * 2, x)
    assert r.out_names == [("key_position", "embed")]
    assert r.in_names == [("position", "embed")]


# --- backward flow ---------------------------------------------------------------------


def test_names_flow_backward_from_a_later_tag():
    def f(x, w):
        h = jnp.sin(x) @ w
        return tag(h * 2, ("batch", "mlp"))

    r = infer_names(f, jnp.ones((B, E)), jnp.ones((E, M)))
    assert r.in_names == [("batch", None), (None, "mlp")]
    (dot,) = r.equations("dot_general")
    assert dot.out_names == [("batch", "mlp")]
    assert r.names_of(r.closed_jaxpr.jaxpr.eqns[0].outvars[0]) == ("batch", None)


def test_contraction_names_flow_between_operands():
    r = infer_names(lambda x, w: x @ w, jnp.ones((B, E)), jnp.ones((E, M)), in_axes=(None, ("embed", "mlp")))
    assert r.in_names == [(None, "embed"), ("embed", "mlp")]


# --- sub-jaxprs ------------------------------------------------------------------------


def _inner_dot_names(r, container):
    return [e.out_names[0] for e in r.equations("dot_general") if container in e.path]


def test_through_jit():
    f = jax.jit(lambda x, w: jnp.tanh(x @ w))
    r = infer_names(lambda x, w: f(x, w) + 1, jnp.ones((B, E)), jnp.ones((E, M)), in_axes=(("batch", "embed"), ("embed", "mlp")))
    assert _inner_dot_names(r, "jit") == [("batch", "mlp")]
    assert r.out_names == [("batch", "mlp")]


def test_same_jitted_function_at_two_call_sites_does_not_unify_them():
    g = jax.jit(lambda a: a * 2)

    def f(x, y):
        return g(x), g(y)

    r = infer_names(f, jnp.ones((B, E)), jnp.ones((B, E)), in_axes=(("batch", "embed"), ("batch", "mlp")))
    assert r.out_names == [("batch", "embed"), ("batch", "mlp")]
    inner = r.equations("mul")
    assert [e.out_names[0] for e in inner] == [("batch", "embed"), ("batch", "mlp")]
    assert r.names_of(inner[0].eqn.outvars[0]) == ("batch", None)  # visits disagree on dim 1


def test_scan_over_layers_with_carry():
    def f(x, ws):
        def body(h, w):
            h = jnp.tanh(h @ w)
            return h, h.sum(-1)
        return lax.scan(body, x, ws)

    L = 3
    r = infer_names(f, jnp.ones((B, E)), jnp.ones((L, E, E)), in_axes=(("batch", "embed"), ("layer", "embed", None)))
    assert r.in_names[1] == ("layer", "embed", "embed")  # the carry names the output side of w
    assert _inner_dot_names(r, "scan") == [("batch", "embed")]
    assert r.out_names == [("batch", "embed"), ("layer", "batch")]


def test_scan_carry_named_from_inside_the_body():
    def f(x):
        def body(h, _):
            return tag(h + 1.0, ("batch", "embed")), None
        return lax.scan(body, x, None, length=2)[0]

    r = infer_names(f, jnp.ones((B, E)))
    assert r.in_names == [("batch", "embed")]


def test_cond_branches_unify():
    def f(p, x, w):
        return lax.cond(p, lambda x, w: x @ w, lambda x, w: tag(jnp.zeros((B, M)), ("batch", "mlp")) + x.sum() * 0, x, w)

    r = infer_names(f, jnp.array(True), jnp.ones((B, E)), jnp.ones((E, M)))  # a Python bool would be static
    assert r.out_names == [("batch", "mlp")]
    assert _inner_dot_names(r, "cond") == [("batch", "mlp")]
    assert r.in_names[1] == ("batch", None)


def test_while_carry():
    def f(x, w):
        return lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.tanh(c[1] @ w)), (0, x))[1]

    r = infer_names(f, jnp.ones((B, E)), jnp.ones((E, E)), in_axes=(("batch", "embed"), None))
    assert r.out_names == [("batch", "embed")]
    assert r.in_names[1] == ("embed", "embed")
    assert _inner_dot_names(r, "while") == [("batch", "embed")]


def test_remat_and_custom_jvp():
    f = jax.checkpoint(lambda x, w: jax.nn.relu(x @ w))
    r = infer_names(f, jnp.ones((B, E)), jnp.ones((E, M)), in_axes=(("batch", "embed"), ("embed", "mlp")))
    assert r.out_names == [("batch", "mlp")]
    maxes = [e for e in r.equations("max") if "custom_jvp_call" in e.path]
    assert maxes and maxes[0].out_names == [("batch", "mlp")]
    assert "remat2" in r.equations("dot_general")[0].path


def test_custom_vjp():
    @jax.custom_vjp
    def scale(x):
        return x * 3

    scale.defvjp(lambda x: (scale(x), None), lambda _, g: (g * 3,))
    r = infer_names(lambda x: scale(x).sum(0), jnp.ones((B, E)), in_axes=(("batch", "embed"),))
    assert r.out_names == [("embed",)]
    assert [e.out_names[0] for e in r.equations("mul")] == [("batch", "embed")]


def test_under_grad_backward_vars_are_named():
    def loss(p, x):
        return plain_block(p, x)["out"].sum()

    p, x = _params(), jnp.ones((B, T, E))
    r = infer_names(jax.grad(loss), p, x, in_axes=(PARAM_AXES, ("batch", "position", "embed")))
    flat_axes = [PARAM_AXES[k] for k in sorted(PARAM_AXES)]
    assert r.out_names == flat_axes
    dots = r.equations("dot_general")
    assert len(dots) > 8
    for e in dots:
        assert _fully_named(e.out_names[0]), e


# --- reshape ---------------------------------------------------------------------------


def test_reshape_merge_split_and_unit_dims():
    def f(x):
        flat = x.reshape(B * T, E)
        back = flat.reshape(B, T, E)
        unit = x.reshape(B, 1, T, E)
        return flat, back, unit

    r = infer_names(f, jnp.ones((B, T, E)), in_axes=(("batch", "position", "embed"),))
    assert r.out_names == [(("batch", "position"), "embed"), ("batch", "position", "embed"),
                           ("batch", None, "position", "embed")]
    assert "f32[batch*position:8,embed:6]" in r.pretty()


def test_reshape_split_names_flow_back_to_the_merged_input():
    def f(flat):
        return tag(flat.reshape(B, T, E), ("batch", "position", "embed"))

    r = infer_names(f, jnp.ones((B * T, E)))
    assert r.in_names == [(("batch", "position"), "embed")]


# --- other primitives ------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda x: jnp.concatenate([x, x], axis=1), ("batch", None)),
        (lambda x: jnp.pad(x, ((0, 0), (1, 1))), ("batch", None)),
        (lambda x: x[:, 1:3], ("batch", None)),
        (lambda x: x.T, ("embed", "batch")),
        (lambda x: x[:, None, :], ("batch", None, "embed")),
        (lambda x: jnp.expand_dims(x, 0)[0], ("batch", "embed")),
        (lambda x: jnp.cumsum(x, axis=1), ("batch", "embed")),
        (lambda x: jnp.sort(x, axis=1), ("batch", "embed")),
        (lambda x: jnp.argmax(x, axis=1), ("batch",)),
        (lambda x: jnp.flip(x, 1), ("batch", "embed")),
        (lambda x: lax.dynamic_slice_in_dim(x, 1, 2, axis=1), ("batch", None)),
        (lambda x: lax.dynamic_update_slice(x, jnp.zeros((B, 2)), (0, 1)), ("batch", "embed")),
        (lambda x: x.astype(jnp.int32), ("batch", "embed")),
        (lambda x: jnp.split(x, 2, axis=1)[1], ("batch", None)),
        # pieces cut from one dim and put back whole, in any order, are that dim again
        (lambda x: jnp.concatenate(jnp.split(x, 2, axis=1)[::-1], axis=1), ("batch", "embed")),
        (lambda x: jnp.concatenate([x[:, 3:], x[:, :1], x[:, 1:3]], axis=1), ("batch", "embed")),
        (lambda x: jnp.concatenate([x[:, :2], x[:, :2]], axis=1), ("batch", None)),
        (lambda x: jnp.concatenate([x[:, :2], jnp.zeros((B, E - 2))], axis=1), ("batch", None)),
        (lambda x: jnp.concatenate([x[:, ::2], x[:, 1::2]], axis=1), ("batch", None)),
        (lambda x: lax.top_k(x, 2)[0], ("batch", None)),
        (lambda x: jax.lax.with_sharding_constraint(x, jax.sharding.SingleDeviceSharding(jax.devices()[0])), ("batch", "embed")),
    ],
)
def test_shape_ops(fn, expected):
    r = infer_names(fn, jnp.ones((B, E)), in_axes=(("batch", "embed"),))
    assert r.out_names == [expected]
    assert r.unknown_primitives == {}


def test_random_keys_keep_their_batch_dims():
    def f(seeds):
        keys = jax.vmap(jax.random.key)(seeds)
        return jax.vmap(lambda k: jax.random.normal(k, (E,)))(keys)

    r = infer_names(f, jnp.arange(B), in_axes=(("batch",),))
    assert r.out_names == [("batch", None)]
    assert r.unknown_primitives == {}


def test_gather_take_and_indexing():
    table, ids = jnp.ones((7, E)), jnp.zeros((B, T), jnp.int32)
    r = infer_names(lambda t, i: (t[i], jnp.take(t, i[0], axis=1)), table, ids, in_axes=(("vocab", "embed"), ("batch", "position")))
    assert r.out_names == [("batch", "position", "embed"), ("vocab", "position")]


def test_gather_gradient_scatter_add():
    table, ids = jnp.ones((7, E)), jnp.zeros((B,), jnp.int32)
    r = infer_names(jax.grad(lambda t, i: (t[i] ** 2).sum()), table, ids, in_axes=(("vocab", "embed"), ("batch",)))
    # the scatter-add is paired with the gather through their shared indices: the table's names
    assert r.out_names == [("vocab", "embed")]
    (scatter,) = r.equations("scatter-add")
    assert scatter.in_names[2] == ("batch", "embed")


def test_conv_batch_and_features():
    x, k = jnp.ones((B, 3, 8)), jnp.ones((4, 3, 3))  # NCW, OIW
    conv = lambda x, k: lax.conv_general_dilated(x, k, (1,), "SAME")
    r = infer_names(conv, x, k, in_axes=(("batch", "channel", "position"), ("out_channel", None, None)))
    assert r.out_names == [("batch", "out_channel", "position")]
    assert r.in_names[1] == ("out_channel", "channel", None)


# --- errors and coverage ----------------------------------------------------------------


def test_conflicting_names_raise_naming_both_axes_and_primitive():
    f = lambda x, y: x + y
    with pytest.raises(AxisNameConflictError, match=r"(?s)`add`.*('embed'.*'mlp'|'mlp'.*'embed')"):
        infer_names(f, jnp.ones((B, E)), jnp.ones((B, E)), in_axes=(("batch", "embed"), ("batch", "mlp")))


def test_conflict_inside_a_scan_body_names_the_path():
    def f(x, y):
        return lax.scan(lambda c, _: (c + y, None), x, None, length=2)[0]

    with pytest.raises(AxisNameConflictError, match=r"`add`.*inside scan"):
        infer_names(f, jnp.ones((B, E)), jnp.ones((B, E)), in_axes=(("batch", "embed"), ("batch", "mlp")))


def test_one_name_two_sizes_raises_when_checked():
    with pytest.raises(AxisNameConflictError, match=r"'batch' has size 2 .* but size 3"):
        infer_names(lambda x, y: (x, y), jnp.ones((B,)), jnp.ones((3,)), in_axes=(("batch",), ("batch",)),
                    check_sizes=True)


def test_named_slice_keeps_the_name_at_a_new_size():
    x = nx.named(jnp.arange(B * T, dtype=jnp.float32).reshape(B, T), (Batch, Pos))
    r = infer_names(lambda x: (x["position", 1:3] * 2).array, x)
    assert r.out_names == [("batch", "position")]
    with pytest.raises(AxisNameConflictError, match=r"'position' has size 4 .* but size 2"):
        infer_names(lambda x: (x["position", 1:3] * 2).array, x, check_sizes=True)


def test_coverage_report_lists_unknown_primitive_and_leaves_it_unnamed():
    from jax.extend.core import Primitive

    mystery = Primitive("mystery_op")  # a primitive no rule knows
    mystery.def_impl(lambda x: x * 2)
    mystery.def_abstract_eval(lambda x: x)
    r = infer_names(lambda x: mystery.bind(x) + 1, jnp.ones((B, 8)), in_axes=(("batch", "freq"),))
    assert r.unknown_primitives == {"mystery_op": 1}
    assert "mystery_op" in r.coverage_report()
    assert r.out_names == [(None, None)]


def test_pretty_printer_types_every_var():
    r = infer_names(lambda x, w: jnp.tanh(x @ w) @ jnp.ones((M, 3)), jnp.ones((B, E)), jnp.ones((E, M)),
                    in_axes=(("batch", "embed"), ("embed", "mlp")))
    text = r.pretty()
    assert "f32[batch:2,embed:6]" in text
    assert "f32[embed:6,mlp:5]" in text
    assert "f32[batch:2,_:3]" in text
    assert text.count("dot_general") == 2


def test_infer_names_argument_errors():
    x = jnp.ones((B, E))
    with pytest.raises(ValueError, match="one entry per argument"):
        infer_names(lambda x: x, x, in_axes=(("batch", "embed"), None))
    with pytest.raises(ValueError, match=r"shape \(2, 6\).*1 names"):
        infer_names(lambda x: x, x, in_axes=(("batch",),))
    with pytest.raises(ValueError, match="has 1 inputs"):
        infer(jax.make_jaxpr(lambda x: x)(x), [None, None])


def test_shard_map_body_shares_names_with_sharded_dims():
    from jax.sharding import AxisType, PartitionSpec as P

    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:2])

    @jax.shard_map(mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data"))
    def f(x, w):
        return jnp.tanh(x @ w) + lax.psum(x.sum(), "data")

    r = infer_names(f, jnp.ones((4, E)), jnp.ones((E, M)), in_axes=(("batch", "embed"), ("embed", "mlp")))
    (dot,) = r.equations("dot_general")
    assert "shard_map" in dot.path
    assert dot.out_names == [("batch", "mlp")]
    assert dot.eqn.outvars[0].aval.shape == (2, M)  # the local block, named like the global array
    assert r.out_names == [("batch", "mlp")]
    assert r.unknown_primitives == {}


def test_pooling_and_its_gradient_keep_the_unpooled_names():
    x = jnp.ones((2, 8, 8, 3))

    def pooled(x):
        return jnp.sum(jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") ** 2,
                       axis=(1, 2))

    names = ("batch", "h", "w", "c")
    r = infer_names(pooled, x, in_axes=(names,))
    assert r.out_names == [("batch", "c")] and not r.unknown_primitives
    window = next(e for e in r.equations("reduce_window_max"))
    assert window.out_names[0] == ("batch", None, None, "c")  # pooled dims are new axes
    g = infer_names(jax.grad(lambda x: jnp.sum(pooled(x))), x, in_axes=(names,))
    assert g.out_names == [names] and not g.unknown_primitives


# --- linear algebra, FFTs, generic windows, linear solves, collectives --------------------

_SQ = ("batch", "row", "col")


@pytest.mark.parametrize(
    "fn, in_axes, expected",
    [
        (lambda a: lax.linalg.cholesky(a, symmetrize_input=False), [_SQ], [_SQ]),
        (lambda a: lax.linalg.eigh(a, symmetrize_input=False), [_SQ], [("batch", "row", None), ("batch", None)]),
        (lambda a: jnp.linalg.qr(a), [("batch", "row", "col")], [("batch", "row", None), ("batch", None, "col")]),
        (lambda a: jnp.linalg.svd(a, full_matrices=False), [("batch", "row", "col")],
         [("batch", "row", None), ("batch", None), ("batch", None, "col")]),
        (lambda a: jax.scipy.linalg.lu_factor(a)[0], [_SQ], [_SQ]),
        (lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True), [_SQ, ("batch", "row", "rhs")],
         [("batch", "col", "rhs")]),
        (lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True, trans=1), [_SQ, ("batch", "col", "rhs")],
         [("batch", "row", "rhs")]),
        (jnp.fft.fft, [("batch", "time", "freq")], [("batch", "time", "freq")]),
        (jnp.fft.rfft, [("batch", "time", "freq")], [("batch", "time", None)]),
        (lambda x: lax.reduce_window(x, 1.0, lax.mul, (1, 2, 1), (1, 1, 1), "VALID"), [("batch", "time", "freq")],
         [("batch", None, "freq")]),
    ],
)
def test_linalg_fft_and_window_rules(fn, in_axes, expected):
    args = [jnp.broadcast_to(jnp.eye(4) * 2.0 + 0.1, (2, 4, 4)) for _ in in_axes]
    r = infer_names(fn, *args, in_axes=tuple(in_axes))
    assert r.out_names == expected
    assert r.unknown_primitives == {}


def test_custom_linear_solve_keeps_the_right_hand_side_names():
    a = jnp.eye(4) * 3.0

    def solve(b):
        return lax.custom_linear_solve(lambda x: a @ x, b, lambda mv, x: x / 3.0)

    r = infer_names(solve, jnp.ones((4, 3)), in_axes=(("row", "rhs"),))
    assert r.out_names == [("row", "rhs")]
    assert r.unknown_primitives == {}


def test_collectives_in_shard_map_keep_their_axes():
    from jax.sharding import AxisType, PartitionSpec as P

    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:2])

    @functools.partial(jax.shard_map, mesh=mesh, in_specs=P("data"), check_vma=False,
                       out_specs=(P(), P(None, "data"), P("data"), P("data")))
    def f(x):
        gathered = lax.all_gather(x, "data", axis=0, tiled=True)
        moved = lax.all_to_all(x, "data", 1, 0, tiled=True)
        scattered = lax.psum_scatter(x, "data", scatter_dimension=1, tiled=True)
        stacked = lax.all_gather(x, "data", axis=1)[:, 0]
        return gathered, moved, scattered, stacked

    r = infer_names(f, jnp.ones((4, 6)), in_axes=(("batch", "embed"),))
    assert r.out_names == [("batch", "embed")] * 4
    assert r.unknown_primitives == {}
