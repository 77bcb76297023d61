"""The seeds' attention examples (Haliax README, Levanter README), run verbatim on namax.

Each seed's code is kept as text, exactly as in the seed, and executed after an import
header that is the only change: ``namax`` in place of ``haliax``. The results are compared
with a plain ``jax.numpy`` implementation that uses the same weights.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import namax as nx

IMPORTS = """
import equinox as eqx
import jax
import jax.numpy as jnp
import namax as hax
import namax.nn as hnn
import namax as haliax
"""

# Haliax README, "Example: Attention" (after its imports), verbatim: examples/attention.py
# holds it between marker comments, so the example and this test run the same text.
EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "attention.py"
_text = EXAMPLE.read_text()
HALIAX_SEED = _text[_text.index("# --- seed code, verbatim"):_text.index("# --- end of seed code")]

# Haliax PyPI page: the same example but through haliax.nn.normalization.softmax.
PYPI_SOFTMAX_LINE = "scores = haliax.nn.normalization.softmax(scores, KPos)"

# Levanter README's Haliax section, verbatim (the Qkv/unbind and axis-first dot variant).
LEVANTER_SEED = '''
Pos = hax.Axis("position", 1024)  # sequence length
KPos = Pos.alias("key_position")
Head = hax.Axis("head", 8)  # number of attention heads
Key = hax.Axis("key", 64)  # key size
Embed = hax.Axis("embed", 512)  # embedding size

def attention_scores(Key, KPos, query, key, mask):
  # how similar is each query to each key
  scores = hax.dot(Key, query, key) / jnp.sqrt(Key.size)

  if mask is not None:
    scores -= 1E9 * (1.0 - mask)

  # convert to probabilities
  scores = hax.nn.softmax(scores, KPos)
  return scores


def attention(Key, KPos, query, key, value, mask):
  scores = attention_scores(Key, KPos, query, key, mask)
  answers = hax.dot(KPos, scores, value)

  return answers

# Causal Mask means that if pos >= key_pos, then pos can attend to key_pos
causal_mask = hax.arange(Pos).broadcast_axis(KPos) >= hax.arange(KPos)

class Attention(eqx.Module):
  proj_qkv: hnn.Linear  # input projection from [Embed] -> [(q, k, v), Head, Key]
  proj_answer: hnn.Linear  # output projection from [Head, Key] -> [Embed]

  @staticmethod
  def init(Embed, Head, Key, *, key):
    Qkv = hax.Axis("qkv", 3)  # create all three at once

    k_qkv, k_ans = jax.random.split(key, 2)
    proj_qkv = hnn.Linear.init(In=Embed, Out=(Qkv, Head, Key), key=k_qkv)
    proj_answer = hnn.Linear.init(In=(Head, Key), Out=Embed, key=k_ans)
    return Attention(proj_qkv, proj_answer)

  def __call__(self, x, mask=None):
    qkv_out = self.proj_qkv(x)
    q, k, v = qkv_out.unbind("qkv")

    # Rename k and v's Pos as haliax doesn't support unnamed axes or duplicate axes
    k = k.rename({"position": "key_position"})
    v = v.rename({"position": "key_position"})

    answers = attention(Key, KPos, q, k, v, causal_mask)

    x = self.proj_answer(answers)
    return x
'''


def run_seed(source: str) -> dict:
    namespace: dict = {}
    exec(compile(IMPORTS + source, "<seed>", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def haliax_seed():
    return run_seed(HALIAX_SEED)


@pytest.fixture(scope="module")
def levanter_seed():
    return run_seed(LEVANTER_SEED)


# --- plain-jnp reference ------------------------------------------------------------------


def raw(p, *names):
    return p.rearrange(names).array


def reference(q, k, v, w_out, b_out, causal=True):
    """Attention from projected [p, h, k] arrays to a [p, e] array, in plain jnp."""
    scores = jnp.einsum("phk,qhk->phq", q, k) / jnp.sqrt(k.shape[-1])
    if causal:
        mask = jnp.tril(jnp.ones((q.shape[0], k.shape[0]), dtype=bool))[:, None, :]
        scores = scores - 1e9 * (1.0 - mask)
    weights = jax.nn.softmax(scores, axis=-1)
    answers = jnp.einsum("phq,qhk->phk", weights, v)
    return jnp.einsum("phk,ehk->pe", answers, w_out) + b_out


def reference_haliax(model, x, causal=True):
    def project(lin):
        return jnp.einsum("pe,hke->phk", x, raw(lin.weight, "head", "key", "embed")) + raw(lin.bias, "head", "key")

    out = model.proj_answer
    return reference(project(model.proj_q), project(model.proj_k), project(model.proj_v),
                     raw(out.weight, "embed", "head", "key"), out.bias.array, causal)


def reference_levanter(model, x):
    lin = model.proj_qkv
    qkv = jnp.einsum("pe,chke->cphk", x, raw(lin.weight, "qkv", "head", "key", "embed")) \
        + raw(lin.bias, "qkv", "head", "key")[:, None]
    out = model.proj_answer
    return reference(qkv[0], qkv[1], qkv[2], raw(out.weight, "embed", "head", "key"), out.bias.array)


def call(model, x):
    return model(x)


def inputs(ns, seed=1):
    model = ns["Attention"].init(ns["Embed"], ns["Head"], ns["Key"], key=jax.random.key(0))
    x = nx.random.normal(jax.random.key(seed), (ns["Pos"], ns["Embed"]))
    return model, x


# --- tests ---------------------------------------------------------------------------------


def test_haliax_seed_matches_plain_jnp(haliax_seed):
    model, x = inputs(haliax_seed)
    y = jax.jit(call)(model, x)
    assert y.axis_names == ("position", "embed")
    expected = jax.jit(reference_haliax)(model, x.array)
    np.testing.assert_allclose(y.array, expected, rtol=1e-4, atol=1e-5)
    # the causal mask matters: without it the reference differs from namax's output
    unmasked = jax.jit(lambda m, a: reference_haliax(m, a, causal=False))(model, x.array)
    assert float(jnp.max(jnp.abs(unmasked - y.array))) > 1e-2


def test_haliax_seed_gradients_match_plain_jnp(haliax_seed):
    model, x = inputs(haliax_seed)
    cot = jax.random.normal(jax.random.key(2), (x.axes[0].size, x.axes[1].size))

    def loss_named(m, a):
        return jnp.sum(call(m, nx.named(a, x.axes)).rearrange(("position", "embed")).array * cot)

    def loss_ref(m, a):
        return jnp.sum(reference_haliax(m, a) * cot)

    g_named = jax.jit(jax.grad(loss_named, argnums=(0, 1)))(model, x.array)
    g_ref = jax.jit(jax.grad(loss_ref, argnums=(0, 1)))(model, x.array)
    leaves_named = jax.tree_util.tree_leaves(g_named)
    leaves_ref = jax.tree_util.tree_leaves(g_ref)
    assert len(leaves_named) == len(leaves_ref) == 9  # 4 weights, 4 biases, the input
    for a, b in zip(leaves_named, leaves_ref):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
    # the parameter gradients are NamedArrays with the parameters' axes
    assert g_named[0].proj_q.weight.axes == model.proj_q.weight.axes


def test_pypi_variant_uses_normalization_softmax():
    readme_line = "scores = haliax.nn.softmax(scores, KPos)"
    assert readme_line in HALIAX_SEED
    ns = run_seed(HALIAX_SEED.replace(readme_line, PYPI_SOFTMAX_LINE))
    assert "normalization" in ns["attention_scores"].__code__.co_names
    model, x = inputs(ns)
    y = jax.jit(call)(model, x)
    np.testing.assert_allclose(y.array, jax.jit(reference_haliax)(model, x.array), rtol=1e-4, atol=1e-5)


def test_levanter_seed_matches_plain_jnp(levanter_seed):
    model, x = inputs(levanter_seed)
    assert model.proj_qkv.weight.axis_names == ("qkv", "head", "key", "embed")
    y = jax.jit(call)(model, x)
    assert y.axis_names == ("position", "embed")
    np.testing.assert_allclose(y.array, jax.jit(reference_levanter)(model, x.array), rtol=1e-4, atol=1e-5)


def test_haliax_seed_with_batch_axis(haliax_seed):
    model, x = inputs(haliax_seed)
    Batch = nx.Axis("batch", 2)
    xb = nx.random.normal(jax.random.key(3), (Batch, haliax_seed["Pos"], haliax_seed["Embed"]))
    y = jax.jit(call)(model, xb)
    assert y.axis_names == ("batch", "position", "embed")
    for b in range(2):
        np.testing.assert_allclose(y.array[b], jax.jit(reference_haliax)(model, xb.array[b]), rtol=1e-4, atol=1e-5)


def test_seed_jaxpr_carries_attention_names(haliax_seed):
    model, x = inputs(haliax_seed)
    jaxpr = jax.make_jaxpr(call)(model, x)
    tags = {e.params["axes"] for e in jaxpr.jaxpr.eqns if e.primitive.name == "named_axes"}
    assert ("position", "head", "key") in tags  # projections
    assert ("position", "head", "key_position") in tags  # scores and their softmax
    assert ("position", "embed") in tags  # the output
