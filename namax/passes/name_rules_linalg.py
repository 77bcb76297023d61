"""Names-pass rules for linear algebra, FFTs, generic windows, linear solves and collectives.

Same contract as :mod:`namax.passes.name_rules`: a rule gets the interpreter, the equation
and each input's dimension nodes, and returns each output's nodes. Matrix primitives work
on the last two dims; every dim before them is a batch dim shared by all operands and
results. A collective inside ``shard_map`` changes a dim's local size, so the dim before
and after it is *linked* (same name, different size) rather than unified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jax.extend import core as jcore

from .name_rules import elementwise, keep_full_dims

if TYPE_CHECKING:
    from .names import NamesInterpreter


def _batch(it: "NamesInterpreter", eqn: jcore.JaxprEqn, x: tuple, matrix_dims: int = 2) -> list:
    """Fresh outputs whose leading (batch) dims are ``x``'s."""
    outs = [it.fresh(v.aval) for v in eqn.outvars]
    batch = x[: len(x) - matrix_dims]
    for out in outs:
        it.unify_dims(batch, out[: len(batch)])
    return outs


def triangular_solve(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``a x = b`` (or ``x a = b``): ``x`` is shaped like ``b``; the solved dim is one of ``a``'s.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True))(jnp.eye(3), jnp.ones((3, 2)))
    >>> infer(cj, [("row", "col"), (None, "rhs")]).out_names
    [('col', 'rhs')]
    """
    a, b = ins
    p = eqn.params
    [x] = _batch(it, eqn, b)
    it.unify_dims(a[:-2], b[:-2])
    a_rows, a_cols = (a[-1], a[-2]) if p["transpose_a"] else (a[-2], a[-1])
    if p["left_side"]:  # x[-2] runs over a's columns, b[-2] over its rows
        it.unify(x[-1], b[-1])
        it.unify(x[-2], a_cols)
        it.unify(b[-2], a_rows)
    else:  # x a = b: x[-1] runs over a's rows, b[-1] over its columns
        it.unify(x[-2], b[-2])
        it.unify(x[-1], a_rows)
        it.unify(b[-1], a_cols)
    return [x]


def lu(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``lu`` is shaped like ``a``; the permutation runs over ``a``'s rows; the pivots are new.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jax.lax.linalg.lu)(jnp.ones((2, 3, 3)))
    >>> infer(cj, [("batch", None, None)]).out_names
    [('batch', None, None), ('batch', None), ('batch', None)]
    """
    a = ins[0]
    factors, pivots, permutation = _batch(it, eqn, a)
    it.unify_dims(a, factors)
    it.unify(permutation[-1], a[-2])
    return [factors, pivots, permutation]


def qr(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``a = q r``: ``q``'s rows are ``a``'s, ``r``'s columns are ``a``'s, ``q`` and ``r`` share ``k``.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jnp.linalg.qr)(jnp.ones((2, 4, 3)))
    >>> infer(cj, [("batch", "row", "col")]).out_names
    [('batch', 'row', None), ('batch', None, 'col')]
    """
    a = ins[0]
    q, r = _batch(it, eqn, a)
    it.unify(q[-2], a[-2])
    it.unify(r[-1], a[-1])
    it.unify(q[-1], r[-2])
    return [q, r]


def eigh(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """Eigenvectors ``v`` (columns) run over ``a``'s rows; eigenvalue ``i`` goes with column ``i``.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jnp.linalg.eigh)(jnp.ones((2, 3, 3)))
    >>> infer(cj, [("batch", None, None)]).out_names
    [('batch', None), ('batch', None, None)]
    """
    a = ins[0]
    v, w = _batch(it, eqn, a)
    it.unify(v[-2], a[-2])
    it.unify(v[-1], w[-1])
    return [v, w]


def svd(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """``a = u diag(s) vt``: ``u``'s rows are ``a``'s, ``vt``'s columns are ``a``'s; ``s`` pairs with both.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jnp.linalg.svd)(jnp.ones((2, 4, 3)))
    >>> infer(cj, [("batch", "row", "col")]).out_names
    [('batch', 'row', None), ('batch', None), ('batch', None, 'col')]
    """
    a = ins[0]
    outs = _batch(it, eqn, a)
    if len(outs) == 3:
        s, u, vt = outs
        it.unify(u[-2], a[-2])
        it.unify(vt[-1], a[-1])
        it.unify(s[-1], u[-1])  # skipped (sizes differ) for full_matrices with m != n
        it.unify(s[-1], vt[-2])
    return outs


def custom_linear_solve(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """The solution has the axes of the right-hand side (the trailing operands).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> cj = jax.make_jaxpr(jnp.linalg.solve)(jnp.eye(3), jnp.ones((3, 2)))
    >>> infer(cj, [None, (None, "rhs")]).out_names
    [(None, 'rhs')]
    """
    n = len(eqn.outvars)
    return list(ins[len(ins) - n:])


def reduce_window(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """A generic ``reduce_window`` over ``n`` operands (then ``n`` init values): whole dims map through.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> win = lambda x: jax.lax.reduce_window(x, 0.0, lambda a, b: a + 2 * b, (1, 2), (1, 2), 'VALID')
    >>> cj = jax.make_jaxpr(win)(jnp.ones((2, 4)))
    >>> infer(cj, [("batch", "position")]).out_names
    [('batch', None)]
    """
    n = len(eqn.outvars)
    outs = []
    for i in range(n):
        sub = jcore.new_jaxpr_eqn(eqn.invars[i:i + 1], eqn.outvars[i:i + 1], eqn.primitive, eqn.params,
                                  eqn.effects, eqn.source_info)
        outs.extend(keep_full_dims(it, sub, [ins[i]]))
    return outs


def _linked(it: "NamesInterpreter", x: tuple, out: tuple) -> tuple:
    """``out`` dims unified with ``x``'s where the sizes agree and linked where they do not."""
    for a, b in zip(x, out):
        if it.size(a) == it.size(b):
            it.unify(a, b)
        else:
            it.link(a, b)
    return out


def _collective(dim_param: str, inserts: bool):
    """A gather (``inserts``: untiled adds a dim) or a scatter (untiled removes one) along ``dim_param``.

    Tiled, the dim grows or shrinks in place and is linked to the input's.

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
    >>> gather = lambda x: jax.lax.all_gather(x, "data", axis=1)  # untiled: a new dim at 1
    >>> f = jax.shard_map(gather, mesh=mesh, in_specs=jax.P("data"), out_specs=jax.P("data"), check_vma=False)
    >>> infer(jax.make_jaxpr(f)(jnp.ones((4, 3))), [("batch", "embed")]).out_names
    [('batch', None, 'embed')]
    """
    def rule(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
        x, (v,) = ins[0], eqn.outvars
        out = it.fresh(v.aval)
        if eqn.params["tiled"]:
            return [_linked(it, x, out)]
        d = eqn.params[dim_param]
        if inserts:
            it.unify_dims(x, out[:d] + out[d + 1:])
        else:
            it.unify_dims(x[:d] + x[d + 1:], out)
        return [out]

    rule.__name__ = "all_gather" if inserts else "reduce_scatter"
    return rule


all_gather = _collective("all_gather_dimension", inserts=True)
reduce_scatter = _collective("scatter_dimension", inserts=False)  # psum_scatter


def all_to_all(it: "NamesInterpreter", eqn: jcore.JaxprEqn, ins: list) -> list:
    """The split dim shrinks and the concatenated dim grows; each stays the same axis (linked).

    >>> import jax, jax.numpy as jnp; from namax.passes.names import infer
    >>> mesh = jax.sharding.Mesh(jax.devices()[:1], ('data',))
    >>> a2a = lambda x: jax.lax.all_to_all(x, 'data', 0, 1, tiled=True)
    >>> f = jax.shard_map(a2a, mesh=mesh, in_specs=jax.P('data'), out_specs=jax.P(None, 'data'))
    >>> cj = jax.make_jaxpr(f)(jnp.ones((4, 3)))
    >>> infer(cj, [("batch", "embed")]).out_names
    [('batch', 'embed')]
    """
    x, (v,) = ins[0], eqn.outvars
    out = it.fresh(v.aval)
    if len(x) == len(out):
        return [_linked(it, x, out)]
    return [out]


LINALG_RULES: dict = {
    "fft": elementwise,  # transformed dims keep their axis; an rfft's halved dim differs in size
    "cholesky": elementwise,
    "triangular_solve": triangular_solve,
    "lu": lu,
    "qr": qr,
    "eigh": eigh,
    "svd": svd,
    "custom_linear_solve": custom_linear_solve,
    "reduce_window": reduce_window,
    "all_gather": all_gather,
    "reduce_scatter": reduce_scatter,
    "all_to_all": all_to_all,
}
"""Primitive name -> rule, merged into :data:`namax.passes.name_rules.RULES`."""
