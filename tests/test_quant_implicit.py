"""ImplicitArray pytrees, handler dispatch rules and use_implicit_args through transformations."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import namax.quant as qax

MSG = "Primitive {} was not handled by class {}, so implicit args will be materialized."


@dataclasses.dataclass
class Scaled(qax.ImplicitArray):
    """``x * factor`` with a static factor."""
    x: qax.ArrayValue
    factor: float = qax.aux_field(default=2.0)

    def materialize(self):
        return qax.materialize_value(self.x) * self.factor


class Scaled3(Scaled):
    """A subclass: handlers for Scaled must also match it."""


class Fill(qax.ImplicitArray):
    default_dtype = jnp.float32
    value = 3.0

    def materialize(self):
        return jnp.full(self.shape, self.value, self.dtype)


class Plain(qax.ImplicitArray):
    x: qax.ArrayValue  # no @dataclass: made one on first use

    def materialize(self):
        return self.x + 1


def _record(fn, *args):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(r.message) for r in rec]


# -- ImplicitArray ------------------------------------------------------------------------

def test_pytree_children_and_aux():
    s = Scaled(jnp.ones((2, 3)), factor=4.0)
    assert s.shape == (2, 3) and s.dtype == jnp.float32 and s.aval.shape == (2, 3)
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert len(leaves) == 1 and leaves[0].shape == (2, 3)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(back, Scaled) and back.factor == 4.0 and back.shape == (2, 3)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(s)[0]]
    assert paths == [".x"]
    doubled = jax.tree_util.tree_map(lambda v: v * 2, s)
    np.testing.assert_allclose(doubled.materialize(), 8 * np.ones((2, 3)))


def test_shape_dtype_inference_and_defaults():
    f = Fill(shape=(4,))
    assert f.dtype == jnp.float32 and f.shape == (4,)
    assert Fill(shape=[2, 2], dtype=jnp.int32).dtype == jnp.int32
    assert Scaled(jnp.ones((3,), jnp.bfloat16)).dtype == jnp.bfloat16
    p = Plain(jnp.zeros((2,)))
    assert dataclasses.is_dataclass(p) and p.shape == (2,)
    np.testing.assert_allclose(p.materialize(), [1.0, 1.0])


def test_constructor_errors():
    with pytest.raises(TypeError, match="Fill has no array children, so shape= must be given"):
        Fill()
    with pytest.raises(TypeError, match="ImplicitArray is abstract"):
        qax.ImplicitArray(shape=(1,))
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        Fill(shape=(None, 2))


def test_shape_follows_children_under_vmap():
    s = Scaled(jnp.arange(6.0).reshape(3, 2))
    out = jax.vmap(lambda t: (t.shape, t.materialize())[1])(s)
    np.testing.assert_allclose(out, s.materialize())
    shapes = []
    jax.vmap(lambda t: shapes.append(t.shape))(s)
    assert shapes == [(2,)]


# -- dispatch --------------------------------------------------------------------------------

@qax.primitive_handler("sin")
def _sin_scaled(primitive, x: Scaled):
    return Scaled(jnp.sin(qax.materialize_value(x.x) * x.factor), factor=1.0)


@qax.primitive_handler("sin")
def _sin_scaled3(primitive, x: Scaled3):
    return NotImplemented  # declines: the Scaled handler runs next


@qax.primitive_handler("cos")
def _cos_scaled3(primitive, x: Scaled3):
    return NotImplemented  # declines and nothing else matches: materialize


@qax.primitive_handler("mul")
def _mul_scaled(primitive, s: Scaled, y: jax.Array, **params):
    return Scaled(s.x * y, factor=s.factor)


@qax.primitive_handler("mul")
def _mul_scaled_any(primitive, s: Scaled, y, **params):
    raise AssertionError("less specific than _mul_scaled for dense y")


@qax.primitive_handler("exp")
def _exp_fill(primitive, x: Fill):
    return jnp.full(x.shape, np.exp(x.value), x.dtype)


def test_handler_chosen_by_type_and_subclass():
    x = jnp.linspace(0, 1, 4)
    out, msgs = _record(qax.use_implicit_args(jnp.sin), Scaled(x))
    assert msgs == [] and isinstance(out, Scaled)
    np.testing.assert_allclose(out.materialize(), np.sin(2 * np.asarray(x)), rtol=1e-6)
    out, msgs = _record(qax.use_implicit_args(jnp.sin), Scaled3(x, factor=3.0))
    assert msgs == [] and isinstance(out, Scaled)  # subclass matched the Scaled handler after declining
    np.testing.assert_allclose(out.materialize(), np.sin(3 * np.asarray(x)), rtol=1e-6)


def test_not_implemented_falls_back_to_materialization():
    x = jnp.linspace(0, 1, 4)
    out, msgs = _record(qax.use_implicit_args(jnp.cos), Scaled3(x, factor=3.0))
    assert msgs == [MSG.format("cos", "Scaled3")]
    np.testing.assert_allclose(out, np.cos(3 * np.asarray(x)), rtol=1e-6)


def test_most_specific_wins_and_commutative_swap():
    x, y = jnp.arange(3.0), jnp.array([1.0, 2.0, 4.0])
    f = qax.use_implicit_args(lambda a, b: a * b)
    for args in [(Scaled(x), y), (y, Scaled(x))]:
        out, msgs = _record(f, *args)
        assert msgs == [] and isinstance(out, Scaled)
        np.testing.assert_allclose(out.materialize(), 2 * np.asarray(x) * np.asarray(y))


def test_non_commutative_op_is_not_swapped():
    x = jnp.arange(3.0)
    out, msgs = _record(qax.use_implicit_args(lambda a, b: a - b), x, Scaled(x))
    assert msgs == [MSG.format("sub", "Scaled")]
    np.testing.assert_allclose(out, -np.asarray(x))


def test_handler_with_wrong_shape_is_an_error():
    class Bad(Fill):
        pass

    @qax.primitive_handler("log")
    def _bad_log(primitive, x: Bad):
        return jnp.zeros((1,))

    with pytest.raises(TypeError, match=r"handler for log returned shape \(1,\).*produces \(2,\)"):
        qax.use_implicit_args(jnp.log)(Bad(shape=(2,)))


def test_unknown_primitive_name():
    with pytest.raises(ValueError, match="unknown primitive name 'not_a_primitive'"):
        qax.primitive_handler("not_a_primitive")


def test_default_handler_binds_dense_and_dispatches_implicit():
    from jax.extend.core.primitives import exp_p
    np.testing.assert_allclose(qax.default_handler(exp_p, jnp.zeros(2)), [1.0, 1.0])
    out, msgs = _record(lambda: qax.default_handler(exp_p, Fill(shape=(2,))))
    assert msgs == [] and np.allclose(out, np.exp(3.0))


# -- use_implicit_args ----------------------------------------------------------------------

def test_statics_pytrees_and_cache():
    calls = []

    def fn(params, x, n, act):
        calls.append(1)
        return {"y": act(x * params["s"]) * n, "tag": "kept"}

    f = qax.use_implicit_args(fn)
    p = {"s": Scaled(jnp.ones(3))}
    with pytest.warns(UserWarning, match="Primitive tanh was not handled by class Scaled"):
        out = f(p, jnp.arange(3.0), 2, jnp.tanh)  # Scaled has no tanh handler
    assert out["tag"] == "kept"
    np.testing.assert_allclose(out["y"], np.tanh(2 * np.arange(3.0)) * 2, rtol=1e-6)
    with pytest.warns(UserWarning, match="tanh"):
        f(p, jnp.arange(3.0) + 1, 2, jnp.tanh)
    assert len(calls) == 1  # same avals, same statics: cached jaxpr
    with pytest.warns(UserWarning, match="tanh"):
        f(p, jnp.arange(3.0), 3, jnp.tanh)
    assert len(calls) == 2


def test_jit_grad_vmap_of_children():
    w = jnp.array([1.0, -2.0, 0.5])
    f = qax.use_implicit_args(lambda s, x: jnp.sum(jnp.sin(x * s)))
    ref = lambda w, x: jnp.sum(jnp.sin(x * 2.0 * w))  # noqa: E731
    x = jnp.array([0.3, 0.2, 0.1])
    # Scaled has no sin/reduce_sum handlers: those uses materialize, with the warning
    with pytest.warns(UserWarning, match="was not handled by class Scaled"):
        np.testing.assert_allclose(jax.jit(f)(Scaled(w), x), ref(w, x), rtol=1e-6)
        g = jax.grad(f)(Scaled(w), x)
        assert isinstance(g, Scaled)
        np.testing.assert_allclose(g.x, jax.grad(ref)(w, x), rtol=1e-5)
        xs = jnp.stack([x, 2 * x])
        np.testing.assert_allclose(jax.vmap(f, in_axes=(None, 0))(Scaled(w), xs),
                                   jax.vmap(ref, (None, 0))(w, xs), rtol=1e-6)
        ws = jnp.stack([w, -w])
        np.testing.assert_allclose(jax.vmap(f, in_axes=(0, None))(Scaled(ws), x),
                                   jax.vmap(ref, (0, None))(ws, x), rtol=1e-6)


def test_closure_over_outer_tracer_under_jit():
    @jax.jit
    def outer(x, w):
        return qax.use_implicit_args(lambda s: s * x)(Scaled(w)).materialize()

    np.testing.assert_allclose(outer(jnp.arange(3.0), jnp.ones(3)), 2 * np.arange(3.0))
    np.testing.assert_allclose(outer(jnp.ones(3), jnp.ones(3)), 2 * np.ones(3))


def test_nested_implicit_inner_handlers_fire():
    inner = Fill(shape=(3,))
    outer = Scaled(inner, factor=2.0)
    out, msgs = _record(qax.use_implicit_args(jnp.sin), outer)
    # the Scaled handler materializes its child (no exp involved): value check only
    np.testing.assert_allclose(out.materialize(), np.sin(6.0 * np.ones(3)), rtol=1e-6)

    @dataclasses.dataclass
    class ExpOf(qax.ImplicitArray):
        x: qax.ArrayValue

        def materialize(self):
            return jnp.exp(qax.materialize_value(self.x))

    from jax.extend.core.primitives import exp_p

    @qax.primitive_handler("neg")
    def _neg_exp_of(primitive, v: ExpOf):
        return -qax.default_handler(exp_p, v.x)  # the Fill exp handler fires on the inner value

    out, msgs = _record(qax.use_implicit_args(lambda v: -v), ExpOf(Fill(shape=(2,))))
    assert msgs == []
    np.testing.assert_allclose(out, -np.exp(3.0) * np.ones(2), rtol=1e-6)


def test_subjaxprs_jit_and_custom_jvp():
    x = jnp.arange(3.0)
    f = qax.use_implicit_args(lambda s: jax.jit(jnp.sin)(s))
    out, msgs = _record(f, Scaled(x))
    assert msgs == [] and isinstance(out, Scaled)  # jit was inlined: the sin handler ran
    out, msgs = _record(qax.use_implicit_args(jax.nn.relu), Scaled(x - 1))
    assert msgs and all("so implicit args will be materialized" in m for m in msgs)
    np.testing.assert_allclose(out, np.maximum(2 * (np.arange(3.0) - 1), 0))


def test_loop_carry_changing_type_is_materialized():
    z = qax.Zeros(shape=(3,))
    x = jnp.arange(3.0)
    body = lambda c, _: (c + x, c)  # noqa: E731
    f = qax.use_implicit_args(lambda c: lax.scan(body, c, None, length=4))
    (carry, ys), msgs = _record(f, z)
    np.testing.assert_allclose(carry, 4 * np.arange(3.0))
    np.testing.assert_allclose(ys, np.arange(4.0)[:, None] * np.arange(3.0))
    assert MSG.format("scan", "Zeros") in msgs
    w = qax.use_implicit_args(lambda c: lax.while_loop(lambda c: c[0] < 5, lambda c: c + 1.0, c))
    out, msgs = _record(w, z)
    np.testing.assert_allclose(out, 5 * np.ones(3))
    assert MSG.format("while", "Zeros") in msgs


def test_cond_with_branches_of_different_types():
    z = qax.Zeros(shape=(3,))
    x = jnp.arange(3.0)
    f = qax.use_implicit_args(lambda p, z: lax.cond(p, lambda z: z * 2.0, lambda z: z + x, z))
    out, _ = _record(f, True, z)
    np.testing.assert_allclose(out, np.zeros(3))
    out, msgs = _record(f, False, z)
    np.testing.assert_allclose(out, np.arange(3.0))
    assert MSG.format("cond", "Zeros") in msgs
    same = qax.use_implicit_args(lambda p, z: lax.cond(p, lambda z: z * 2.0, lambda z: -z, z))
    out, msgs = _record(same, jnp.array(False), z)
    assert isinstance(out, qax.Zeros) and msgs == []


def test_operators_on_implicit_arrays():
    s = Scaled(jnp.arange(4.0))
    out, msgs = _record(lambda: (s + 1, s.reshape(2, 2), s.T, s[1:]))
    assert msgs[0] == MSG.format("add", "Scaled")
    for got, want in zip(out, (2 * np.arange(4.0) + 1, 2 * np.arange(4.0).reshape(2, 2), 2 * np.arange(4.0),
                               2 * np.arange(1.0, 4.0))):
        np.testing.assert_allclose(qax.materialize_value(got), want)
    assert isinstance(s * 3.0, Scaled)


def test_materialize_is_required():
    class NoDense(qax.ImplicitArray):
        pass

    with pytest.raises(TypeError, match="abstract method materialize"):
        NoDense(shape=(2,))


def test_optimization_barrier_keeps_implicit_values_implicit():
    """A barrier is an identity: implicit operands come out implicit (no materialization),
    their children and the dense operands go through it."""
    def fn(z, lw, x):
        z2, y = lax.optimization_barrier((z, x @ lw))
        return z2 + y, lax.optimization_barrier(lw)

    key = jax.random.key(0)
    lw = qax.LoraWeight(jax.random.normal(key, (4, 3)), jax.random.normal(key, (4, 2)), jnp.ones((3, 2)))
    x = jnp.arange(8.0).reshape(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, lw_out = jax.jit(qax.use_implicit_args(fn))(qax.Zeros(shape=(2, 3)), lw, x)
    np.testing.assert_allclose(out, x @ lw.materialize(), rtol=1e-5)
    assert isinstance(lw_out, qax.LoraWeight)
    np.testing.assert_allclose(lw_out.materialize(), lw.materialize())
