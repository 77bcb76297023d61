"""A mixture-of-experts MLP with a top-k router, on ``namax.nn.MoELinear`` (``jax.lax.ragged_dot``).

Each token's router scores pick its ``k`` best experts; the token is copied once per pick
(a ``slot``), the slots are sorted by expert so each expert's tokens are consecutive, and
``group_sizes`` counts them. Two ``MoELinear`` layers (up, down) run every slot through its
expert in one grouped matmul each; the outputs are put back in slot order and summed over
the ``k`` picks with the router's (renormalised) probabilities as combine weights.

``main`` checks the layer against a dense computation that runs every expert on every
token and keeps the chosen ones.

Run: ``python examples/moe.py``
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

import namax as nx
import namax.nn as hnn


class MoEMLP(eqx.Module):
    """``x`` (a token axis and ``Embed``) -> ``Embed``, each token through its top-``k`` experts."""

    router: hnn.Linear
    up: hnn.MoELinear
    down: hnn.MoELinear
    TopK: nx.Axis = eqx.field(static=True)
    activation: Callable = eqx.field(static=True, default=hnn.relu_squared)

    @staticmethod
    def init(Experts: nx.Axis, Embed: nx.Axis, Mlp: nx.Axis, k: int, *, key: jax.Array) -> "MoEMLP":
        if not 1 <= k <= Experts.size:
            raise ValueError(f"MoEMLP.init: k={k} must lie in [1, {Experts.size}] (the size of {Experts.name!r})")
        k_router, k_up, k_down = jax.random.split(key, 3)
        return MoEMLP(
            hnn.Linear.init(Embed, Experts, key=k_router, use_bias=False),
            hnn.MoELinear.init(Experts, Embed, Mlp, key=k_up),
            hnn.MoELinear.init(Experts, Mlp, Embed, key=k_down),
            nx.Axis("top_k", k),
        )

    @property
    def Experts(self) -> nx.Axis:
        return self.up.Experts

    def route(self, x: nx.NamedArray) -> tuple[nx.NamedArray, nx.NamedArray]:
        """Per token: the ids of its ``k`` experts and their combine weights, both ``(token, top_k)``."""
        probs = hnn.softmax(self.router(x), self.Experts)
        weights, experts = nx.top_k(probs, self.Experts, self.TopK.size, new_axis=self.TopK)
        return experts, weights / weights.sum(self.TopK)

    def __call__(self, x: nx.NamedArray, Token: nx.AxisSelector = "token") -> nx.NamedArray:
        Token = x.resolve_axis(nx.axis_name(Token))
        experts, weights = self.route(x)
        Slot = nx.Axis("slot", Token.size * self.TopK.size)
        slot_expert = nx.flatten_axes(experts, (Token.name, self.TopK.name), Slot)  # token-major slots
        order = nx.argsort(slot_expert, Slot, stable=True)  # slots sorted by expert
        group_sizes = nx.bincount(slot_expert, self.Experts)
        slot_token = order // self.TopK.size  # the token each sorted slot came from
        h = self.up(nx.take(x, Token, slot_token), group_sizes)  # (slot, mlp)
        y_sorted = self.down(self.activation(h), group_sizes)  # (slot, embed)
        y = nx.take(y_sorted, Slot, nx.argsort(order, Slot))  # back in slot order
        y = nx.unflatten_axis(y, Slot, (Token, self.TopK))
        return (y * weights).sum(self.TopK)


def dense_reference(moe: MoEMLP, x: nx.NamedArray) -> jax.Array:
    """The same layer without routing tricks: every expert on every token, keep the top-k."""
    up, down = moe.up, moe.down
    w_up = up.weight.rearrange((up.Experts.name, up.In.name, up.Out.name)).array
    w_down = down.weight.rearrange((down.Experts.name, down.In.name, down.Out.name)).array
    xs = x.rearrange(("token", up.In.name)).array
    h = jnp.einsum("td,edm->etm", xs, w_up) + up.bias.array
    all_out = jnp.einsum("etm,emd->etd", moe.activation(h), w_down) + down.bias.array  # (expert, token, embed)
    experts, weights = moe.route(x)
    ids = experts.rearrange(("token", "top_k")).array
    w = weights.rearrange(("token", "top_k")).array
    picked = all_out[ids, jnp.arange(xs.shape[0])[:, None]]  # (token, top_k, embed)
    return jnp.einsum("tk,tkd->td", w, picked)


def main() -> None:
    Token, Experts, Embed, Mlp = nx.make_axes(token=16, experts=4, embed=8, mlp=12)
    moe = MoEMLP.init(Experts, Embed, Mlp, k=2, key=jax.random.key(0))
    x = nx.random.normal(jax.random.key(1), (Token, Embed))
    y = jax.jit(lambda m, x: m(x))(moe, x)
    ref = dense_reference(moe, x)
    err = float(jnp.max(jnp.abs(y.rearrange(("token", "embed")).array - ref)))
    print(f"MoE output {y.axes}; max |moe - dense| = {err:.2e}")
    assert err < 1e-4, err


if __name__ == "__main__":
    main()
