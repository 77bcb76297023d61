"""dot and einsum by name against np.einsum: axis orders, batch/free/contracted axes, grads, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import namax as nx
from namax import Axis, NamedArray

Batch, C1, C2, Fa, Fb = Axis("batch", 2), Axis("c1", 3), Axis("c2", 4), Axis("fa", 5), Axis("fb", 6)
LETTER = {"batch": "z", "c1": "c", "c2": "d", "fa": "a", "fb": "b", "head": "h"}


def rand(axes, seed=0):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(np.float32), axes)


def spec(axes) -> str:
    return "".join(LETTER[a.name] for a in axes)


def reference(arrays, out_axes):
    """np.einsum of the operands with each operand's own layout, producing ``out_axes``."""
    eq = ",".join(spec(x.axes) for x in arrays) + "->" + spec(out_axes)
    return np.einsum(eq, *(np.asarray(x.array, np.float64) for x in arrays))


def first_appearance(arrays, contracted):
    seen = {}
    for x in arrays:
        for a in x.axes:
            seen.setdefault(a.name, a)
    return tuple(a for n, a in seen.items() if n not in contracted)


@given(
    st.permutations([Batch, C1, C2, Fa]),
    st.permutations([Batch, C1, C2, Fb]),
    st.sampled_from([(C1,), (C2,), (C1, C2), (C2, C1)]),
    st.booleans(),
)
def test_two_operands_any_axis_order(order_a, order_b, contract, jit):
    a = rand(order_a, seed=1)
    b = rand(order_b, seed=2)
    fn = lambda x, y: nx.dot(x, y, axis=contract)
    out = jax.jit(fn)(a, b) if jit else fn(a, b)
    want_axes = first_appearance((a, b), {c.name for c in contract})
    assert isinstance(out, NamedArray) and out.axes == want_axes
    np.testing.assert_allclose(out.array, reference((a, b), want_axes), rtol=1e-4, atol=1e-5)


def test_matmul_form_and_names_as_strings():
    x, w = rand((Batch, C1)), rand((C1, Fa), seed=1)
    out = nx.dot(x, w, axis="c1")
    assert out.axes == (Batch, Fa)
    np.testing.assert_allclose(out.array, np.asarray(x.array) @ np.asarray(w.array), rtol=1e-5)
    np.testing.assert_allclose(x.dot(w, axis=C1).array, out.array)


def test_axis_first_form():
    q, k = rand((Batch, Fa, C1)), rand((Fb, C1), seed=1)
    out = nx.dot(C1, q, k)
    assert out.axes == (Batch, Fa, Fb)
    np.testing.assert_allclose(out.array, reference((q, k), out.axes), rtol=1e-5)
    np.testing.assert_allclose(nx.dot((C1,), q, k).array, out.array)
    outer = nx.dot((), rand((Fa,)), rand((Fb,), seed=1))
    assert outer.axes == (Fa, Fb)
    with pytest.raises(TypeError, match="both positionally"):
        nx.dot(C1, q, k, axis=C1)


def test_outer_product_with_empty_axis_tuple():
    a, b = rand((Batch, Fa)), rand((Fb, Batch), seed=1)
    out = nx.dot(a, b, axis=())
    assert out.axes == (Batch, Fa, Fb)  # shared batch axis is matched, not summed
    np.testing.assert_allclose(out.array, np.einsum("za,bz->zab", a.array, b.array), rtol=1e-5)


@pytest.mark.parametrize("axes_b", [(C1, Fa), (Fb, C2), (Batch,), (Fa, Batch, C1)], ids=str)
def test_full_contraction_with_axis_none(axes_b):
    a, b = rand((Batch, Fa, C1)), rand(axes_b, seed=1)
    out = nx.dot(a, b, axis=None)
    assert out.axes == ()
    np.testing.assert_allclose(out.array, reference((a, b), ()), rtol=1e-4)
    np.testing.assert_allclose(jax.jit(lambda x, y: nx.dot(x, y, axis=None))(a, b).array, out.array, rtol=1e-5)


@given(st.permutations([Batch, C1, Fa]), st.permutations([C1, C2]), st.permutations([C2, Fb, Batch]))
def test_three_operands(oa, ob, oc):
    a, b, c = rand(oa), rand(ob, seed=1), rand(oc, seed=2)
    out = nx.dot(a, b, c, axis=(C1, C2))
    want = first_appearance((a, b, c), {"c1", "c2"})
    assert out.axes == want
    np.testing.assert_allclose(out.array, reference((a, b, c), want), rtol=1e-4, atol=1e-5)


def test_single_operand_sums_and_four_operands():
    a = rand((Batch, C1))
    np.testing.assert_allclose(nx.dot(a, axis=C1).array, np.sum(a.array, axis=1), rtol=1e-6)
    ops = [rand((Batch, C1)), rand((C1, C2), seed=1), rand((C2, Fa), seed=2), rand((Fa, Batch), seed=3)]
    out = nx.dot(*ops, axis=(C1, C2, Fa))
    assert out.axes == (Batch,)
    np.testing.assert_allclose(out.array, reference(ops, (Batch,)), rtol=1e-4)


def test_preferred_element_type():
    a = nx.named(jnp.ones((2, 3), jnp.int8), (Batch, C1))
    b = nx.named(jnp.full((3, 5), 100, jnp.int8), (C1, Fa))
    out = nx.dot(a, b, axis=C1, preferred_element_type=jnp.int32)
    assert out.dtype == jnp.int32 and int(out.array[0, 0]) == 300


def test_dot_gradients_match_einsum():
    a, b = rand((C1, Batch, Fa)), rand((Fb, C1, Batch), seed=1)

    def named_loss(x, y):
        return nx.sum(nx.tanh(nx.dot(x, y, axis=C1))).array

    def plain_loss(x, y):
        return jnp.sum(jnp.tanh(jnp.einsum("cza,bcz->zab", x, y)))

    ga, gb = jax.jit(jax.grad(named_loss, argnums=(0, 1)))(a, b)
    ra, rb = jax.grad(plain_loss, argnums=(0, 1))(a.array, b.array)
    assert ga.axes == a.axes and gb.axes == b.axes
    np.testing.assert_allclose(ga.array, ra, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb.array, rb, rtol=1e-5, atol=1e-6)
    c = rand((C2, Fa), seed=2)
    g3 = jax.grad(lambda x: nx.sum(nx.dot(x, b, c, axis=(C1, Fa))).array)(a)
    r3 = jax.grad(lambda x: jnp.sum(jnp.einsum("cza,bcz,da->zbd", x, b.array, c.array)))(a.array)
    np.testing.assert_allclose(g3.array, r3, rtol=1e-5, atol=1e-6)


def test_dot_errors():
    a, b = rand((Batch, C1)), rand((C1, Fa), seed=1)
    with pytest.raises(ValueError, match=r"contracted axis 'batch' is only in operand 0 \(batch:2, c1:3\)"):
        nx.dot(a, b, axis=Batch)
    with pytest.raises(ValueError, match=r"contracted axis 'head' is in none of the operands"):
        nx.dot(a, b, axis="head")
    with pytest.raises(ValueError, match=r"Axis 'c1' has size 3 .* size 4"):
        nx.dot(a, rand((C1.resize(4),)), axis=C1)
    with pytest.raises(ValueError, match=r"'c1' has size 3 in the array but 7 was given"):
        nx.dot(a, b, axis=C1.resize(7))
    with pytest.raises(ValueError, match=r"contracted twice"):
        nx.dot(a, b, axis=(C1, "c1"))
    with pytest.raises(TypeError, match=r"operand 1 is a ArrayImpl, not a NamedArray"):
        nx.dot(a, b.array, axis=C1)
    with pytest.raises(TypeError, match=r"operand 0 is a ArrayImpl"):
        nx.dot(a.array, b, axis=C1)
    with pytest.raises(TypeError, match="at least one NamedArray"):
        nx.dot(axis=C1)


# --- einsum -------------------------------------------------------------------------------


def test_einsum_with_names_any_operand_order():
    # the operands hold c1 at different positions; each spec follows its array's own order
    x, w = rand((C1, Batch)), rand((Fa, C1), seed=1)
    want = np.einsum("cz,ac->az", x.array, w.array)
    out = nx.einsum("c1 batch, fa c1 -> fa batch", x, w)
    assert out.axes == (Fa, Batch)
    np.testing.assert_allclose(out.array, want, rtol=1e-5)
    jitted = jax.jit(lambda p, q: nx.einsum("c1 batch, fa c1 -> fa batch", p, q))(x, w)
    np.testing.assert_allclose(jitted.array, out.array, rtol=1e-6)
    # labels are positional: any words do, and the result has the axes they stand for
    out = nx.einsum("k n, m k -> m n", x, w)
    assert out.axes == (Fa, Batch)
    np.testing.assert_allclose(out.array, want, rtol=1e-5)
    # the spec does not reorder an array: real names in another array's order are an error
    with pytest.raises(ValueError, match=r"label 'batch' is bound to axis 'c1' \(size 3\) by position; "
                                         r"use the unordered form \{\.\.\.\} to match by name"):
        nx.einsum("batch c1, fa c1 -> fa batch", x, w)
    # matched by name instead, in either operand order
    for eq in ("{c1} -> fa batch", "-> fa batch"):
        np.testing.assert_allclose(nx.einsum(eq, x, w).array, want, rtol=1e-5)
        np.testing.assert_allclose(nx.einsum(eq, w, x).array, want, rtol=1e-5)


def test_einsum_implicit_output_keeps_axes_in_one_operand():
    x, w = rand((Batch, C1)), rand((C1, Fa), seed=1)
    out = nx.einsum("batch c1, c1 fa", x, w)
    assert out.axes == (Batch, Fa)
    np.testing.assert_allclose(out.array, np.einsum("zc,ca->za", x.array, w.array), rtol=1e-5)


def test_einsum_ellipsis():
    x, w = rand((Batch, Fb, C1)), rand((C1, Fa), seed=1)
    out = nx.einsum("... c1, c1 fa -> ... fa", x, w)
    assert out.axes == (Batch, Fb, Fa)
    np.testing.assert_allclose(out.array, np.einsum("zbc,ca->zba", x.array, w.array), rtol=1e-5)
    summed = nx.einsum("..., c1 fa -> ...", x, w)  # mentioned axes missing from the output are summed
    assert summed.axes == (Batch, Fb)
    np.testing.assert_allclose(summed.array, np.einsum("zbc,ca->zb", x.array, w.array), rtol=1e-4)


def test_einsum_gradient():
    x, w = rand((Batch, C1)), rand((C1, Fa), seed=1)
    g = jax.grad(lambda p: nx.sum(nx.einsum("batch c1, c1 fa -> batch fa", p, w) ** 2).array)(x)
    r = jax.grad(lambda p: jnp.sum((p @ w.array) ** 2))(x.array)
    np.testing.assert_allclose(g.array, r, rtol=1e-5)


def test_einsum_errors():
    x, w = rand((Batch, C1)), rand((C1, Fa), seed=1)
    with pytest.raises(ValueError, match="2 operand specs for 1 arrays"):
        nx.einsum("batch c1, c1 fa -> batch fa", x)
    with pytest.raises(ValueError, match=r"label 'batch' is bound to axis 'fa' \(size 5\) by position"):
        nx.einsum("batch c1, c1 batch -> batch", x, w)
    with pytest.raises(ValueError, match=r"label 'h' is bound to two axes: 'c1' \(size 3\) as operand 0's "
                                         r"axis 1, and 'fa' \(size 5\) as operand 1's axis 1 here"):
        nx.einsum("b h, c1 h -> b", x, w)
    with pytest.raises(ValueError, match=r"operand 0 spec 'c1' has 1 label but the array has 2 axes"):
        nx.einsum("c1, c1 fa -> fa", x, w)
    with pytest.raises(ValueError, match="output label 'head' stands for no axis"):
        nx.einsum("batch c1, c1 fa -> head", x, w)
    with pytest.raises(ValueError, match=r"Axis 'c1' has size 3 .* size 4"):
        nx.einsum("batch c1, c1 -> batch", x, rand((C1.resize(4),)))
    with pytest.raises(TypeError, match="operand 1 is a ArrayImpl"):
        nx.einsum("batch c1, c1 fa -> batch fa", x, w.array)
    with pytest.raises(ValueError, match=r"operand 0 spec 'c1 c1' uses the label 'c1' twice"):
        nx.einsum("c1 c1, c1 fa -> fa", x, w)
    with pytest.raises(ValueError, match=r"output 'fa fa' names an axis twice"):
        nx.einsum("batch c1, c1 fa -> fa fa", x, w)
