"""Helpers shared by the named-op and nn test files: random NamedArrays, raw views, closeness."""

import numpy as np

import namax as nx


def rand(axes, seed=0, scale=1.0):
    """A float32 NamedArray of standard normals with ``axes`` (seeded)."""
    shape = tuple(a.size for a in axes)
    return nx.named(np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale, axes)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def raw(x, *names):
    """``x``'s array with its axes in the order ``names``."""
    return x.rearrange(names).array
