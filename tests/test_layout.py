"""Layout by name: emitted dot_general forms, stored weight orders, values for every layout."""

import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from safetensors import safe_open

import namax as nx
import namax.quant as qax
from namax import layout, nn
from namax.layout import dot_operands, layout_for, weight_axes
from namax.quant import int4

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
import checkpoint as ckpt  # noqa: E402

B, In, Out = nx.Axis("batch", 3), nx.Axis("embed", 5), nx.Axis("mlp", 4)
Q, K, H, D = nx.Axis("q", 4), nx.Axis("k", 6), nx.Axis("heads", 2), nx.Axis("head_size", 3)


def rand(axes, seed=0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(np.float32), axes)


def dot_eqns(jaxpr):
    """Every dot_general eqn of a (closed) jaxpr, sub-jaxprs included, in order."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(eqn)
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    out.extend(dot_eqns(sub))
    return out


def dims(fn, *args):
    """``(lhs shape, rhs shape, dimension_numbers)`` of each dot_general ``fn`` emits."""
    return [(tuple(e.invars[0].aval.shape), tuple(e.invars[1].aval.shape), e.params["dimension_numbers"])
            for e in dot_eqns(jax.make_jaxpr(fn)(*args))]


def avoidably_transposed(lhs_shape, rhs_shape, dn) -> bool:
    """A transposed-LHS dot that swapping the operands would turn into a plain one."""
    (lc, rc), _ = dn

    def trailing(c, n):
        return tuple(c) == tuple(range(n - len(c), n))

    return bool(lc) and not trailing(lc, len(lhs_shape)) and trailing(rc, len(rhs_shape))


def optimized_ops(fn, *args):
    text = jax.jit(fn).lower(*args).compile().as_text()
    return re.findall(r"=\s*\S+\s+([a-z][a-z\-]*)\(", text)


# -- the table ----------------------------------------------------------------------------

def test_table_rows_and_errors():
    assert set(layout.LAYOUTS) >= {"cpu", "gpu", "tpu"}
    assert layout_for("cpu").measured and not layout_for("gpu").measured and not layout_for("tpu").measured
    assert layout_for() is layout.LAYOUTS[jax.default_backend()]
    with pytest.raises(ValueError, match="no layout row for backend 'metal'"):
        layout_for("metal")


def test_weight_axes_follow_the_table_unless_overridden():
    first = layout_for().weight_out_first
    assert weight_axes(In, Out) == ((Out, In) if first else (In, Out))
    assert weight_axes(In, Out, out_first=False) == (In, Out)
    assert weight_axes((In, H), Out, out_first=True) == (Out, In, H)


@pytest.mark.parametrize("a, b, contracted, want, swap", [
    (("batch", "embed"), ("mlp", "embed"), ["embed"], ["batch", "mlp"], False),
    (("embed", "batch"), ("mlp", "embed"), ["embed"], ["batch", "mlp"], True),   # lhs would be transposed
    (("mlp", "embed"), ("batch", "embed"), ["embed"], ["batch", "mlp"], True),   # result order without a transpose
    (("mlp", "embed"), ("batch", "embed"), ["embed"], ["mlp", "batch"], False),
])
def test_dot_operands_choice(a, b, contracted, want, swap):
    plan = dot_operands(a, b, contracted, want, backend="cpu")
    assert plan.swap == swap
    lhs, rhs = (b, a) if swap else (a, b)
    (lc, rc), (lb, rb) = plan.dimension_numbers
    assert [lhs[i] for i in lc] == [rhs[i] for i in rc] == contracted
    assert lc == tuple(range(len(lhs) - len(lc), len(lhs)))  # lhs contracts its last dims


# -- canonical cases: emitted dimension numbers ---------------------------------------------

def test_vector_matrix_forms():
    v = rand((In,))
    for w_axes, rhs_contract in (((Out, In), 1), ((In, Out), 0)):
        w = rand(w_axes, 1)
        [(ls, rs, dn)] = dims(lambda v, w: nx.dot(v, w, axis=In).array, v, w)
        assert (ls, rs, dn) == ((5,), w.array.shape, (((0,), (rhs_contract,)), ((), ())))
        np.testing.assert_allclose(nx.dot(v, w, axis=In).array,
                                   np.einsum("e,{}->m".format("me" if rhs_contract else "em"), v.array, w.array),
                                   rtol=1e-5)
    # matrix-vector: the matrix, contracting its last dim, becomes the lhs
    w = rand((In, Out), 1)
    [(ls, rs, dn)] = dims(lambda v, w: nx.dot(w, v, axis=In).array, v, w)
    assert ls == (5,) and dn[0] == ((0,), (0,))


def test_batched_matmul_forms():
    M, N = nx.Axis("m", 2), nx.Axis("n", 3)
    a, b = rand((B, M, In), 1), rand((B, In, N), 2)
    [(_, _, dn)] = dims(lambda a, b: nx.dot(a, b, axis=In).array, a, b)
    assert dn == (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_allclose(nx.dot(a, b, axis=In).array, np.einsum("bme,ben->bmn", a.array, b.array), rtol=1e-5)
    # neither operand contracts its last dim: the given order stays; values still match
    a2 = rand((In, B, M), 3)
    out = nx.dot(a2, b, axis=In)
    assert out.axes == (B, M, N)
    np.testing.assert_allclose(out.array, np.einsum("ebm,ben->bmn", a2.array, b.array), rtol=1e-5)


def test_attention_scores_and_values_forms():
    q, k, v = rand((B, Q, H, D), 1), rand((B, K, H, D), 2), rand((B, K, H, D), 3)
    [(_, _, dn)] = dims(lambda q, k: nx.dot(q, k, axis=D).array, q, k)
    assert dn == (((3,), (3,)), ((0, 2), (0, 2)))  # q . k^T: both contract their last dim
    s = nx.dot(q, k, axis=D)
    assert s.axes == (B, Q, H, K)
    np.testing.assert_allclose(s.array, np.einsum("bqhd,bkhd->bqhk", q.array, k.array), rtol=1e-5)
    p = s.rearrange((B, H, Q, K))
    [(ls, _, dn)] = dims(lambda p, v: nx.dot(p, v, axis=K).array, p, v)
    assert ls == p.array.shape and dn == (((3,), (1,)), ((0, 1), (0, 2)))
    o = nx.dot(p, v, axis=K)
    np.testing.assert_allclose(o.array, np.einsum("bhqk,bkhd->bhqd", p.array, v.array), rtol=1e-5)


def test_einsum_two_operands_is_one_dot_in_fast_form():
    x, w = rand((In, B)), rand((Out, In), 1)  # x's contracted axis first: w becomes the lhs
    f = lambda x, w: nx.einsum("embed batch, mlp embed -> batch mlp", x, w).array
    [(ls, rs, dn)] = dims(f, x, w)
    assert (ls, rs, dn) == ((4, 5), (5, 3), (((1,), (0,)), ((), ())))
    np.testing.assert_allclose(f(x, w), np.einsum("eb,me->bm", x.array, w.array), rtol=1e-5)
    # an axis in one operand and not in the output is summed, as jnp.einsum does
    x3 = rand((In, B, H), 2)
    g = lambda x, w: nx.einsum("embed batch heads, mlp embed -> mlp batch", x, w).array
    np.testing.assert_allclose(g(x3, w), np.einsum("ebh,me->mb", x3.array, w.array), rtol=1e-4)


# -- Linear: forward and backward ----------------------------------------------------------

def _linear_ref(x_axes, out_first):
    lin = nn.Linear.init(In, Out, key=jax.random.key(0), out_first=out_first)
    lin = jax.tree_util.tree_map(lambda a: a + 0.1, lin)  # nonzero bias
    x = rand(x_axes, 5)
    w_io = np.asarray(lin.weight.rearrange((In, Out)).array)
    xb = np.asarray(x.rearrange((B, In)).array)
    return lin, x, w_io, xb


@pytest.mark.parametrize("out_first", [True, False, None])
@pytest.mark.parametrize("x_axes", [(B, In), (In, B)])
def test_linear_values_and_grads_every_layout(out_first, x_axes):
    lin, x, w_io, xb = _linear_ref(x_axes, out_first)
    assert lin.weight.axes == weight_axes(In, Out, out_first=out_first)
    y = jax.jit(lambda m, x: m(x))(lin, x)
    assert set(y.axis_names) == {"batch", "mlp"} and y.axis_names[-1] == "mlp"
    want = xb @ w_io + np.asarray(lin.bias.array)
    np.testing.assert_allclose(y.rearrange((B, Out)).array, want, rtol=1e-5, atol=1e-6)

    def loss(m, x):
        return jnp.sum(jnp.tanh(m(x).rearrange((B, Out)).array))

    gm, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(lin, x)
    rw, rb, rx = jax.grad(lambda w, b, x: jnp.sum(jnp.tanh(x @ w + b)), argnums=(0, 1, 2))(
        jnp.asarray(w_io), lin.bias.array, jnp.asarray(xb))
    np.testing.assert_allclose(gm.weight.rearrange((In, Out)).array, rw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gm.bias.array, rb, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gx.rearrange((B, In)).array, rx, rtol=1e-4, atol=1e-6)


def test_linear_forward_and_backward_forms():
    lin = nn.Linear.init(In, Out, key=jax.random.key(0), out_first=True)
    x = rand((B, In))
    [(_, _, dn)] = dims(lambda m, x: m(x).array, lin, x)
    assert dn == (((1,), (1,)), ((), ()))  # x . W^T, W stored (mlp, embed)
    grad = jax.grad(lambda m, x: jnp.sum(m(x).array ** 2), argnums=(0, 1))
    forms = dims(grad, lin, x)
    # forward, dx = g . W (plain), dW = g^T . x (contracts the batch dim, leading in both
    # operands: no operand order avoids it)
    assert len(forms) == 3
    for ls, rs, dn in forms:
        assert not avoidably_transposed(ls, rs, dn), (ls, rs, dn)
    assert ((3, 4), (4, 5), (((1,), (0,)), ((), ()))) in forms
    assert ((3, 4), (3, 5), (((0,), (0,)), ((), ()))) in forms


@pytest.mark.parametrize("x_axes", [(B, In), (In, B)])
def test_linear_weight_never_copied(x_axes):
    lin = nn.Linear.init(In, Out, key=jax.random.key(0), use_bias=False)
    x = rand(x_axes)
    ops = optimized_ops(lambda m, x: m(x).array, lin, x)
    assert "transpose" not in ops and "copy" not in ops, ops


# -- Embedding ---------------------------------------------------------------------------

@pytest.mark.parametrize("vocab_first", [True, False])
def test_embedding_any_stored_order(vocab_first):
    V, E, P = nx.Axis("vocab", 7), nx.Axis("embed", 4), nx.Axis("position", 5)
    emb = nn.Embedding.init(V, E, key=jax.random.key(1))
    assert emb.weight.axes == layout.embedding_axes(V, E)
    table = np.asarray(emb.weight.rearrange((V, E)).array)
    stored = emb.weight.rearrange((V, E) if vocab_first else (E, V))
    emb = nn.Embedding(stored, V, E)
    ids = nx.named(jnp.array([0, 6, 2, 2, 5]), P)
    np.testing.assert_allclose(emb(ids).rearrange((P, E)).array, table[np.asarray(ids.array)])
    x = rand((P, E), 3)
    np.testing.assert_allclose(emb.unembed(x).rearrange((P, V)).array, np.asarray(x.array) @ table.T, rtol=1e-5)


# -- checkpoints: saved in one layout, loaded into the other by name ---------------------

def test_checkpoint_loads_across_layouts(tmp_path):
    saved = nn.Linear.init(In, Out, key=jax.random.key(2), out_first=True)
    path = ckpt.save(tmp_path, 3, {"params": saved})
    template = nn.Linear.init(In, Out, key=jax.random.key(9), out_first=False)
    meta = ckpt.read_metadata(path)
    _, out, _ = ckpt.load(path, {"params": template})
    loaded = out["params"]
    # by hand with the layout helper: the same result
    leaves, treedef = jax.tree_util.tree_flatten(template, is_leaf=nx.is_named)
    keys = [f"params/{jax.tree_util.keystr(p)}" for p, _ in
            jax.tree_util.tree_flatten_with_path(template, is_leaf=nx.is_named)[0]]
    new = []
    with safe_open(str(path), framework="numpy") as f:
        for key, leaf in zip(keys, leaves):
            names = meta["axes"][key]
            stored = nx.named(f.get_tensor(key), tuple(leaf.resolve_axis(n) for n in names))
            new.append(layout.match_stored(stored, leaf))
    by_hand = jax.tree_util.tree_unflatten(treedef, new)
    np.testing.assert_array_equal(by_hand.weight.array, loaded.weight.array)
    assert loaded.weight.axes == (In, Out) and saved.weight.axes == (Out, In)
    x = rand((B, In), 4)
    np.testing.assert_allclose(loaded(x).array, saved(x).array, rtol=1e-6)
    assert json.loads(json.dumps(meta["axes"]))["params/.weight"] == ["mlp", "embed"]


def test_match_stored_errors():
    w = rand((Out, In))
    with pytest.raises(ValueError, match=r"axes \(mlp:4, embed:5\).*\(embed:5, heads:2\)"):
        layout.match_stored(w, rand((In, H)))
    with pytest.raises(ValueError, match="'embed'.*size 5.*size 4"):
        layout.match_stored(w, rand((In.resize(4), Out)))


# -- LoRA and int4 rewrites emit the fast form ---------------------------------------------

def test_lora_rewrite_forms():
    key = jax.random.key(0)
    w = jax.random.normal(key, (5, 4))
    lw = qax.LoraWeight(w, jax.random.normal(key, (5, 2)), jax.random.normal(jax.random.fold_in(key, 1), (4, 2)),
                        alpha=2.0)
    dense = lw.materialize()
    x = jax.random.normal(jax.random.fold_in(key, 2), (3, 5))
    cases = {
        "x @ W": (lambda w, x: x @ w, lambda w, x: x @ w),
        "W^T-style, weight on the left": (lambda w, x: lax.dot_general(w, x, (((0,), (1,)), ((), ()))),
                                          lambda w, x: w.T @ x.T),
        "x^T contracting its first dim": (lambda w, x: lax.dot_general(x.T, w, (((0,), (0,)), ((), ()))),
                                          lambda w, x: x @ w),
    }
    for name, (fn, ref) in cases.items():
        implicit = qax.use_implicit_args(fn)
        np.testing.assert_allclose(implicit(lw, x), ref(dense, x), rtol=1e-4, atol=1e-5, err_msg=name)
        forms = dims(implicit, lw, x)
        assert len(forms) == 3, (name, forms)
        # the rank-r products never use a transposed lhs that swapping would avoid
        for ls, rs, dn in forms[1:]:
            assert not avoidably_transposed(ls, rs, dn), (name, ls, rs, dn)


def test_int4_rewrite_forms(monkeypatch):
    monkeypatch.setattr(qax.int4_dot, "DOT_FORM", "scan")  # the dots of the pure-XLA form
    w = jax.random.normal(jax.random.key(0), (256, 8))
    q = int4.quantize({"w": w})["w"]
    x = jax.random.normal(jax.random.key(1), (2, 256))
    fn = qax.use_implicit_args(lambda w, x: x @ w)
    np.testing.assert_allclose(fn(q, x), x @ q.materialize(), rtol=1e-3, atol=1e-3)
    forms = dims(fn, q, x)
    assert forms
    for ls, rs, dn in forms:
        assert not avoidably_transposed(ls, rs, dn), (ls, rs, dn)


@pytest.mark.parametrize("x_axes", [(B, In), (In, B)])
def test_named_linear_compiles_to_the_hand_written_fast_layout(x_axes):
    """Forward and backward: the same optimized HLO instructions as the hand-written x . W^T."""
    from benchmarks._timing import hlo_instructions

    lin = nn.Linear.init(In, Out, key=jax.random.key(0), use_bias=False, out_first=True)
    x = rand(x_axes)
    xb = x.rearrange((B, In)).array
    hand = lambda w, x: lax.dot_general(x, w, (((1,), (1,)), ((), ())))  # noqa: E731
    named = lambda m, x: m(x).rearrange((B, Out)).array  # noqa: E731
    for wrap in (lambda f: f, lambda f: jax.grad(lambda p, x: jnp.sum(f(p, x) ** 2), argnums=(0, 1))):
        h = jax.jit(wrap(hand)).lower(lin.weight.array, xb).compile().as_text()
        n = jax.jit(wrap(named)).lower(lin, x).compile().as_text()
        if x_axes[0] == B:
            assert hlo_instructions(n) == hlo_instructions(h)
        ops = [re.search(r"\s([a-z][a-z\-]*)\(", i).group(1) for i in hlo_instructions(n)]
        assert ops.count("dot") + ops.count("fusion") >= 1 and "copy" not in ops, ops


# -- skinny activations against a big weight: the weight goes first ---------------------------

def _skinny_linear(rows: int, width: int = 1024):
    Rows, Wide, Wout = nx.Axis("batch", rows), nx.Axis("embed", width), nx.Axis("mlp", width)
    lin = nn.Linear.init(Wide, Wout, key=jax.random.key(0), use_bias=False, out_first=True)
    x = rand((Rows, Wide), 1)
    return lin, x, np.asarray(lin.weight.rearrange((Wide, Wout)).array), np.asarray(x.array)


def test_skinny_rule_in_the_table_and_plan():
    row = layout_for("cpu")
    assert row.skinny_rows == 16 and row.skinny_min_weight == 2 ** 20
    sizes = {"batch": 16, "embed": 1024, "mlp": 1024}
    plan = dot_operands(("batch", "embed"), ("mlp", "embed"), ["embed"], ["batch", "mlp"], backend="cpu",
                        sizes=sizes)
    assert (plan.swap, plan.dimension_numbers, plan.produced, plan.barrier) == (
        True, (((1,), (1,)), ((), ())), ("mlp", "batch"), True)
    # one row: the transpose is a reshape, no barrier needed
    assert not dot_operands(("batch", "embed"), ("mlp", "embed"), ["embed"], ["batch", "mlp"], backend="cpu",
                            sizes=dict(sizes, batch=1)).barrier
    # 17 rows, a small weight, a batch dim, or a backend without the rule: the usual plan
    for case in (dict(sizes, batch=17), dict(sizes, embed=512)):
        assert dot_operands(("batch", "embed"), ("mlp", "embed"), ["embed"], ["batch", "mlp"], backend="cpu",
                            sizes=case).produced == ("batch", "mlp")
    assert not dot_operands(("h", "batch", "embed"), ("h", "mlp", "embed"), ["embed"], ["h", "batch", "mlp"],
                            backend="cpu", sizes=dict(sizes, h=2)).barrier
    assert dot_operands(("batch", "embed"), ("mlp", "embed"), ["embed"], ["batch", "mlp"], backend="gpu",
                        sizes=sizes).produced == ("batch", "mlp")


@pytest.mark.parametrize("rows", [1, 16, 17])
def test_skinny_linear_forms_values_and_grads(rows):
    lin, x, w_io, xb = _skinny_linear(rows)
    fwd = lambda m, x: m(x).array  # noqa: E731
    y = jax.jit(fwd)(lin, x)
    assert y.shape == (rows, 1024)  # the user's order, whatever the dot produced
    np.testing.assert_allclose(y, xb @ w_io, rtol=1e-4, atol=1e-3)
    [(ls, rs, dn)] = dims(fwd, lin, x)
    weight_first = rows <= 16
    assert (ls, rs) == (((1024, 1024), (rows, 1024)) if weight_first else ((rows, 1024), (1024, 1024)))
    assert dn == (((1,), (1,)), ((), ()))
    barrier = "optimization_barrier" in str(jax.make_jaxpr(fwd)(lin, x))
    assert barrier == (1 < rows <= 16)
    gm, gx = jax.jit(jax.grad(lambda m, x: jnp.sum(jnp.tanh(fwd(m, x))), argnums=(0, 1)))(lin, x)
    rw, rx = jax.grad(lambda w, x: jnp.sum(jnp.tanh(x @ w)), argnums=(0, 1))(jnp.asarray(w_io), jnp.asarray(xb))
    np.testing.assert_allclose(gm.weight.rearrange((lin.In, lin.Out)).array, rw, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gx.array, rx, rtol=1e-3, atol=1e-4)


def test_skinny_linear_with_lora_and_int4_weights():
    lin, x, w_io, xb = _skinny_linear(8)
    fwd = lambda m, x: m(x).array  # noqa: E731
    key = jax.random.key(3)
    lora = qax.lora.wrap(lin, rank=4, key=key)
    lora = jax.tree_util.tree_map(lambda a: a + 0.01, lora)  # nonzero b
    assert isinstance(lora.weight.array, qax.LoraWeight)
    implicit = jax.jit(qax.use_implicit_args(fwd))
    dense = jax.jit(fwd)(qax.lora.merge(lora), x)
    np.testing.assert_allclose(implicit(lora, x), dense, rtol=1e-4, atol=1e-3)
    for ls, rs, dn in dims(qax.use_implicit_args(fwd), lora, x):
        assert not avoidably_transposed(ls, rs, dn), (ls, rs, dn)
    q = int4.quantize(lin, where=lambda path, leaf: leaf.ndim == 2, in_axis=1)
    assert isinstance(q.weight.array, qax.Int4Weight)
    np.testing.assert_allclose(implicit(q, x), jax.jit(fwd)(int4.dequantize(q), x), rtol=1e-4, atol=1e-3)
    for ls, rs, dn in dims(qax.use_implicit_args(fwd), q, x):
        assert not avoidably_transposed(ls, rs, dn), (ls, rs, dn)


def test_skinny_linear_under_tensor_parallel_namedjit():
    from jax.sharding import AxisType, PartitionSpec as P

    from namax import namedjit

    lin, x, w_io, xb = _skinny_linear(8)
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)

    def step(m, x):
        return jax.value_and_grad(lambda m: jnp.sum(jnp.tanh(m(x).array)))(m)

    f = namedjit(step, axis_resources={"batch": "data", "mlp": "model"}, mesh=mesh)
    (value, grads) = f(lin, x)
    want_value, want_grad = jax.value_and_grad(lambda w: jnp.sum(jnp.tanh(xb @ w)))(jnp.asarray(w_io))
    np.testing.assert_allclose(value, want_value, rtol=1e-4)
    np.testing.assert_allclose(grads.weight.rearrange((lin.In, lin.Out)).array, want_grad, rtol=1e-3, atol=1e-4)
    assert grads.weight.array.sharding.spec == P("model")  # (mlp, embed) storage, mlp on "model"
    assert "optimization_barrier" in str(jax.make_jaxpr(step)(lin, x))
