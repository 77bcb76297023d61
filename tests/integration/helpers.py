"""Shared helpers of the integration tier (no fixtures: each test module builds its own model)."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from namax.tools.summary import collectives

RTOL = ATOL = 1e-5


def assert_trees_close(got: Any, want: Any, rtol: float = RTOL, atol: float = ATOL) -> float:
    """Same tree structure, every array leaf close; returns the max abs difference."""
    got_leaves, got_tree = jax.tree_util.tree_flatten(got)
    want_leaves, want_tree = jax.tree_util.tree_flatten(want)
    assert got_tree == want_tree, f"tree structures differ:\n{got_tree}\n{want_tree}"
    worst = 0.0
    for g, w in zip(got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)
        if g.size:
            worst = max(worst, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))))
    return worst


@contextlib.contextmanager
def strict_warnings() -> Iterator[None]:
    """Every warning (a materialization warning included) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def collective_counts(hlo_text: str) -> dict[str, int]:
    """``{kind: count}`` of the collectives in compiled HLO text."""
    return {k: c for k, (c, _) in collectives(hlo_text).items()}


def specs(tree: Any) -> list:
    """The PartitionSpec of every array leaf's sharding."""
    return [leaf.sharding.spec for leaf in jax.tree_util.tree_leaves(tree)]


def fresh_copy(tree: Any) -> Any:
    """``tree`` with every array leaf copied into a new buffer (for donation tests)."""
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


def report(what: str, **numbers: Any) -> None:
    """One line of measured numbers (shown with ``pytest -s``)."""
    print(f"\n[integration] {what}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
