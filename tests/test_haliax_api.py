"""Haliax's axis algebra, spellings, typed annotations and utility modules, in namax.

Expected values are worked out here from the documented semantics (checked against the
live Haliax when the tests were written), not copied from it.
"""

import dataclasses
import inspect
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx
from namax import Axis
from namax import axis as ax
from namax import haxtyping as ht
from namax import partitioning as part
from namax import tree_util as ntu
from namax import util

B, E, M = Axis("batch", 2), Axis("embed", 3), Axis("mlp", 4)


# --- 1. axis algebra ----------------------------------------------------------------------------

def test_axis_spec_to_shape_dict_keeps_order_and_unknown_sizes():
    assert ax.axis_spec_to_shape_dict((B, "embed")) == {"batch": 2, "embed": None}
    assert list(ax.axis_spec_to_shape_dict((E, B))) == ["embed", "batch"]
    assert ax.axis_spec_to_shape_dict(B) == {"batch": 2}
    assert ax.axis_spec_to_shape_dict("mlp") == {"mlp": None}
    assert ax.axis_spec_to_shape_dict({"mlp": 4}) == {"mlp": 4}


def test_axis_spec_to_shape_dict_rejects_bad_entries():
    with pytest.raises(ValueError, match="'batch' appears twice"):
        ax.axis_spec_to_shape_dict((B, "batch"))
    with pytest.raises(TypeError, match="Invalid entry 3"):
        ax.axis_spec_to_shape_dict((B, 3))


def test_concat_axes_keeps_the_kind_of_the_first_spec():
    assert nx.concat_axes(B, E) == (B, E)
    assert nx.concat_axes((B,), ("embed", M)) == (B, "embed", M)
    assert nx.concat_axes({"batch": 2}, (E,)) == {"batch": 2, "embed": 3}
    assert nx.concat_axes((B,), {"embed": 3}) == (B, E)  # a dict second gives a tuple
    assert nx.concat_axis_specs is nx.concat_axes
    with pytest.raises(ValueError, match=r"concat_axes: axes \['batch'\] are in both"):
        nx.concat_axes((B, E), ("batch",))


def test_union_axes_orders_by_first_appearance_and_checks_sizes():
    assert ax.union_axes((B, E), (E, M)) == (B, E, M)
    # an unsized name agrees with any size and keeps the first spec's entry
    assert ax.union_axes(("batch", E), (B, M)) == ("batch", E, M)
    assert ax.union_axes((B,), {"embed": 3}) == {"batch": 2, "embed": 3}
    with pytest.raises(ValueError, match=r"Axis 'batch' has size 2 in \(batch:2\) but size 5 in \(batch:5\)"):
        ax.union_axes((B,), (B.resize(5),))


def test_intersect_axes_takes_the_second_specs_entries_in_the_first_specs_order():
    assert ax.intersect_axes((B, E, M), (M, B)) == (B, M)
    assert ax.intersect_axes((B, E), ("embed",)) == ("embed",)
    assert ax.intersect_axes({"batch": 2, "embed": 3}, (E,)) == {"embed": 3}
    assert ax.intersect_axes((B,), (M,)) == ()
    with pytest.raises(ValueError, match="Axis 'embed' has size 3 .* but size 7"):
        ax.intersect_axes((E,), (E.resize(7),))


def test_eliminate_axes_requires_presence_without_axes_does_not():
    assert nx.eliminate_axes((B, E, M), ("embed", B)) == (M,)
    assert nx.eliminate_axes({"batch": 2, "embed": 3}, "batch") == {"embed": 3}
    with pytest.raises(ValueError, match=r"eliminate_axes: axis 'mlp' is not in \(batch:2, embed:3\)"):
        nx.eliminate_axes((B, E), M)
    with pytest.raises(ValueError, match="Axis 'batch' has size 2 .* but size 9"):
        nx.eliminate_axes((B, E), B.resize(9))
    assert ax.without_axes((B, E), ("embed", "mlp")) == (B,)
    with pytest.raises(ValueError, match="Axis 'embed' has size 3 .* but size 1"):
        ax.without_axes((B, E), E.resize(1))
    assert ax.without_axes((B, E), E.resize(1), allow_mismatched_sizes=True) == (B,)


def test_unsize_axes():
    assert ax.unsize_axes((B, E)) == ("batch", "embed")
    assert ax.unsize_axes(B) == "batch"
    assert ax.unsize_axes({"batch": 2}) == {"batch": None}
    assert ax.unsize_axes((B, E), "embed") == (B, "embed")
    with pytest.raises(ValueError, match=r"unsize_axes: axis 'mlp' is not in"):
        ax.unsize_axes((B, E), "mlp")


def test_replace_axis_in_place():
    X, Y = Axis("x", 5), Axis("y", 6)
    assert nx.replace_axis((B, E, M), "embed", (X, Y)) == (B, X, Y, M)
    assert nx.replace_axis((B, E), B, "b") == ("b", E)
    assert nx.replace_axis({"batch": 2, "embed": 3}, "embed", X) == {"batch": 2, "x": 5}
    with pytest.raises(ValueError, match="replace_axis: axis 'q' is not in"):
        nx.replace_axis((B, E), "q", X)
    with pytest.raises(ValueError, match="would give axis 'embed' twice"):
        nx.replace_axis((B, E), "batch", E)


def test_selects_axis_and_is_axis_compatible():
    assert nx.selects_axis((B, E), "batch")
    assert nx.selects_axis((B, E), (E, B))
    assert nx.selects_axis(("batch", E), B)  # an unsized name matches any size
    assert not nx.selects_axis((B, E), B.resize(5))
    assert not nx.selects_axis(B, (B, E))
    assert ax.is_axis_compatible(B, "batch") and ax.is_axis_compatible(B, B.resize(9))
    assert not ax.is_axis_compatible("batch", "embed")


def test_axis_size_is_the_product_of_sizes():
    assert nx.axis_size(M) == 4
    assert nx.axis_size((B, E, M)) == 2 * 3 * 4
    assert nx.axis_size({"batch": 2, "mlp": 4}) == 8
    assert nx.axis_size(()) == 1
    with pytest.raises(ValueError, match="axis_size: axis 'embed' has no size"):
        nx.axis_size((B, "embed"))


def test_resolve_axis_single_and_several():
    assert nx.resolve_axis((B, E), "embed") == E
    assert nx.resolve_axis((B, E), E) == E
    assert nx.resolve_axis((B, E, M), ("mlp", B)) == (M, B)
    assert nx.resolve_axis({"batch": 2, "embed": 3}, {"embed": None}) == {"embed": 3}
    with pytest.raises(ValueError, match=r"resolve_axis: axis 'mlp' is not in \(batch:2, embed:3\)"):
        nx.resolve_axis((B, E), "mlp")
    with pytest.raises(ValueError, match="Axis 'embed' has size 3 .* but size 4"):
        nx.resolve_axis((B, E), E.resize(4))
    with pytest.raises(ValueError, match="axis 'embed' has no size"):
        nx.resolve_axis(("embed",), "embed")


def test_rearrange_for_partial_order():
    C, D = Axis("c", 5), Axis("d", 6)
    axes = (B, E, M, C)
    assert ax.rearrange_for_partial_order((...,), axes) == axes
    assert ax.rearrange_for_partial_order(("c", "batch", "mlp", "embed"), axes) == (C, B, M, E)
    assert ax.rearrange_for_partial_order(("mlp", ..., "batch"), axes) == (M, E, C, B)
    assert ax.rearrange_for_partial_order((..., "embed"), axes) == (B, M, C, E)
    # an unnamed axis goes after the last named axis seen so far, into the next empty '...'
    assert ax.rearrange_for_partial_order((..., "mlp", ...), (B, M, E, D)) == (B, M, E, D)
    assert ax.rearrange_for_partial_order(("embed", ...), ("batch", "embed")) == ("embed", "batch")
    with pytest.raises(ValueError, match="must name exactly the axes"):
        ax.rearrange_for_partial_order(("batch",), (B, E))
    with pytest.raises(ValueError, match=r"axes \['q'\] of the partial order are not in"):
        ax.rearrange_for_partial_order(("q", ...), (B, E))
    with pytest.raises(ValueError, match="'batch' appears twice in the partial order"):
        ax.rearrange_for_partial_order(("batch", ..., "batch"), (B, E))


def test_axis_name_of_a_sequence_and_the_type_aliases():
    assert nx.axis_name((B, "embed")) == ("batch", "embed")
    with pytest.raises(TypeError, match="Expected an Axis or an axis name"):
        nx.axis_name(3)
    for alias in (ax.ShapeDict, ax.PartialShapeDict, ax.PartialAxisSpec):
        assert typing.get_origin(alias) is not None


def test_dblock_and_dslice_live_where_haliax_has_them():
    from namax.axis import ds, dslice

    assert ds is nx.ds and dslice is nx.dslice and nx.axis.ds is nx.ds
    block = nx.dblock(2, 3)
    assert isinstance(block, nx.dslice) and (block.start, block.size) == (6, 3)
    x = nx.arange(Axis("position", 10))
    assert x["position", nx.dblock(1, 4)].array.tolist() == list(range(4, 8))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nx.axis.nope


# --- 2. spellings -------------------------------------------------------------------------------

def _mesh():
    return jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def test_named_jit_is_namedjit_and_takes_axis_resources_second():
    assert nx.named_jit is nx.namedjit is part.named_jit
    params = inspect.signature(nx.named_jit).parameters
    assert list(params)[:2] == ["fn", "axis_resources"]
    mesh = _mesh()
    f = nx.named_jit(lambda x: x * 2, {"batch": "data"}, mesh=mesh)
    out = f(nx.ones((Axis("batch", 8), E)))
    assert out.array.sharding.spec == jax.sharding.PartitionSpec("data")
    assert np.allclose(out.array, 2.0)


def test_rmsnorm_has_haliax_constructor_and_defaults():
    init = inspect.signature(nx.nn.RmsNorm.init).parameters
    assert list(init) == ["axis", "eps", "use_weight", "use_bias", "dtype"]
    assert init["eps"].default == 1e-5 and init["use_bias"].default is True and init["dtype"].default is None
    assert list(inspect.signature(nx.nn.RmsNorm).parameters) == ["axis", "weight", "bias", "eps", "dtype"]
    norm = nx.nn.RmsNorm.init(E, 1e-3, use_bias=False)
    assert isinstance(norm, nx.nn.RMSNorm) and norm.eps == 1e-3 and norm.bias is None


def test_rmsnorm_values_and_dtypes():
    values = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)
    w = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    b = np.array([0.1, 0.0, -0.1], dtype=np.float32)
    norm = nx.nn.RmsNorm(E, nx.named(jnp.asarray(w), (E,)), nx.named(jnp.asarray(b), (E,)), eps=1e-5)
    out = norm(nx.named(jnp.asarray(values), (B, E)))
    expected = values / np.sqrt((values ** 2).mean(axis=1, keepdims=True) + 1e-5) * w + b
    assert out.axes == (B, E) and np.allclose(out.array, expected, atol=1e-6)
    # bf16 in: statistics in float32, result back in bf16
    out16 = nx.nn.RmsNorm.init(E)(nx.named(jnp.asarray(values, jnp.bfloat16), (B, E)))
    assert out16.dtype == jnp.bfloat16
    plain = values / np.sqrt((values ** 2).mean(axis=1, keepdims=True) + 1e-5)
    assert np.allclose(np.asarray(out16.array, np.float32), plain, atol=2e-2)
    with pytest.raises(ValueError, match="mlp"):
        nx.nn.RmsNorm.init(M)(nx.ones((B, E)))


def test_partitioning_spellings():
    assert list(part.ResourceAxis) == ["model", "data", "replica", "replica_dcn", "context"]
    assert part.ResourceAxis.DATA == "data" and "context" in part.ResourceAxis
    assert part.current_thread_local_mapping is part.current_axis_mapping
    assert part.current_thread_local_mapping() is None
    mapping = {"batch": "data", "mlp": ("data", "model")}
    assert part.physical_axis_name(B, mapping) == "data"
    assert part.physical_axis_name("mlp", mapping) == ("data", "model")
    assert part.physical_axis_name("embed", mapping) is None
    assert part.physical_axis_name("batch") is None  # no mapping active
    with nx.axis_mapping({"batch": "data"}):
        assert part.current_thread_local_mapping() == {"batch": "data"}
        assert part.physical_axis_name("batch") == "data"


def test_pspec_for_axis_has_one_entry_per_axis_and_checks_like_shard():
    P = jax.sharding.PartitionSpec
    mapping = {"batch": "data", "mlp": ("data", "model"), "embed": "model"}
    assert part.pspec_for_axis((B, "heads"), mapping) == P("data", None)
    with pytest.raises(part.ShardingError, match="mesh axis 'data' is used twice.*'batch'.*'mlp'"):
        part.pspec_for_axis(("batch", "mlp"), mapping)
    with pytest.raises(ValueError, match="no axis mapping given and none active"):
        part.pspec_for_axis(("batch",))
    with jax.set_mesh(_mesh()):
        assert part.pspec_for_axis((Axis("batch", 8), Axis("embed", 2)), mapping) == P("data", "model")
        with pytest.raises(part.ShardingError, match="axis 'batch' of size 6 does not divide over mesh axes"):
            part.pspec_for_axis((Axis("batch", 6),), mapping)
        with pytest.raises(part.ShardingError, match="mapped to mesh axis 'pipe'"):
            part.pspec_for_axis(("layers",), {"layers": "pipe"})


def test_round_axis_for_partitioning_rounds_up_to_the_device_count():
    mapping = {"batch": "data", "mlp": ("data", "model")}
    with nx.axis_mapping(mapping, mesh=_mesh()):
        assert part.round_axis_for_partitioning(Axis("batch", 7)) == Axis("batch", 8)   # data: 4
        assert part.round_axis_for_partitioning(Axis("batch", 8)) == Axis("batch", 8)
        assert part.round_axis_for_partitioning(Axis("mlp", 9)) == Axis("mlp", 16)      # data*model: 8
        assert part.round_axis_for_partitioning(E) == E                                # not mapped
        with pytest.raises(TypeError, match="expected an Axis"):
            part.round_axis_for_partitioning("batch")
    with pytest.raises(ValueError, match="no mesh active"):
        part.round_axis_for_partitioning(Axis("batch", 7), mapping)


def test_shard_with_axis_mapping_and_auto_sharded():
    P = jax.sharding.PartitionSpec
    mesh = _mesh()
    x = nx.zeros((Axis("batch", 8), Axis("embed", 2)))
    assert nx.shard_with_axis_mapping(x, {"batch": "data"}, mesh).array.sharding.spec == P("data")
    assert nx.auto_sharded is part.auto_sharded and nx.shard_with_axis_mapping is part.shard_with_axis_mapping
    assert nx.auto_sharded(x) is x  # no mapping active: unchanged
    with nx.axis_mapping({"embed": "model"}, mesh=mesh):
        assert nx.auto_sharded(x).array.sharding.spec == P(None, "model")
    with pytest.raises(part.ShardingError, match="axis 'embed' of size 2 does not divide"):
        nx.shard_with_axis_mapping(x, {"embed": "data"}, mesh)


def test_infer_resource_partitions_names_arrays_and_fields():
    P = jax.sharding.PartitionSpec
    mesh = _mesh()

    class Params(eqx.Module):
        w: nx.NamedArray
        raw: jax.Array = nx.field(axis_names=("mlp", "embed"))
        act: str = eqx.field(static=True, default="relu")

    params = Params(nx.zeros((Axis("embed", 2), Axis("mlp", 8))), jnp.zeros((8, 2)))
    shardings = part.infer_resource_partitions(params, {"mlp": "data", "embed": "model"}, mesh)
    assert shardings.w.spec == P("model", "data") and shardings.raw.spec == P("data", "model")
    assert shardings.act == "relu"
    plain = part.infer_resource_partitions({"b": jnp.zeros(3), "n": 3, "s": "x"}, {}, mesh)
    assert plain["b"].spec == P() and plain["n"].spec == P() and plain["s"] is None


def test_field_records_axis_names():
    class M(eqx.Module):
        w: jax.Array = nx.field(axis_names=("embed",))
        n: int = nx.field(static=True, default=3)

    fields = {f.name: f for f in dataclasses.fields(M)}
    assert fields["w"].metadata["axis_names"] == ("embed",)
    assert fields["n"].metadata["axis_names"] is None and fields["n"].metadata["static"]
    assert nx.field(converter=float, default=1).metadata["axis_names"] is None
    with pytest.raises(ValueError, match="static field has no array to name"):
        nx.field(static=True, axis_names=("embed",))


def test_is_named_array_ndim_and_the_public_broadcast_arrays():
    x = nx.ones((B, E))
    assert nx.is_named_array(x) and not nx.is_named_array(x.array)
    assert nx.ndim(x) == 2 and nx.ndim(jnp.zeros((2, 2, 2))) == 3
    assert list(inspect.signature(nx.broadcast_arrays).parameters) == ["arrays", "require_subset", "ensure_order"]
    e = nx.named(jnp.arange(3.0), (E,))
    xb, eb, s, none = nx.broadcast_arrays(x, e, 2.0, None)
    assert xb is x and eb.axes == (B, E) and s == 2.0 and none is None
    assert np.array_equal(eb.array, np.broadcast_to(np.arange(3.0), (2, 3)))
    # the bigger array's order wins; ensure_order=False keeps each array's own order
    a, b = nx.broadcast_arrays(nx.ones((E, B)), x)
    assert a.axes == b.axes == (E, B)
    a, b = nx.broadcast_arrays(nx.ones((E, B)), x, ensure_order=False)
    assert (a.axes, b.axes) == ((E, B), (B, E))
    # no subset relationship: an error, unless require_subset=False (smaller array's axes in front)
    with pytest.raises(ValueError, match="neither of the axes"):
        nx.broadcast_arrays(x, nx.ones(M))
    a, b = nx.broadcast_arrays(nx.ones(M), x, require_subset=False)  # x is bigger (6 > 4 elements)
    assert a.axes == b.axes == (M, B, E)
    a, b = nx.broadcast_arrays(nx.ones(Axis("vocab", 10)), x, require_subset=False)  # now vocab is bigger
    assert a.axes == b.axes == (B, E, Axis("vocab", 10))
    with pytest.raises(ValueError, match="axis 'embed' has size 3 in one array and size 5"):
        nx.broadcast_arrays(x, nx.ones(E.resize(5)))
    with pytest.raises(TypeError, match="unnamed ArrayImpl of shape \\(3,\\)"):
        nx.broadcast_arrays(x, jnp.zeros(3))
    (scalar,) = nx.broadcast_arrays(1.5)
    assert nx.is_named_array(scalar) and scalar.axes == () and float(scalar.array) == 1.5


def test_named_ref_reads_and_writes_by_name():
    Pos = Axis("position", 4)
    ref = nx.new_ref(nx.named(jnp.arange(12.0).reshape(4, 3), (Pos, E)))
    assert isinstance(ref, nx.NamedRef) and ref.axes == (Pos, E) and ref.shape == {"position": 4, "embed": 3}
    row = nx.get(ref, ("position", 1))
    assert row.axes == (E,) and row.array.tolist() == [3.0, 4.0, 5.0]
    assert ref[{"embed": slice(0, 2)}].axes == (Pos, E.resize(2))
    old = nx.swap(ref, ("position", 0), nx.named(jnp.array([7.0, 8.0, 9.0]), (E,)))
    assert old.array.tolist() == [0.0, 1.0, 2.0]
    ref["embed", 2] = 0.0  # a scalar broadcasts over the selection
    frozen = nx.freeze(ref)
    expected = np.arange(12.0).reshape(4, 3)
    expected[0] = [7.0, 8.0, 9.0]
    expected[:, 2] = 0.0
    assert frozen.axes == (Pos, E) and np.array_equal(frozen.array, expected)
    # values are matched by name, not position
    ref[{}] = nx.named(jnp.ones((3, 4)), (E, Pos))
    assert np.array_equal(nx.freeze(ref).array, np.ones((4, 3)))


def test_named_ref_dynamic_slices_under_jit():
    Pos = Axis("position", 6)

    @jax.jit
    def step(ref, i):
        window = ref["position", nx.ds(i, 2)]
        ref["position", nx.ds(i, 2)] = window * 10
        return window

    ref = nx.new_ref(nx.arange(Pos).astype(jnp.float32))
    window = step(ref, jnp.int32(3))
    assert window.axes == (Pos.resize(2),) and window.array.tolist() == [3.0, 4.0]
    assert nx.freeze(ref).array.tolist() == [0.0, 1.0, 2.0, 30.0, 40.0, 5.0]


def test_named_ref_errors():
    ref = nx.new_ref(nx.zeros((B, E)))
    with pytest.raises(TypeError, match="new_ref takes a NamedArray"):
        nx.new_ref(jnp.zeros(3))
    with pytest.raises(ValueError, match="no axis 'mlp'"):
        ref["mlp", 0]
    with pytest.raises(IndexError, match="index 5 is out of range for axis 'batch' of size 2"):
        ref["batch", 5]
    with pytest.raises(ValueError, match=r"include \['mlp'\]"):
        ref["batch", 0] = nx.ones((E, M))
    with pytest.raises(TypeError, match="unnamed ndarray"):
        ref["batch", 0] = np.zeros(3, np.float32)
    iref = nx.new_ref(nx.zeros(E, dtype=jnp.int32))
    with pytest.raises(TypeError, match="cannot write a value of dtype float32"):
        iref[{}] = nx.ones(E)


# --- 3. typed annotations ----------------------------------------------------------------------

def test_dtype_aliases_build_annotated_named_array_hints():
    hint = ht.f32["batch embed"]
    assert typing.get_origin(hint) is typing.Annotated
    arr_type, spec = typing.get_args(hint)
    assert arr_type is nx.NamedArray
    assert spec == ht.NamedArrayAxes(("batch", "embed"), dtype=jnp.float32)
    assert repr(spec) == "NamedArray[float32 batch embed]"
    assert typing.get_args(ht.i32[nx.NamedArray, "b ... e"])[1] == ht.NamedArrayAxes(
        ("b",), ("e",), ordered=True, subset=True, dtype=jnp.int32)
    assert typing.get_args(ht.Named[nx.NamedArray, {"b", ...}])[1] == ht.NamedArrayAxes(
        ("b",), (), ordered=False, subset=True)
    for alias, dtype in [("bf16", jnp.bfloat16), ("u8", jnp.uint8), ("bool_", jnp.bool_),
                         ("complex128", jnp.complex128), ("i64", jnp.int64), ("f16", jnp.float16)]:
        assert typing.get_args(getattr(ht, alias)["x"])[1].dtype == dtype
    import jaxtyping

    plain = ht.i32[jax.Array, "b"]  # plain arrays: jaxtyping's annotation
    assert plain.__name__ == jaxtyping.Int32[jax.Array, "b"].__name__
    assert isinstance(jnp.zeros(3, jnp.int32), plain) and not isinstance(jnp.zeros(3), plain)
    with pytest.raises(TypeError, match="at most one '...'"):
        ht.f32["a ... b ..."]
    with pytest.raises(TypeError, match="Named.* takes a base type and an axis spec"):
        ht.Named["batch"]
    assert nx.Named is ht.Named and nx.NamedArrayAxes is ht.NamedArrayAxes


def test_typecheck_passes_good_calls_and_names_the_bad_argument():
    @ht.typecheck
    def project(x: ht.f32["batch ... embed"], w: ht.Named[nx.NamedArray, {"embed", "mlp"}],
                scale: float = 1.0) -> ht.f32["batch mlp"]:
        return nx.dot(x, w, axis="embed") * scale

    x, w = nx.ones((B, E)), nx.ones((M, E))
    assert project(x, w, 2.0).axes == (B, M)
    with pytest.raises(TypeError, match=r"project: argument 'x' should be NamedArray\[float32 batch \.\.\. embed\], "
                                        r"got a NamedArray with axes \(embed:3, batch:2\) and dtype float32"):
        project(nx.ones((E, B)), w)
    with pytest.raises(TypeError, match=r"argument 'x' should be .*got a NamedArray with axes \(batch:2, embed:3\) "
                                        r"and dtype int32"):
        project(nx.ones((B, E), dtype=jnp.int32), w)
    with pytest.raises(TypeError, match=r"argument 'w' should be NamedArray\[\{embed, mlp\}\], got a NamedArray "
                                        r"with axes \(embed:3\)"):
        project(x, nx.ones(E))
    with pytest.raises(TypeError, match="argument 'x' should be .* got a ArrayImpl"):
        project(x.array, w)
    with ht.enable_shape_checks(False) as before:
        assert before is True and not ht.are_shape_checks_enabled()
        assert project(nx.ones((E, B)), w).axes == (B, M)  # not checked
    assert nx.are_shape_checks_enabled()


def test_typecheck_checks_the_return_value_optional_and_runs_under_jit():
    @ht.typecheck
    def bad(x: ht.f32["batch"]) -> ht.f32["embed"]:
        return x

    with pytest.raises(TypeError, match=r"bad: the return value should be NamedArray\[float32 embed\]"):
        bad(nx.ones(B))

    @ht.typecheck
    def maybe(x: typing.Optional[ht.f32["batch"]] = None) -> int:
        return 0 if x is None else 1

    assert maybe() == 0 and maybe(nx.ones(B)) == 1
    with pytest.raises(TypeError, match=r"should be NamedArray\[float32 batch\] or None"):
        maybe(nx.ones(E))

    @jax.jit
    def traced(x):
        return bad(x)

    with pytest.raises(TypeError, match="the return value should be"):
        traced(nx.ones(B))


def test_typecheck_resolves_string_annotations_at_the_first_call():
    @ht.typecheck
    def later(x: "ht.f32['batch']") -> "Later":
        return x

    class Later:  # defined after the decorator ran: resolved at the first call
        pass

    later.__wrapped__.__globals__["Later"] = Later
    try:
        assert later(nx.ones(B)).axes == (B,)
        with pytest.raises(TypeError, match=r"argument 'x' should be NamedArray\[float32 batch\]"):
            later(nx.ones(E))
    finally:
        del later.__wrapped__.__globals__["Later"]


def test_check_shape_names_the_dimension():
    assert nx.check_shape((2, 3), ("batch", E)) == (B, E)
    with pytest.raises(ValueError, match=r"axis 'embed' has size 3 but the shape \(2, 4\) gives it 4"):
        nx.check_shape((2, 4), ("batch", E))
    with pytest.raises(ValueError, match=r"shape \(2,\) has 1 dimensions but the axes \('batch', 'embed'\) are 2"):
        nx.check_shape((2,), (B, E))
    with pytest.raises(TypeError, match="expected True or False"):
        with nx.enable_shape_checks("no"):
            pass


def test_reduction_protocols_describe_namax_reductions():
    assert issubclass(ht.ReductionFunction, typing.Protocol)
    params = inspect.signature(ht.ReductionFunction.__call__).parameters
    assert list(params) == ["self", "array", "axis", "where", "kwargs"]
    assert list(inspect.signature(ht.SimpleReductionFunction.__call__).parameters) == ["self", "array", "axis",
                                                                                       "kwargs"]
    assert nx.ReductionFunction is ht.ReductionFunction and nx.SimpleReductionFunction is ht.SimpleReductionFunction


# --- 4. util and tree_util ----------------------------------------------------------------------

def test_util_helpers():
    assert util.ensure_tuple("ab") == ("ab",) and util.ensure_tuple([1, 2]) == (1, 2)
    assert util.ensure_tuple(B) == (B,) and util.ensure_tuple(None) == (None,)
    assert util.is_named_array(nx.ones(B)) and not util.is_named_array(jnp.ones(2))
    assert util.is_jax_or_hax_array_like(np.zeros(2)) and util.is_jax_or_hax_array_like(nx.ones(B))
    assert not util.is_jax_or_hax_array_like(3.0)


def test_string_holder_enum_members_are_per_class():
    class Colors(metaclass=util.StringHolderEnum):
        RED = "red"
        BLUE = "blue"

        def helper(self):
            return 1

    class Sizes(metaclass=util.StringHolderEnum):
        BIG = "big"

    assert Colors.RED == "red" and list(Colors) == ["red", "blue"] and list(Sizes) == ["big"]
    assert "blue" in Colors and "big" not in Colors and len(Colors) == 2


def test_tree_functions_treat_named_arrays_as_leaves():
    x = nx.named(jnp.arange(3.0), (E,))
    tree = {"x": x, "y": [jnp.ones(2), 4]}
    assert ntu.tree_map(lambda a: type(a).__name__, tree) == {"x": "NamedArray", "y": ["ArrayImpl", "int"]}
    doubled = ntu.tree_map(lambda a, b: a + b, tree, tree)
    assert doubled["x"].axes == (E,) and doubled["x"].array.tolist() == [0.0, 2.0, 4.0]
    leaves, treedef = ntu.tree_flatten(tree)
    assert leaves[0] is x and len(leaves) == 3 and treedef == ntu.tree_structure(tree)
    assert ntu.tree_unflatten(treedef, leaves)["x"] is x
    assert len(ntu.tree_leaves(tree)) == 3 and len(jax.tree_util.tree_leaves(tree)) == 3
    # a user is_leaf is combined with the NamedArray rule
    assert len(ntu.tree_leaves(tree, is_leaf=lambda a: isinstance(a, list))) == 2
    assert ntu.tree_structure(tree, is_leaf=lambda a: isinstance(a, list)).num_leaves == 2


def test_scan_aware_tree_map_sees_one_layer_at_a_time():
    Layers = Axis("layers", 3)
    stack = nx.nn.Stacked.init(Layers, nx.nn.LayerNorm)(E)
    seen = []

    def shift(a):
        seen.append(a.axes)
        return a + 1

    out = ntu.scan_aware_tree_map(shift, {"stack": stack, "head": nx.zeros(M)})
    assert (E,) in seen and (M,) in seen and (Layers, E) not in seen
    assert out["stack"].stacked.weight.axes == (Layers, E)
    assert np.array_equal(out["stack"].stacked.weight.array, np.full((3, 3), 2.0))
    assert np.array_equal(out["head"].array, np.ones(4))


def test_resize_axis_shrinks_and_grows_with_the_mean():
    V = Axis("vocab", 4)
    emb = nx.named(jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]), (V, Axis("embed", 2)))
    tree = {"emb": emb, "other": nx.ones(M), "n": 1}
    small = ntu.resize_axis(tree, "vocab", 2)
    assert small["emb"].axes[0] == Axis("vocab", 2) and small["emb"].array.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert small["other"] is tree["other"] and small["n"] == 1
    big = ntu.resize_axis(tree, V, 6)
    column_means = np.asarray(emb.array).mean(axis=0)
    assert big["emb"].axes[0] == Axis("vocab", 6)
    assert np.allclose(big["emb"].array[4:], np.broadcast_to(column_means, (2, 2)))
    sampled = ntu.resize_axis(tree, "vocab", 10, key=jax.random.key(0))["emb"].array[4:]
    stds = np.asarray(emb.array).std(axis=0)
    assert np.all(np.abs(sampled - column_means) <= 2 * stds + 1e-5)
    assert not np.allclose(sampled, column_means)
    with pytest.raises(ValueError, match="new_size must be an int >= 0"):
        ntu.resize_axis(tree, "vocab", -1)


def test_hashable_partition_roundtrip():
    model = {"w": jnp.ones(2), "act": "relu", "n": 3}
    dynamic, static = ntu.hashable_partition(model, eqx.is_array)
    assert dynamic["act"] is None and dynamic["w"] is model["w"]
    other = ntu.hashable_partition({"w": jnp.zeros(2), "act": "relu", "n": 3}, eqx.is_array)[1]
    assert hash(static) == hash(other) and static == other
    assert ntu.hashable_combine(dynamic, static) == {"w": model["w"], "act": "relu", "n": 3}
