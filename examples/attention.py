"""The Haliax README's attention example, run on namax.

The code between the two marker comments is the seed (``/work/shared/seeds/haliax-readme.md``)
verbatim; only the imports differ (``namax`` in place of ``haliax``; the seed also uses the
name ``haliax`` without importing it, so it is imported here under that name). Below the
seed, ``main`` builds the module, runs it on random input and compares it with a plain
``jax.numpy`` implementation of the same computation using the same weights.

Run: ``python examples/attention.py``
"""

# --- imports: the only lines changed from the seed -------------------------------------
import equinox as eqx
import jax
import jax.numpy as jnp
import namax as hax
import namax.nn as hnn
import namax as haliax

# --- seed code, verbatim ---------------------------------------------------------------
Pos = hax.Axis("position", 1024)  # sequence length
KPos = Pos.alias("key_position")
Head = hax.Axis("head", 8)  # number of attention heads
Key = hax.Axis("key", 64)  # key size
Embed = hax.Axis("embed", 512)  # embedding size

# alternatively:
#Pos, KPos, Head, Key, Embed = hax.make_axes(pos=1024, key_pos=1024, head=8, key=64, embed=512)


def attention_scores(Key, KPos, query, key, mask):
    # how similar is each query to each key
    scores = hax.dot(query, key, axis=Key) / jnp.sqrt(Key.size)

    if mask is not None:
        scores -= 1E9 * (1.0 - mask)

    # convert to probabilities
    scores = haliax.nn.softmax(scores, KPos)
    return scores


def attention(Key, KPos, query, key, value, mask):
    scores = attention_scores(Key, KPos, query, key, mask)
    answers = hax.dot(scores, value, axis=KPos)

    return answers


# Causal Mask means that if pos >= key_pos, then pos can attend to key_pos
causal_mask = hax.arange(Pos).broadcast_axis(KPos) >= hax.arange(KPos)


class Attention(eqx.Module):
    proj_q: hnn.Linear  # [Embed] -> [Head, Key]
    proj_k: hnn.Linear  # [Embed] -> [Head, Key]
    proj_v: hnn.Linear  # [Embed] -> [Head, Key]
    proj_answer: hnn.Linear  # output projection from [Head, Key] -> [Embed]

    @staticmethod
    def init(Embed, Head, Key, *, key):
        k_q, k_k, k_v, k_ans = jax.random.split(key, 4)
        proj_q = hnn.Linear.init(In=Embed, Out=(Head, Key), key=k_q)
        proj_k = hnn.Linear.init(In=Embed, Out=(Head, Key), key=k_k)
        proj_v = hnn.Linear.init(In=Embed, Out=(Head, Key), key=k_v)
        proj_answer = hnn.Linear.init(In=(Head, Key), Out=Embed, key=k_ans)
        return Attention(proj_q, proj_k, proj_v, proj_answer)

    def __call__(self, x, mask=None):
        q = self.proj_q(x)
        # Rename "position" to "key_position" for self attention
        k = self.proj_k(x).rename({"position": "key_position"})
        v = self.proj_v(x).rename({"position": "key_position"})

        answers = attention(Key, KPos, q, k, v, causal_mask)

        x = self.proj_answer(answers)
        return x
# --- end of seed code ------------------------------------------------------------------


def _raw(p, *names):
    """A parameter's array with its axes in the order ``names``."""
    return p.rearrange(names).array


def reference_attention(model: Attention, x: jax.Array) -> jax.Array:
    """The same computation in plain jax.numpy; ``x`` is a [position, embed] array."""
    def project(lin):
        return jnp.einsum("pe,hke->phk", x, _raw(lin.weight, "head", "key", "embed")) + _raw(lin.bias, "head", "key")

    q, k, v = project(model.proj_q), project(model.proj_k), project(model.proj_v)
    scores = jnp.einsum("phk,qhk->phq", q, k) / jnp.sqrt(k.shape[-1])
    mask = jnp.tril(jnp.ones((x.shape[0], x.shape[0]), dtype=bool))[:, None, :]
    scores = scores - 1e9 * (1.0 - mask)
    weights = jax.nn.softmax(scores, axis=-1)
    answers = jnp.einsum("phq,qhk->phk", weights, v)
    out = model.proj_answer
    return jnp.einsum("phk,ehk->pe", answers, _raw(out.weight, "embed", "head", "key")) + out.bias.array


def main() -> float:
    k_model, k_x = jax.random.split(jax.random.key(0))
    model = Attention.init(Embed, Head, Key, key=k_model)
    x = hax.random.normal(k_x, (Pos, Embed))
    y = jax.jit(lambda m, x: m(x))(model, x)
    expected = jax.jit(reference_attention)(model, x.array)
    diff = float(jnp.max(jnp.abs(y.rearrange(("position", "embed")).array - expected)))
    print(f"output axes: {y.axes}")
    print(f"max |namax - plain jnp| = {diff:.3e}")
    return diff


def make():
    """A ``dump-hlo`` target: ``dump-hlo examples/attention.py:make --stage all``.

    Returns the function and its example arguments (the module and an input with a batch
    axis, so a mapping such as ``batch=data,head=model`` has something to shard).
    """
    k_model, k_x = jax.random.split(jax.random.key(0))
    model = Attention.init(Embed, Head, Key, key=k_model)
    x = hax.random.normal(k_x, (hax.Axis("batch", 8), Pos, Embed))
    return (lambda m, x: m(x)), (model, x)


if __name__ == "__main__":
    main()
