"""The shared jaxpr interpreter: faithful evaluation at every depth, rules applied inside sub-jaxprs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import primitives as P

from namax.interpreter import EvalInterpreter, Interpreter, map_subjaxprs


@jax.custom_jvp
def soft_sign(y):
    return y / (1 + jnp.abs(y))


soft_sign.defjvp(lambda p, t: (soft_sign(p[0]), t[0] / (1 + jnp.abs(p[0])) ** 2))


@jax.custom_vjp
def clip_grad(y):
    return y


clip_grad.defvjp(lambda y: (y, None), lambda _, g: (jnp.clip(g, -0.1, 0.1),))


def differentiable(x, w):
    """jit, scan, remat, cond, custom_jvp, custom_vjp: every differentiable sub-jaxpr kind."""

    def body(c, _):
        return jax.checkpoint(lambda c: jnp.tanh(c @ w))(c), None

    y = jax.lax.scan(body, x, None, length=3)[0]
    y = jax.lax.cond(jnp.sum(y) > 0, lambda y: y @ w, lambda y: -y, y)
    y = jax.lax.fori_loop(0, 2, lambda i, c: c @ w * 0.5, y)  # static bounds: a scan
    return jnp.sum(clip_grad(soft_sign(jax.jit(lambda y: y @ w)(y))))


def nested(x, w):
    """Every kind of sub-jaxpr, a while loop included."""
    _, y = jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ w * 0.9), (0, x))
    return differentiable(y, w)


X = jnp.linspace(-0.5, 0.5, 8).reshape(2, 4)
W = jnp.eye(4) * 0.9 + 0.05


def count_dots(closed) -> int:
    """dot_general eqns at every depth."""
    n = 0
    for eqn in closed.jaxpr.eqns:
        n += eqn.primitive is P.dot_general_p
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            n += count_dots(jax.extend.core.ClosedJaxpr(sub, ()))
    return n


def test_identity_evaluation_matches_original():
    closed = jax.make_jaxpr(nested)(X, W)
    it = EvalInterpreter()
    np.testing.assert_allclose(it.run(closed, X, W)[0], nested(X, W), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda x, w: it.run(closed, x, w)[0])(X, W), nested(X, W), rtol=1e-6)


def test_gradients_through_every_sub_jaxpr_kind():
    closed = jax.make_jaxpr(differentiable)(X, W)
    rules = {P.dot_general_p: lambda it, eqn, ins: [P.dot_general_p.bind(*ins, **eqn.params)]}
    it = EvalInterpreter(rules)
    f = lambda x, w: it.run(closed, x, w)[0]
    for got, want in zip(jax.grad(f, (0, 1))(X, W), jax.grad(differentiable, (0, 1))(X, W)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_rules_reach_every_depth():
    closed = jax.make_jaxpr(nested)(X, W)
    seen = []

    def dot_rule(it, eqn, ins):
        seen.append(eqn)
        return [2.0 * P.dot_general_p.bind(*ins, **eqn.params)]

    rewritten = jax.make_jaxpr(lambda x, w: EvalInterpreter({P.dot_general_p: dot_rule}).run(closed, x, w))(X, W)
    # every dot in the rewritten program is followed by the doubling multiply, at every depth
    assert count_dots(rewritten) == count_dots(closed) >= 5  # while, scan, cond, fori, jit
    assert len(seen) >= count_dots(closed)
    assert not np.allclose(EvalInterpreter({P.dot_general_p: dot_rule}).run(closed, X, W)[0], nested(X, W))


def test_rule_by_primitive_name_and_abstract_domain():
    closed = jax.make_jaxpr(lambda x: jnp.sin(x) * 2 + 1)(1.0)
    names = Interpreter(default=lambda it, eqn, ins: [eqn.primitive.name] * len(eqn.outvars))
    assert names.run(closed, "x") == ["add"]
    doubled = EvalInterpreter({"sin": lambda it, eqn, ins: [jnp.cos(ins[0])]})
    np.testing.assert_allclose(doubled.run(closed, 0.3)[0], jnp.cos(0.3) * 2 + 1)


def test_wrong_arity_is_reported():
    closed = jax.make_jaxpr(lambda x, y: x + y)(1.0, 2.0)
    with pytest.raises(TypeError, match="takes 2 arguments, got 1"):
        EvalInterpreter().run(closed, 1.0)
    bad = Interpreter(default=lambda it, eqn, ins: [])
    with pytest.raises(RuntimeError, match="rule for add returned 0 values for 1 outputs"):
        bad.run(closed, 1.0, 2.0)


def test_map_subjaxprs_keeps_non_jaxpr_params():
    closed = jax.make_jaxpr(lambda x: jax.lax.cond(x > 0, jnp.sin, jnp.cos, x))(1.0)
    eqn = next(e for e in closed.jaxpr.eqns if e.primitive.name == "cond")
    calls = []
    new = map_subjaxprs(eqn.params, lambda cj: calls.append(cj) or cj)
    assert len(calls) == 2 and isinstance(new["branches"], tuple)
    assert {k for k in new} == {k for k in eqn.params}


def test_shard_map_with_collectives_is_reentered():
    mesh = jax.make_mesh((4,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    f = jax.shard_map(lambda a: jax.lax.psum(a * 2, "d"), mesh=mesh, in_specs=jax.P("d"), out_specs=jax.P())
    x = jnp.arange(8.0)
    closed = jax.make_jaxpr(f)(x)
    rules = {"mul": lambda it, eqn, ins: [P.mul_p.bind(*ins) * 1.0]}
    np.testing.assert_allclose(EvalInterpreter(rules).run(closed, x)[0], f(x))


def test_missing_rule_without_default_is_a_clear_error():
    closed = jax.make_jaxpr(lambda x: jnp.sin(x))(1.0)
    with pytest.raises(LookupError, match="Interpreter has no rule for primitive sin and no default rule"):
        Interpreter().run(closed, 1.0)
