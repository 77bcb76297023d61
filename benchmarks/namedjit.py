"""namedjit vs jax.jit on a GPT-style block (forward + backward), same-run ratios.

Run: ``python benchmarks/namedjit.py`` (``--repeats N`` for more samples). Prints a
markdown table: step time, first call (trace + compile), cached dispatch on tiny inputs,
and the op count of XLA's optimized HLO for both programs.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import namax as nx
from namax.jit import namedjit

Batch, Pos, Embed, Head, Key, Mlp = nx.make_axes(batch=8, position=128, embed=256, head=4, key=64, mlp=1024)
KPos = Pos.alias("key_position")


# --- the same block twice: named, and plain jnp ------------------------------------------
def named_block_loss(p, x):
    """The block's loss; its axes come from the inputs (``x [batch, position, embed]``,
    ``p["wq"] [embed, head, key]``, ``p["w1"] [embed, mlp]``), so any sizes work."""
    Embed, Head, Key = p["wq"].axes
    Pos = x.resolve_axis("position")
    KPos = Pos.alias("key_position")

    def norm(v):
        mu = nx.mean(v, Embed)
        c = v - mu
        return c / nx.sqrt(nx.mean(c * c, Embed) + 1e-5)

    h = norm(x)
    q = nx.dot(h, p["wq"], axis=Embed)
    k = nx.dot(h, p["wk"], axis=Embed).rename({"position": "key_position"})
    v = nx.dot(h, p["wv"], axis=Embed).rename({"position": "key_position"})
    s = nx.dot(q, k, axis=Key) / np.sqrt(Key.size)
    causal = nx.arange(Pos).broadcast_axis(KPos) >= nx.arange(KPos)
    s = nx.where(causal, s, -1e9)
    e = nx.exp(s - nx.max(s, KPos))
    a = e / nx.sum(e, KPos)
    x = x + nx.dot(nx.dot(a, v, axis=KPos), p["wo"], axis=(Head, Key))
    h = nx.tanh(nx.dot(norm(x), p["w1"], axis=Embed))
    y = x + nx.dot(h, p["w2"], axis=p["w1"].axes[1])
    return nx.mean(y * y).array


def plain_block_loss(p, x):
    def norm(v):
        mu = v.mean(-1, keepdims=True)
        c = v - mu
        return c / jnp.sqrt((c * c).mean(-1, keepdims=True) + 1e-5)

    h = norm(x)
    q = jnp.einsum("bpe,ehk->bphk", h, p["wq"])
    k = jnp.einsum("bpe,ehk->bphk", h, p["wk"])
    v = jnp.einsum("bpe,ehk->bphk", h, p["wv"])
    s = jnp.einsum("bphk,bqhk->bphq", q, k) / np.sqrt(Key.size)
    pos = jnp.arange(Pos.size)
    causal = pos[:, None, None] >= pos[None, None, :]  # [p, 1, q]: query >= key
    s = jnp.where(causal.transpose(2, 1, 0)[None].transpose(0, 3, 2, 1), s, -1e9)
    e = jnp.exp(s - s.max(-1, keepdims=True))
    a = e / e.sum(-1, keepdims=True)
    x = x + jnp.einsum("bphk,ehk->bpe", jnp.einsum("bphq,bqhk->bphk", a, v), p["wo"].transpose(2, 0, 1))
    h = jnp.tanh(norm(x) @ p["w1"])
    y = x + h @ p["w2"]
    return jnp.mean(y * y)


def make_params(key, sizes=None):
    """The block's weights; ``sizes`` (``{"embed": 16, ...}``) overrides the default axis sizes."""
    sizes = sizes or {}
    E, H, K, M = (a.resize(sizes.get(a.name, a.size)) for a in (Embed, Head, Key, Mlp))
    ks = jax.random.split(key, 6)
    shapes = {"wq": (E, H, K), "wk": (E, H, K), "wv": (E, H, K), "wo": (H, K, E), "w1": (E, M), "w2": (M, E)}
    return {n: nx.named(jax.random.normal(k, tuple(a.size for a in ax)) * 0.05, ax)
            for k, (n, ax) in zip(ks, shapes.items())}


def interleaved(calls: dict, repeats: int, inner: int) -> dict:
    """Median seconds per call of each ``(fn, args)``, the candidates alternating run by run
    (so drift of the host's speed hits all of them alike)."""
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    samples = {k: [] for k in calls}
    for _ in range(repeats):
        for k, (fn, args) in calls.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                out = fn(*args)
            jax.block_until_ready(out)
            samples[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


def first_calls(make_a, args_a, make_b, args_b, repeats: int, lower_only: bool = False) -> tuple[float, float]:
    """Median cold-call seconds (trace + compile + run; ``lower_only``: trace + lower) of
    two programs, alternating."""
    samples: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for out, make, args in ((samples[0], make_a, args_a), (samples[1], make_b, args_b)):
            jax.clear_caches()
            fn = make()
            t0 = time.perf_counter()
            if lower_only:
                fn.lower(*args)
            else:
                jax.block_until_ready(fn(*args))
            out.append(time.perf_counter() - t0)
    return statistics.median(samples[0]), statistics.median(samples[1])


OP = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=\s*\S+\s+([a-z][a-z0-9-]*)\(")


def hlo_ops(compiled_text: str) -> collections.Counter:
    return collections.Counter(m.group(1) for line in compiled_text.splitlines() if (m := OP.match(line)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    r = args.repeats
    params = make_params(jax.random.PRNGKey(0))
    x = nx.named(jax.random.normal(jax.random.PRNGKey(1), (Batch.size, Pos.size, Embed.size)), (Batch, Pos, Embed))
    plain_params = {k: v.array for k, v in params.items()}

    named_step = lambda: namedjit(jax.value_and_grad(named_block_loss))
    plain_step = lambda: jax.jit(jax.value_and_grad(plain_block_loss))
    n_fn, p_fn = named_step(), plain_step()
    ln, _ = n_fn(params, x)
    lp, _ = p_fn(plain_params, x.array)
    np.testing.assert_allclose(ln, lp, rtol=2e-4)

    rows = []
    t = interleaved({"named": (n_fn, (params, x)), "plain": (p_fn, (plain_params, x.array))}, repeats=r, inner=5)
    rows.append(("step time fwd+bwd (ms)", t["named"] * 1e3, t["plain"] * 1e3))
    f_n, f_p = first_calls(named_step, (params, x), plain_step, (plain_params, x.array), repeats=r)
    rows.append(("first call: trace+compile+run (ms)", f_n * 1e3, f_p * 1e3))
    l_n, l_p = first_calls(named_step, (params, x), plain_step, (plain_params, x.array), repeats=r, lower_only=True)
    rows.append(("trace+lower (ms)", l_n * 1e3, l_p * 1e3))

    T = nx.Axis("t", 4)
    tiny = nx.ones((T,))
    tn = namedjit(lambda v: v * 2 + 1)
    tp = jax.jit(lambda v: v * 2 + 1)
    d = interleaved({"namedjit": (tn, (tiny,)), "raw": (tp, (tiny.array,)), "same": (tp, (tiny,))},
                    repeats=2 * r + 1, inner=1000)
    rows.append(("cached dispatch, tiny input (us); jax.jit on the raw array", d["namedjit"] * 1e6, d["raw"] * 1e6))
    rows.append(("cached dispatch, tiny input (us); jax.jit on the same NamedArray", d["namedjit"] * 1e6,
                 d["same"] * 1e6))

    ops_n = hlo_ops(n_fn.lower(params, x).compile().as_text())
    ops_p = hlo_ops(p_fn.lower(plain_params, x.array).compile().as_text())
    rows.append(("ops in optimized HLO", sum(ops_n.values()), sum(ops_p.values())))

    print(f"GPT-style block fwd+bwd: batch {Batch.size}, seq {Pos.size}, embed {Embed.size}; "
          f"median of {r}; jax {jax.__version__}, {jax.devices()[0].platform}")
    print()
    print("| measure | namedjit | jax.jit | ratio |")
    print("|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.3g} | {b:.3g} | {a / b:.3f} |")
    if ops_n != ops_p:
        diff = {k: (ops_n.get(k, 0), ops_p.get(k, 0)) for k in set(ops_n) | set(ops_p) if ops_n.get(k) != ops_p.get(k)}
        print(f"\nop kinds that differ (namedjit, jax.jit): {diff}")


if __name__ == "__main__":
    main()
