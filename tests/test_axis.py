"""Axis, make_axes and the axis-spec helpers."""

import dataclasses

import numpy as np
import pytest

from namax import Axis, axis_name, make_axes
from namax.axis import axis_names, check_unique, ensure_tuple, is_axis_selection, merge_axes


def test_axis_fields_alias_and_resize():
    pos = Axis("position", 1024)
    kpos = pos.alias("key_position")
    assert (kpos.name, kpos.size) == ("key_position", 1024)
    assert pos.resize(7) == Axis("position", 7)
    assert pos == Axis("position", 1024) and pos != kpos
    assert hash(pos) == hash(Axis("position", 1024))
    assert repr(pos) == "Axis('position', 1024)"


def test_axis_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Axis("a", 2).size = 3


def test_axis_size_converts_integer_likes():
    ax = Axis("a", np.int64(5))
    assert ax.size == 5 and type(ax.size) is int


@pytest.mark.parametrize(
    "name, size, err, match",
    [
        ("", 3, TypeError, "non-empty string"),
        (3, 3, TypeError, "non-empty string"),
        ("a", -1, ValueError, "'a'.*>= 0"),
        ("a", "big", TypeError, "'a'.*size must be an int"),
    ],
)
def test_axis_rejects_bad_fields(name, size, err, match):
    with pytest.raises(err, match=match):
        Axis(name, size)


def test_make_axes_keeps_keyword_order():
    pos, embed, head = make_axes(pos=8, embed=16, head=2)
    assert (pos, embed, head) == (Axis("pos", 8), Axis("embed", 16), Axis("head", 2))


def test_name_helpers():
    a = Axis("a", 2)
    assert axis_name(a) == "a" and axis_name("b") == "b"
    with pytest.raises(TypeError, match="Axis or an axis name"):
        axis_name(3)
    assert ensure_tuple(a) == (a,) and ensure_tuple("b") == ("b",) and ensure_tuple([a, "b"]) == (a, "b")
    assert axis_names((a, "b")) == ("a", "b") and axis_names(a) == ("a",)
    assert is_axis_selection(a) and is_axis_selection("x") and is_axis_selection((a, "x"))
    assert not is_axis_selection(()) and not is_axis_selection(3) and not is_axis_selection((a, 3))


def test_check_unique_names_the_duplicate():
    check_unique((Axis("a", 2), "b"))
    with pytest.raises(ValueError, match="Duplicate axis name 'a'"):
        check_unique((Axis("a", 2), Axis("b", 2), "a"))


def test_merge_axes_union_in_order_of_first_appearance():
    a, b, c = make_axes(a=2, b=3, c=4)
    assert merge_axes((b, a), (c, a), (b,)) == (b, a, c)
    assert merge_axes() == ()


def test_merge_axes_size_mismatch_names_axis_and_both_sizes():
    with pytest.raises(ValueError, match=r"Axis 'b' has size 3 .* size 5"):
        merge_axes((Axis("a", 2), Axis("b", 3)), (Axis("b", 5),))
