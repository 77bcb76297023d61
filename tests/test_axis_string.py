"""The axis-string syntax: einsum in every mode and rearrange strings, against jnp references."""

import re
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.sharding import PartitionSpec as P

import namax as nx
from namax import Axis
from namax.ops.axis_string import AxisName, AxisStringError, Group, Rest, parse_einsum, parse_rearrange

B, H, W, C, E = Axis("b", 2), Axis("h", 3), Axis("w", 4), Axis("c", 5), Axis("e", 6)


def rand(axes, seed=0, dtype=np.float32):
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(dtype), axes)


def letters(*groups):
    """jnp.einsum subscripts for axis groups: one letter per axis name."""
    table = {}
    pool = iter(string.ascii_lowercase)
    return ["".join(table.setdefault(a.name, next(pool)) for a in g) for g in groups]


def ref_einsum(arrays, out_axes, lib=jnp):
    *ins, out = letters(*(a.axes for a in arrays), out_axes)
    return lib.einsum(",".join(ins) + "->" + out, *(lib.asarray(a.array) for a in arrays))


def caret_column(message: str) -> int:
    """The 0-based position of the caret line's first '^' within the quoted string."""
    lines = message.splitlines()
    return lines[2].index("^") - 4


def tagged_names(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"]


def n_dots(fn, *args):
    return sum(e.primitive.name == "dot_general" for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns)


# --- the parser ----------------------------------------------------------------------------


def test_parse_result_dataclasses():
    spec = parse_rearrange("{b (hw: h w)} -> ... 'kv-head' (x: b h)")
    assert spec.lhs.unordered and not spec.rhs.unordered
    assert spec.lhs.items[0] == AxisName("b", 1, 2)
    group = spec.lhs.items[1]
    assert isinstance(group, Group) and group.name.name == "hw" and [p.name for p in group.parts] == ["h", "w"]
    assert spec.text[group.start:group.end] == "(hw: h w)"
    assert isinstance(spec.rhs.items[0], Rest) and spec.rhs.rest is spec.rhs.items[0]
    assert spec.rhs.items[1].name == "kv-head"  # quoted: any text
    e = parse_einsum("b h, h e")
    assert e.output is None and [[i.name for i in s.items] for s in e.operands] == [["b", "h"], ["h", "e"]]
    assert parse_einsum("-> a").operands[0].items == ()


@given(st.lists(st.sampled_from(["a", "bb", "c_1", "_d", "...", "Ev"]), max_size=6),
       st.sampled_from([" ", "  ", "\t"]))
def test_parsed_names_point_at_their_text(words, sep):
    if words.count("...") > 1:
        words = [w for w in words if w != "..."] + ["..."]
    text = sep.join(words) + " -> " + sep.join(w for w in words if w != "...")
    spec = parse_rearrange(text)
    assert [text[i.start:i.end] for i in spec.lhs.items] == words
    assert all(text[i.start:i.end] == i.name for i in spec.rhs.items)


PARSE_ERRORS = [
    (parse_einsum, "b h w c) -> b", r"unexpected '\)' at column 8", 7),
    (parse_rearrange, "b h -> (x: a", r"this '\(' is never closed at column 8", 7),
    (parse_rearrange, "{h w -> ...", r"this '\{' is never closed at column 1", 0),
    (parse_einsum, "b 1x -> b", r"unexpected '1': axis names start with a letter", 2),
    (parse_einsum, "a . b -> a", r"unexpected '\.' \(an ellipsis is three dots", 2),
    (parse_einsum, "a - b", r"unexpected '-' \(the arrow is '->'\)", 2),
    (parse_einsum, "a ... ... -> a", r"a second '\.\.\.' \(the first is at column 3\)", 6),
    (parse_einsum, "a b -> c -> d", r"unexpected '->' \(an equation has one '->'\)", 9),
    (parse_rearrange, "(x: (y)) -> x", r"unexpected '\(' \(groups cannot nest\)", 4),
    (parse_rearrange, "(x: a ...) -> x", r"'\.\.\.' cannot be inside a group", 6),
    (parse_rearrange, "{a} b -> b", r"unexpected 'b' \(braces enclose a whole side\)", 4),
    (parse_rearrange, "a {b} -> b", r"unexpected '\{' \(braces enclose a whole side\)", 2),
    (parse_einsum, "{a}, {b} -> a", r"an unordered '\{\.\.\.\}' left side stands alone", 0),
    (parse_einsum, "(x: a b) -> x", r"einsum takes axis names, not groups", 0),
    (parse_einsum, "a -> {a}", r"the output cannot be unordered", 5),
    (parse_rearrange, "a b c", r"expected '->' at column 6", 5),
    (parse_rearrange, "a, b -> a", r"unexpected ',' \(expected '->'\)", 1),
    (parse_rearrange, "a -> {a}", r"no braces", 5),
    (parse_rearrange, "'kv-head -> a", r"the quote ' is never closed", 0),
    (parse_rearrange, "a () -> a", r"a group needs at least one axis", 2),
    (parse_rearrange, "(a b: c) -> c", r"':' comes after exactly one name", 4),
    (parse_rearrange, "a } -> a", r"unexpected '\}'", 2),
    (parse_einsum, "a @ b", r"unexpected '@'", 2),
]


@pytest.mark.parametrize("parse, text, message, column", PARSE_ERRORS)
def test_parse_errors_point_at_the_character(parse, text, message, column):
    with pytest.raises(AxisStringError, match=message) as info:
        parse(text)
    msg = str(info.value)
    assert msg.splitlines()[1] == "    " + text
    assert caret_column(msg) == column
    assert info.value.start == column


def test_parse_errors_are_value_errors_and_type_checked():
    assert issubclass(AxisStringError, ValueError)
    with pytest.raises(TypeError, match="equation must be a str"):
        parse_einsum(["a"])
    with pytest.raises(TypeError, match="expression must be a str"):
        parse_rearrange(3)


def test_comma_inside_braces_separates_names():
    assert [i.name for i in parse_einsum("{a, b} -> a").operands[0].items] == ["a", "b"]


# --- einsum: ordered ------------------------------------------------------------------------


@settings(max_examples=10)  # each example compiles its own dot_general
@given(st.permutations([B, H, C, E]), st.permutations([C, E, W]), st.sets(st.sampled_from(["c", "e"])),
       st.randoms(use_true_random=False))
def test_einsum_ordered_any_layout(x_axes, w_axes, contract, rnd):
    x, w = rand(x_axes), rand(w_axes, 1)
    kept = [a for a in (B, H, C, E, W) if a.name not in contract]
    rnd.shuffle(kept)
    # labels are positional: the axes' own names, or any other words, give the same result
    for label in ({a.name: a.name for a in (B, H, W, C, E)}, {"b": "n", "h": "rows", "w": "cols", "c": "k", "e": "o"}):
        eq = (f"{' '.join(label[a.name] for a in x_axes)}, {' '.join(label[a.name] for a in w_axes)} -> "
              f"{' '.join(label[a.name] for a in kept)}")
        out = nx.einsum(eq, x, w)
        assert out.axes == tuple(kept), eq
        np.testing.assert_allclose(out.array, ref_einsum([x, w], kept, np), rtol=1e-4, atol=1e-4, err_msg=eq)


def test_einsum_ordered_jit_and_tags_and_one_dot():
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    f = lambda x, k: nx.einsum("b h w c, c e -> b h w e", x, k)
    out = jax.jit(f)(x, k)
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->bhwe", x.array, k.array), rtol=1e-5)
    assert ("b", "h", "w", "e") in tagged_names(f, x, k)
    assert n_dots(lambda x, k: f(x, k).array, x, k) == 1


def test_einsum_ordered_ellipsis():
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    out = nx.einsum("... c, c e -> ... e", x, k)
    assert out.axis_names == ("b", "h", "w", "e")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->bhwe", x.array, k.array), rtol=1e-5)
    # ... in the middle; and a name after ... in the output
    out = nx.einsum("b ... c, c e -> e ... b", x, k)
    assert out.axis_names == ("e", "h", "w", "b")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->ehwb", x.array, k.array), rtol=1e-5)
    # axes under ... and not in the output are summed (an output label must be bound on the left)
    out = nx.einsum("b ... w c, c e -> w", x, k)
    assert out.axis_names == ("w",)
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->w", x.array, k.array), rtol=1e-4)
    out = nx.einsum("b ..., c e -> b ...", x, k)  # c is labelled in k: summed, not under the output's ...
    assert out.axis_names == ("b", "h", "w")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->bhw", x.array, k.array), rtol=1e-4)
    # ... in both operands matches axes by name
    y = rand((W, H, C), 2)
    out = nx.einsum("b ... c, ... c -> ...", x, y)
    assert out.axis_names == ("h", "w")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,whc->hw", x.array, y.array), rtol=1e-4)


def test_einsum_ordered_one_and_three_operands_and_implicit_output():
    x, k, y = rand((B, H, W, C)), rand((C, E), 1), rand((W, H, C), 2)
    out = nx.einsum("b h w c -> c b", x)
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc->cb", x.array), rtol=1e-5)
    out = nx.einsum("b h w c, c e, w h c -> e b", x, k, y)
    assert out.axis_names == ("e", "b")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce,whc->eb", x.array, k.array, y.array), rtol=1e-4)
    out = nx.einsum("b h w c, c e", x, k)  # no '->': the axes in exactly one operand
    assert out.axis_names == ("b", "h", "w", "e")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->bhwe", x.array, k.array), rtol=1e-5)


Hc, Wc, Dc = Axis("H", 2), Axis("W", 3), Axis("D", 4)  # capitalised names, lower-case labels


def test_einsum_ordered_labels_are_positional_haliax_cases():
    x, b, y, z = rand((Hc, Wc, Dc)), rand((Dc, Wc, Hc), 1), rand((Dc,), 2), rand((Dc, Wc), 3)
    xr, br, yr, zr = x.array, b.array, y.array, z.array
    out = nx.einsum("h w d, d w h -> h w", x, b)  # Haliax's docstring example
    assert out.axes == (Hc, Wc)
    np.testing.assert_allclose(out.array, jnp.einsum("hwd,dwh->hw", xr, br), rtol=1e-4, atol=1e-5)
    # 'e' stands for D, y's axis 0, but is its own dim (a letter of jnp.einsum, as in Haliax):
    # d and e are summed separately
    out = nx.einsum("h w d, e -> h w", x, y)
    assert out.axes == (Hc, Wc)
    np.testing.assert_allclose(out.array, jnp.einsum("hwd,e->hw", xr, yr), rtol=1e-4, atol=1e-5)
    assert not np.allclose(out.array, jnp.einsum("hwd,d->hw", xr, yr), rtol=1e-4, atol=1e-5)
    out = nx.einsum("h w d, d w -> h", x, z)
    assert out.axes == (Hc,)
    np.testing.assert_allclose(out.array, jnp.einsum("hwd,dw->h", xr, zr), rtol=1e-4, atol=1e-5)
    # either of two labels for one axis names it in the output; the other is summed
    for eq, ref in (("h w d, e -> h w e", "hwd,e->hwe"), ("h w d, e -> h w d", "hwd,e->hwd"),
                    ("h w d, d -> h w d", "hwd,d->hwd")):
        out = nx.einsum(eq, x, y)
        assert out.axes == (Hc, Wc, Dc), eq
        np.testing.assert_allclose(out.array, jnp.einsum(ref, xr, yr), rtol=1e-4, atol=1e-4, err_msg=eq)
    with pytest.raises(ValueError, match=r"names an axis twice \('D'\)"):
        nx.einsum("h w d, e -> h w d e", x, y)
    # ... stands for the axes no label stands for, matched by name across operands
    out = nx.einsum("... d, d -> ...", x, y)
    assert out.axes == (Hc, Wc)
    np.testing.assert_allclose(out.array, jnp.einsum("hwd,d->hw", xr, yr), rtol=1e-4, atol=1e-5)
    out = nx.einsum("h ... d, d ... -> ... h", x, z)  # W under both ...'s
    assert out.axes == (Wc, Hc)
    np.testing.assert_allclose(out.array, jnp.einsum("hwd,dw->wh", xr, zr), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"axis 'D' is under '\.\.\.' in operand 0 but labelled 'd' elsewhere"):
        nx.einsum("h ..., d ... -> ... h", x, z)
    # no '->': the axes in exactly one operand
    out = nx.einsum("h w d, d", x, y)
    assert out.axes == (Hc, Wc)
    np.testing.assert_allclose(out.array, jnp.einsum("hwd,d->hw", xr, yr), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"one of them twice .* write the output after '->'"):
        nx.einsum("h w d, e", x, y)  # d and e are both kept, and both stand for D
    # jit, and still one dot_general
    f = lambda p, q: nx.einsum("h w d, d w h -> h w", p, q)
    np.testing.assert_allclose(jax.jit(f)(x, b).array, jnp.einsum("hwd,dwh->hw", xr, br), rtol=1e-4, atol=1e-5)
    assert n_dots(lambda p, q: f(p, q).array, x, b) == 1


def test_einsum_ordered_label_bound_to_two_axes_is_an_error():
    x, z = rand((Hc, Wc, Dc)), rand((Dc, Wc), 1)
    eq = "h w d, w d -> h"
    with pytest.raises(AxisStringError, match=r"label 'w' is bound to two axes: 'W' \(size 3\) as operand 0's "
                                              r"axis 1, and 'D' \(size 4\) as operand 1's axis 0 here") as info:
        nx.einsum(eq, x, z)
    assert caret_column(str(info.value)) == 7 == info.value.start  # the second operand's 'w', as Haliax
    assert str(info.value).splitlines()[1] == "    " + eq


def test_einsum_ordered_label_that_is_another_axis_name_is_an_error():
    x, y = rand((Hc, Wc, Dc)), rand((Dc,), 1)
    with pytest.raises(AxisStringError, match=r"label 'W' is bound to axis 'H' \(size 2\) by position; use the "
                                              r"unordered form \{\.\.\.\} to match by name") as info:
        nx.einsum("W H D, D -> W", x, y)
    assert caret_column(str(info.value)) == 0
    # the label matching its own axis's name is fine; so is matching by name in braces
    np.testing.assert_allclose(nx.einsum("H W D, D -> W H", x, y).array,
                               jnp.einsum("hwd,d->wh", x.array, y.array), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nx.einsum("{D} -> W H", x, y).array,
                               jnp.einsum("hwd,d->wh", x.array, y.array), rtol=1e-4, atol=1e-5)


def test_einsum_ordered_aliases_prebind_labels():
    x, z = rand((Hc, Wc, Dc)), rand((Dc, Wc), 1)
    want = jnp.einsum("hwd,dw->h", x.array, z.array)
    for alias in (Hc, "H"):
        out = nx.einsum("x w d, d w -> x", x, z, x=alias)
        assert out.axes == (Hc,)
        np.testing.assert_allclose(out.array, want, rtol=1e-4, atol=1e-5)
    out = nx.einsum("h w d, d w -> y", x, z, y=Hc)  # an alias used only in the output
    np.testing.assert_allclose(out.array, want, rtol=1e-4, atol=1e-5)
    eq = "x w d, d w -> x"
    with pytest.raises(AxisStringError, match=r"label 'x' is the alias x='W' but is bound to axis 'H' \(size 2\) "
                                              r"by position \(operand 0's axis 0\)") as info:
        nx.einsum(eq, x, z, x=Wc)
    assert caret_column(str(info.value)) == 0
    with pytest.raises(AxisStringError, match=r"label 'w' is the alias w='W' but is bound to axis 'D' \(size 4\) "
                                              r"by position \(operand 1's axis 0\)") as info:
        nx.einsum("h w d, w d -> h", x, z, w="W")
    assert caret_column(str(info.value)) == 7
    with pytest.raises(AxisStringError, match=r"alias x=Axis\('H', 5\) has size 5 but the operands' axis 'H' "
                                              r"has size 2"):
        nx.einsum(eq, x, z, x=Hc.resize(5))


# --- einsum: unordered and output-only ------------------------------------------------------


@settings(max_examples=10)
@given(st.permutations([B, H, W, C]), st.permutations([C, E]))
def test_einsum_unordered_any_layout(x_axes, k_axes):
    x, k = rand(x_axes), rand(k_axes, 1)
    out = nx.einsum("{c} ->", x, k)
    kept = [a for a in x_axes if a.name != "c"] + [E]
    assert out.axes == tuple(kept)
    np.testing.assert_allclose(out.array, ref_einsum([x, k], kept, np), rtol=1e-4, atol=1e-4)
    out = nx.einsum("{h w} -> ...", x, k)  # h, w summed (elementwise in c), every other axis kept
    kept = [a for a in x_axes if a.name not in "hw"] + [E]
    assert out.axes == tuple(kept)
    np.testing.assert_allclose(out.array, ref_einsum([x, k], kept, np), rtol=1e-4, atol=1e-4)


def test_einsum_unordered_forms():
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    cases = {
        "{c}": ("b", "h", "w", "e"),  # no '->' is the same as '{c} ->'
        "{c} -> b": ("h", "w", "e", "b"),  # output names go last, in their order
        "{h w c} -> e b": ("e", "b"),
        "{b ...} -> b": ("b",),  # '...' inside braces: every axis takes part
        "{b ...} -> ...": ("h", "w", "c", "e"),
        "{...} ->": (),
        "{c} -> e ...": ("e", "b", "h", "w"),
    }
    for eq, names in cases.items():
        out = nx.einsum(eq, x, k)
        assert out.axis_names == names, eq
        np.testing.assert_allclose(out.array, ref_einsum([x, k], out.axes), rtol=1e-4, atol=1e-4, err_msg=eq)
        assert n_dots(lambda x, k: nx.einsum(eq, x, k).array, x, k) == 1


def test_einsum_output_only():
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    out = nx.einsum("-> b h w e", x, k)
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->bhwe", x.array, k.array), rtol=1e-5)
    out = nx.einsum("-> e ...", x, k)  # '...': every axis the output does not name
    assert out.axis_names == ("e", "b", "h", "w", "c")
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->ebhwc", x.array, k.array), rtol=1e-5)
    assert nx.einsum("->", x).axes == ()
    np.testing.assert_allclose(nx.einsum("->", x).array, jnp.sum(x.array), rtol=1e-4)


def test_einsum_axis_aliases():
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    want = jnp.einsum("bhwc,ce->bhwe", x.array, k.array)
    np.testing.assert_allclose(nx.einsum("b h w ch, ch e -> b h w e", x, k, ch=C).array, want, rtol=1e-5)
    np.testing.assert_allclose(nx.einsum("{x} -> ...", x, k, x="c").array, want, rtol=1e-5)
    np.testing.assert_allclose(nx.einsum("-> b h w out", x, k, out=E).array, want, rtol=1e-5)
    with pytest.raises(ValueError, match=r"alias ch=Axis\('c', 7\) has size 7 but the operands' axis 'c' has size 5"):
        nx.einsum("b h w ch, ch e -> b h w e", x, k, ch=Axis("c", 7))
    with pytest.raises(ValueError, match=r"axis alias y not used in the equation"):
        nx.einsum("{x} ->", x, k, x="c", y="e")
    with pytest.raises(TypeError, match=r"axis alias precison=.* must be an Axis or an axis name"):
        nx.einsum("{c} ->", x, k, precison=jax.lax.Precision.HIGHEST)
    with pytest.raises(ValueError, match=r"alias precison not used .* other than precision, .* are axis aliases"):
        nx.einsum("{c} ->", x, k, precison="highest")
    with pytest.raises(ValueError, match=r"label 'q' is the alias q='e' but is bound to axis 'c' \(size 5\) "
                                         r"by position \(operand 0's axis 3\)"):
        nx.einsum("b h w q, c e -> b", x, k, q="e")


def test_einsum_gradients_every_mode():
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    ref = jax.grad(lambda a, b: jnp.sum(jnp.tanh(jnp.einsum("bhwc,ce->bhwe", a, b))), argnums=(0, 1))(x.array, k.array)
    for eq in ["b h w c, c e -> b h w e", "... c, c e -> ... e", "{c} ->", "-> b h w e"]:
        f = lambda a, b: nx.sum(nx.tanh(nx.einsum(eq, a, b))).array
        gx, gk = jax.grad(f, argnums=(0, 1))(x, k)
        assert gx.axes == x.axes and gk.axes == k.axes
        np.testing.assert_allclose(gx.array, ref[0], rtol=1e-4, atol=1e-5, err_msg=eq)
        np.testing.assert_allclose(gk.array, ref[1], rtol=1e-4, atol=1e-5, err_msg=eq)


def test_einsum_precision_preferred_type_dot_general_and_out_sharding():
    x, k, y = rand((B, H, W, C), dtype=jnp.bfloat16), rand((C, E), 1, jnp.bfloat16), rand((W, C), 2, jnp.bfloat16)
    out = nx.einsum("{c} ->", x, k, preferred_element_type=jnp.float32, precision="highest")
    assert out.array.dtype == jnp.float32
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->bhwe", x.array, k.array,
                                                     preferred_element_type=jnp.float32), rtol=1e-2)
    calls = []

    def counting_dot_general(lhs, rhs, dims, precision=None, preferred_element_type=None, **kw):
        calls.append(dims)
        return jax.lax.dot_general(lhs, rhs, dims, precision=precision,
                                   preferred_element_type=preferred_element_type, **kw)

    x, k, y = rand((B, H, W, C)), rand((C, E), 1), rand((W, C), 2)
    out = nx.einsum("-> e b", x, k, _dot_general=counting_dot_general)
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce->eb", x.array, k.array), rtol=1e-4)
    assert len(calls) == 1
    out = nx.einsum("b h w c, c e, w c -> e h", x, k, y, _dot_general=counting_dot_general)
    np.testing.assert_allclose(out.array, jnp.einsum("bhwc,ce,wc->eh", x.array, k.array, y.array), rtol=1e-4)
    assert len(calls) == 3  # every product of three operands goes through it

    Bd, Ed = Axis("b", 8), Axis("e", 4)
    xs, ws = rand((Bd, C)), rand((Ed, C), 1)
    with jax.set_mesh(jax.make_mesh((4, 2), ("data", "model"))):
        out = jax.jit(lambda a, b: nx.einsum("{c} -> e b", a, b, out_sharding=P("model", "data")))(xs, ws)
        assert out.array.sharding.spec == P("model", "data")
        one = nx.einsum("b c -> c b", xs, out_sharding=P(None, "data"))
        assert one.array.sharding.spec == P(None, "data")
    np.testing.assert_allclose(out.array, jnp.einsum("bc,ec->eb", xs.array, ws.array), rtol=1e-4)


# --- einsum: mismatches --------------------------------------------------------------------

EINSUM_ERRORS = [
    ("b w h c, c e -> b", r"label 'w' is bound to axis 'h' \(size 3\) by position; use the unordered form "
                          r"\{\.\.\.\} to match by name \(operand 0's axis 1 is 'h'", "w"),
    ("b h w c, e c -> b", r"label 'e' is bound to axis 'c' \(size 5\) by position", "e"),
    ("p q r s, q t -> p", r"label 'q' is bound to two axes: 'h' \(size 3\) as operand 0's axis 1, "
                          r"and 'c' \(size 5\) as operand 1's axis 0 here", "q"),
    ("b h h c, c e -> b", r"operand 0 spec 'b h h c' uses the label 'h' twice", "h"),
    ("b h w, c e -> b", r"operand 0 spec 'b h w' has 3 labels but the array has 4 axes \(b:2, h:3, w:4, c:5\) "
                        r"\(one label per axis, in order, or '\.\.\.' for the rest\)", "b h w"),
    ("b h w c e, c e -> b", r"operand 0 spec 'b h w c e' has 5 labels but the array has 4 axes", "b h w c e"),
    ("b h w c k ..., c e -> b", r"has 5 labels besides '\.\.\.' but the array has only 4 axes", "b h w c k ..."),
    ("b h w c, c e -> b z", r"output label 'z' stands for no axis: an ordered equation's labels are bound by "
                            r"position on the left \(the labels are 'b', 'h', 'w', 'c', 'e'\)", "z"),
    ("b ..., c e -> w", r"output label 'w' stands for no axis.*the operands' axis 'w' is under '\.\.\.': "
                        r"label it on the left, or match by name", "w"),
    ("p q r s, s t -> b", r"output label 'b' stands for no axis.*the operands' axis 'b' is labelled 'p'", "b"),
    ("b h w c, c e -> b e h b", r"output 'b e h b' names an axis twice \('b'\)", "b"),
    ("p q r s, s t -> t s t", r"output 't s t' names an axis twice \('e'\)", "t"),
    ("{z} -> ...", r"braced axis 'z' is in no operand", "z"),
    ("-> b b", r"output 'b b' names an axis twice \('b'\)", "b"),
    ("{c c} ->", r"names an axis twice \('c'\)", "c"),
    ("b h w c, c e, e -> b", r"has 3 operand specs for 2 arrays", "b h w c, c e, e -> b"),
]


@pytest.mark.parametrize("eq, message, pointed", EINSUM_ERRORS)
def test_einsum_mismatch_errors_name_the_axis_and_point_at_it(eq, message, pointed):
    x, k = rand((B, H, W, C)), rand((C, E), 1)
    with pytest.raises(AxisStringError, match=message) as info:
        nx.einsum(eq, x, k)
    e = info.value
    assert eq[e.start:e.end] == pointed
    assert caret_column(str(e)) == e.start


def test_einsum_size_and_type_errors():
    x, k = rand((B, H, W, C)), rand((Axis("c", 7), E), 1)
    with pytest.raises(ValueError, match=r"Axis 'c' has size 5 in one of the operands of einsum and size 7"):
        nx.einsum("{c} ->", x, k)
    with pytest.raises(TypeError, match="operand 1 is a ArrayImpl, not a NamedArray"):
        nx.einsum("{c} ->", x, k.array)
    with pytest.raises(TypeError, match="no operands"):
        nx.einsum("{c} ->")


# --- rearrange ------------------------------------------------------------------------------


@settings(max_examples=12)
@given(st.permutations([B, H, W, C]), st.permutations(["b", "h", "w", "c"]), st.integers(0, 2))
def test_rearrange_flatten_matches_transpose_reshape(x_axes, out_order, at):
    x = rand(x_axes)
    lhs = " ".join(a.name for a in x_axes)
    merged = out_order[at:at + 2]
    rhs = " ".join(out_order[:at] + [f"(m: {merged[0]} {merged[1]})"] + out_order[at + 2:])
    out = nx.rearrange(x, f"{lhs} -> {rhs}")
    perm = [x.axis_names.index(n) for n in out_order]
    sizes = [x.axis_size(n) for n in out_order]
    want = np.reshape(np.transpose(x.array, perm), sizes[:at] + [sizes[at] * sizes[at + 1]] + sizes[at + 2:])
    np.testing.assert_array_equal(out.array, want)
    assert out.axis_names == tuple(out_order[:at] + ["m"] + out_order[at + 2:])
    # unordered: the same, matching x's axes by name whatever its layout
    un = nx.rearrange(x, f"{{{' '.join(reversed(out_order))}}} -> {rhs}")
    np.testing.assert_array_equal(un.array, want)


@settings(max_examples=12)
@given(st.permutations([B, H, W, C]))
def test_rearrange_unordered_flatten_keeps_the_rest_in_order(x_axes):
    x = rand(x_axes)
    out = x.rearrange("{h w} -> ... (hw: h w)")
    rest = [a for a in x_axes if a.name not in "hw"]
    assert out.axes == tuple(rest) + (Axis("hw", 12),)
    perm = [x.axis_names.index(a.name) for a in rest] + [x.axis_names.index("h"), x.axis_names.index("w")]
    np.testing.assert_array_equal(out.array, np.reshape(np.transpose(x.array, perm), (*[a.size for a in rest], 12)))


@given(st.sampled_from([(1, 12), (2, 6), (3, 4), (4, 3), (12, 1)]), st.booleans())
def test_rearrange_split_is_the_inverse_of_flatten(sizes, give_h):
    x = rand((B, H, W, C))
    flat = nx.rearrange(x, "b h w c -> b c (hw: h w)")
    hw = Axis("hw", 12)
    y = rand((B, hw, C), 3)
    kw = {"h": sizes[0]} if give_h else {"w": sizes[1]}
    out = nx.rearrange(y, "... (hw: h w) c -> ... h w c", **kw)
    assert out.axes == (B, Axis("h", sizes[0]), Axis("w", sizes[1]), C)
    np.testing.assert_array_equal(out.array, jnp.reshape(y.array, (2, *sizes, 5)))
    back = nx.rearrange(flat, "... (hw: h w) -> ... h w", h=3)
    assert back.axes == (B, C, H, W)
    np.testing.assert_array_equal(back.array, jnp.transpose(x.array, (0, 3, 1, 2)))


def test_rearrange_split_bindings_axis_and_name():
    y = rand((B, Axis("hw", 12), C))
    out = nx.rearrange(y, "b (hw: h w) c -> b h w c", h=Axis("height", 3), w="width")
    assert out.axes == (B, Axis("height", 3), Axis("width", 4), C)
    np.testing.assert_array_equal(out.array, jnp.reshape(y.array, (2, 3, 4, 5)))
    out = nx.rearrange(y, "{(hw: h w)} -> ... w h", h=3, w=4)  # both sizes: a check
    np.testing.assert_array_equal(out.array, jnp.transpose(jnp.reshape(y.array, (2, 3, 4, 5)), (0, 3, 2, 1)))
    # a name binding on the left stands for the array's axis; on the right it names the new axis
    out = nx.rearrange(y, "{q} -> ... (flat: b q)", q="c", flat="bc")
    assert out.axis_names == ("hw", "bc")
    np.testing.assert_array_equal(out.array, jnp.reshape(jnp.transpose(y.array, (1, 0, 2)), (12, 10)))


def test_rearrange_patches():
    Hh, Ww = Axis("h", 4), Axis("w", 6)
    x = rand((B, Hh, Ww, C))
    out = nx.rearrange(x, "{b (h: ph h) (w: pw w) c} -> (b: b ph pw) (e: h w c) ...", h=2, w=3)
    assert out.axes == (Axis("b", 2 * 2 * 2), Axis("e", 2 * 3 * 5))
    a = np.asarray(x.array).reshape(2, 2, 2, 2, 3, 5)  # b ph h pw w c
    want = a.transpose(0, 1, 3, 2, 4, 5).reshape(8, 30)
    np.testing.assert_array_equal(out.array, want)


def test_rearrange_ordered_forms():
    x = rand((B, H, W, C))
    a = np.asarray(x.array)
    cases = {
        "b h w c -> c b h w": (("c", "b", "h", "w"), a.transpose(3, 0, 1, 2)),
        "b ... c -> c ... b": (("c", "h", "w", "b"), a.transpose(3, 1, 2, 0)),
        "... c -> c ...": (("c", "b", "h", "w"), a.transpose(3, 0, 1, 2)),
        "b ... -> ... b": (("h", "w", "c", "b"), a.transpose(1, 2, 3, 0)),
        "b ... -> w ...": (("w", "b", "h", "c"), a.transpose(2, 0, 1, 3)),  # names under ... by name
        "b h w c -> (all: b h w c)": (("all",), a.reshape(-1)),
        "b h w c -> b (x: h) w c": (("b", "x", "w", "c"), a),  # a one-axis group renames
        "b (h) w c -> b h w c": (("b", "h", "w", "c"), a),
    }
    for expr, (names, want) in cases.items():
        out = nx.rearrange(x, expr)
        assert out.axis_names == names, expr
        np.testing.assert_array_equal(out.array, want, err_msg=expr)


def test_rearrange_call_forms_jit_grad_and_tags():
    x = rand((B, H, W, C))
    want = nx.rearrange(x, "b h w c -> b c (hw: h w)")
    for out in (x.rearrange("b h w c -> b c (hw: h w)"), nx.rearrange(x, expression="b h w c -> b c (hw: h w)"),
                jax.jit(lambda x: nx.rearrange(x, "b h w c -> b c (hw: h w)"))(x)):
        assert out.axes == want.axes
        np.testing.assert_array_equal(out.array, want.array)
    # the sequence form keeps working, positionally, as a method and by keyword
    assert nx.rearrange(x, ("c", ...)).axis_names == ("c", "b", "h", "w")
    assert x.rearrange(axes=("w", ...)).axis_names == ("w", "b", "h", "c")
    assert ("b", "c", "hw") in tagged_names(lambda x: nx.rearrange(x, "b h w c -> b c (hw: h w)"), x)
    weights = np.random.default_rng(4).normal(size=(2, 5, 12)).astype(np.float32)
    g = jax.grad(lambda x: jnp.sum(nx.rearrange(x, "{h w} -> b c (hw: h w)").array * weights))(x)
    ref = jax.grad(lambda a: jnp.sum(jnp.transpose(a, (0, 3, 1, 2)).reshape(2, 5, 12) * weights))(x.array)
    assert g.axes == x.axes
    np.testing.assert_array_equal(g.array, ref)


REARRANGE_ERRORS = [
    ("b h w q -> b", {}, r"the array has no axis 'q'; its axes are \(b:2, h:3, w:4, c:5\)", "q"),
    ("b w h c -> b", {}, r"'w' is at position 1 of the left side but the array's axis 1 is 'h' "
                         r"\('w' is its axis 2\)", "w"),
    ("b h w -> b h w", {}, r"the left side 'b h w' lists 3 axes but the array has 4: \(b:2, h:3, w:4, c:5\) "
                           r"\(list them all in order, or add '\.\.\.'\)", "b h w"),
    ("b h w c e ... -> b", {}, r"lists 5 axes besides \.\.\. but the array has 4", "b h w c e ..."),
    ("{z} -> ...", {}, r"the array has no axis 'z'", "z"),
    ("{(w: p q)} -> ...", {}, r"splitting axis 'w' \(size 4\) into \(w: p q\) needs the sizes of all parts but "
                              r"one; none given for 'p', 'q' \(pass e\.g\. p=\.\.\.\)", "(w: p q)"),
    ("{(w: p q)} -> ...", {"p": 3}, r"cannot split axis 'w' of size 4 into \(w: p q\): the sizes p=3 multiply "
                                    r"to 3, which does not divide 4", "(w: p q)"),
    ("{(w: p q)} -> ...", {"p": 2, "q": 3}, r"cannot split axis 'w' of size 4 into \(w: p q\): the sizes "
                                            r"p=2 \* q=3 multiply to 6, which is not 4", "(w: p q)"),
    ("b h w c -> b h w", {}, r"axes \['c'\] of the left side are not placed on the right; list them or add "
                             r"'\.\.\.'", "b h w"),
    ("b h w c -> b h w c z", {}, r"'z' is not an axis of the left side; those are \(b:2, h:3, w:4, c:5\)", "z"),
    ("b h w c -> b h w c c", {}, r"axis 'c' is used twice on the right", "c"),
    ("b h w c -> b (h w) c", {}, r"name the flattened axis: \(new: a b\)", "(h w)"),
    ("{(h w)} -> ...", {}, r"in braces a split names the axis it splits", "(h w)"),
    ("{h h} -> ...", {}, r"axis 'h' is named twice on the left", "h"),
    ("{(w: b q)} -> ...", {"b": 2}, r"two axes named 'b'", "{(w: b q)}"),
    ("b h w c -> b h (x: w c)", {"x": 7}, r"'x' is bound to size 7 but axis 'x' has size 20", "x"),
    ("{h} -> ...", {"h": 4}, r"'h' is bound to size 4 but axis 'h' has size 3", "h"),
    ("{(w: p q)} -> ...", {"w": 5, "p": 2}, r"'w' is bound to size 5 but axis 'w' has size 4", "w"),
]


@pytest.mark.parametrize("expr, bindings, message, pointed", REARRANGE_ERRORS)
def test_rearrange_mismatch_errors_name_the_axis_and_point_at_it(expr, bindings, message, pointed):
    x = rand((B, H, W, C))
    with pytest.raises(AxisStringError, match=message) as info:
        nx.rearrange(x, expr, **bindings)
    e = info.value
    assert expr[e.start:e.end] == pointed
    assert caret_column(str(e)) == e.start


def test_rearrange_argument_errors():
    x = rand((B, H, W, C))
    with pytest.raises(ValueError, match=r"binding z not used in 'b h w c -> c \.\.\.'"):
        nx.rearrange(x, "b h w c -> c ...", z=3)
    with pytest.raises(TypeError, match=r"binding h=2\.5 must be a size \(int > 0\), an Axis or an axis name"):
        nx.rearrange(x, "{(w: h q)} -> ...", h=2.5)
    with pytest.raises(TypeError, match=r"keyword bindings \['h'\] go with a string expression"):
        nx.rearrange(x, ("h", ...), h=3)
    with pytest.raises(TypeError, match="rearrange needs the new order"):
        nx.rearrange(x)
    with pytest.raises(AxisStringError, match=r"the result would have two axes named 'b'") as info:
        nx.rearrange(x, "{h w} -> ... (b: h w)")
    assert info.value.start == 14
    with pytest.raises(AxisStringError, match=r"the result would have two axes named 'h'"):
        nx.rearrange(x, "b h w c -> (h: b w) h c")
    with pytest.raises(AxisStringError, match=re.escape("rearrange: expected '->' at column 8")):
        x.rearrange("b h w c")
