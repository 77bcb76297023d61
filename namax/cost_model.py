"""The cost model :func:`namax.plan` ranks compiled candidates with.

Seconds of one step per device from XLA's own counts of the compiled program; constants for
this CPU host by default, or timed on any mesh with :meth:`CostModel.calibrate`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .partitioning import auto_twin

CHAIN = 16
"""Dependent small all-reduces timed together to read the fixed cost of one."""


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Predicted seconds of one step per device:
    ``flops / peak_flops + bytes_accessed / mem_bw + collective_bytes / link_bw
    + collective_ops * collective_latency``.

    The defaults are constants for this CPU host (not measured at import, so plans are
    deterministic): ``peak_flops=1e11`` FLOP/s and ``mem_bw=5e9`` B/s are rounded from a
    1024x1024 f32 matmul (~2e11 FLOP/s over both cores) and a 32 MiB add (~5e9 B/s) timed
    once on it; ``link_bw=1e9`` B/s stands in for an interconnect (the simulated devices
    exchange data through host copies behind a rendezvous, slower than one plain copy).
    Pass your accelerator's numbers for real hardware.

    ``collective_latency=2e-5`` s is the fixed cost of one collective op (the alpha of the
    alpha-beta model; on this host's simulated devices each op is a rendezvous of every
    device thread): rounded from the step time an FSDP mapping (36 collective ops) adds
    over data parallel (1 op) on GPT-2 beyond its extra bytes.

    >>> CostModel().seconds(flops=1e11, bytes_accessed=5e9, collective=1e9)
    3.0
    >>> round(CostModel().seconds(0, 0, 0, collective_ops=50), 6)
    0.001
    """

    peak_flops: float = 1e11
    mem_bw: float = 5e9
    link_bw: float = 1e9
    collective_latency: float = 2e-5

    def seconds(self, flops: float, bytes_accessed: float, collective: float, collective_ops: int = 0) -> float:
        return (flops / self.peak_flops + bytes_accessed / self.mem_bw + collective / self.link_bw
                + collective_ops * self.collective_latency)

    @classmethod
    def calibrate(cls, mesh: Mesh, runs: int = 5) -> "CostModel":
        """This host's constants, timed on ``mesh``'s devices with every device busy at once
        (as in a step): a matmul (``peak_flops``), a streaming elementwise op (``mem_bw``),
        a chain of small all-reduces (``collective_latency``: the time per link beyond the
        same chain without the all-reduces) and a 1 MiB all-reduce and all-gather over every
        mesh axis (``link_bw``: their bytes over their time beyond a program without them). FLOPs and bytes
        are XLA's own ``cost_analysis()`` counts, as :func:`namax.plan` uses them. On one
        device the collective constants stay the defaults. Medians of ``runs`` interleaved
        runs; a second or two on a CPU host.

        >>> import numpy as np, jax
        >>> model = CostModel.calibrate(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)), runs=2)
        >>> model.peak_flops > 0 and model.mem_bw > 0, model.link_bw == CostModel().link_bw
        (True, True)
        """
        from .timing import interleaved_medians

        mesh = auto_twin(mesh)
        every = tuple(mesh.axis_names)
        spec = PartitionSpec(every)
        sharding = NamedSharding(mesh, spec)

        def compiled(body: Callable, per_device: tuple) -> tuple:
            x = jax.device_put(jnp.ones((mesh.size * per_device[0],) + per_device[1:], jnp.float32), sharding)
            fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec))
            exe = fn.lower(x).compile()
            cost = exe.cost_analysis()
            cost = (cost[0] if isinstance(cost, (list, tuple)) and cost else cost) or {}
            return exe, x, float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))

        def chain(op: Callable, count: int) -> Callable:
            def body(v):
                for _ in range(count):  # each depends on the one before: none merged or overlapped
                    v = op(v * 0.5)
                return v
            return body

        mib = 2**20 // 4  # f32 elements in 1 MiB
        programs = {
            "matmul": compiled(lambda v: v @ v, (512, 512)),
            "stream": compiled(lambda v: v * 2.0 + 1.0, (8 * mib,)),
            "small": compiled(lambda v: v * 2.0, (256,)),
        }
        if mesh.size > 1:
            programs.update({
                "chained_all_reduces": compiled(chain(lambda v: jax.lax.psum(v, every), CHAIN), (256,)),
                "chained_ops": compiled(chain(lambda v: v + 1.0, CHAIN), (256,)),
                "all_reduce": compiled(lambda v: jax.lax.psum(v * 2.0, every), (mib,)),
                "all_gather": compiled(lambda v: jax.lax.all_gather(v * 2.0, every, tiled=True),
                                       (mib // mesh.size,)),
                "gather_base": compiled(lambda v: v * 2.0, (mib // mesh.size,)),
                "reduce_base": compiled(lambda v: v * 2.0, (mib,)),
            })
        t = interleaved_medians({k: functools.partial(exe, x) for k, (exe, x, _, _) in programs.items()},
                                runs=runs, steps=3, warmup=1, settle=1)
        overhead = t["small"]  # launching a program at all
        _, _, s_flops, s_bytes = programs["stream"]
        mem_bw = s_bytes / max(t["stream"] - overhead, t["stream"] / 2)
        _, _, m_flops, m_bytes = programs["matmul"]
        compute = max(t["matmul"] - overhead - m_bytes / mem_bw, t["matmul"] / 4)
        out = dict(peak_flops=m_flops / compute, mem_bw=mem_bw)
        if mesh.size > 1:
            latency = max((t["chained_all_reduces"] - t["chained_ops"]) / CHAIN, 1e-7)
            per_byte = []
            for kind, base, nbytes in (("all_reduce", "reduce_base", mib * 4), ("all_gather", "gather_base", mib * 4)):
                extra = max(t[kind] - t[base] - latency, t[kind] / 10)
                per_byte.append(extra / nbytes)
            out.update(link_bw=len(per_byte) / sum(per_byte), collective_latency=latency)
        return dataclasses.replace(cls(), **out)


__all__ = ["CostModel"]
