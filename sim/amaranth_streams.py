"""Stream drivers for Amaranth's own simulator (quick unit tests of the attention units).

The co-simulation helpers in ``aqpim.sim`` drive Verilog under cocotb; these do the same job on
``amaranth.sim`` (no build), with random idle cycles on every source and random backpressure on
every sink, seeded. Payloads go in and come out as plain integers (the flat bit vector of the
payload layout), packed and unpacked with :func:`aqpim.sim.streams.pack` / ``unpack``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field

from amaranth.hdl import Value
from amaranth.sim import Simulator


@dataclass
class Source:
    """Beats to present on an ``In`` stream port, in order."""

    port: object
    beats: Sequence[int]
    idle: float = 0.3
    sent_at: list[int] = dc_field(default_factory=list)


@dataclass
class Sink:
    """Collects the beats of an ``Out`` stream port."""

    port: object
    expect: int
    backpressure: float = 0.3
    beats: list[object] = dc_field(default_factory=list)
    got_at: list[int] = dc_field(default_factory=list)


def run_phases(
    dut: object,
    phases: Sequence[tuple[Sequence[Source], Sequence[Sink]]],
    *,
    seed: int,
    max_cycles: int = 200_000,
    setup: Callable | None = None,
) -> int:
    """Run phases in order; a phase ends when its sources are drained and its sinks full.

    Each cycle every source with beats left presents its next beat unless it idles (probability
    ``idle``), and every sink is ready unless it applies backpressure. Returns the cycle count.
    Raises AssertionError (with the seed) when ``max_cycles`` pass first.
    """
    rng = random.Random(seed)
    cycles = [0]

    async def bench(ctx) -> None:
        if setup is not None:
            await setup(ctx)
        for sources, sinks in phases:
            pos = [0] * len(sources)
            presenting = [False] * len(sources)
            while any(p < len(s.beats) for p, s in zip(pos, sources, strict=True)) or any(
                len(k.beats) < k.expect for k in sinks
            ):
                if cycles[0] >= max_cycles:
                    raise AssertionError(f"timeout after {max_cycles} cycles (seed {seed})")
                for i, s in enumerate(sources):
                    if not presenting[i] and pos[i] < len(s.beats) and rng.random() >= s.idle:
                        presenting[i] = True
                    ctx.set(s.port.valid, presenting[i])
                    if presenting[i]:
                        ctx.set(Value.cast(s.port.payload), s.beats[pos[i]])
                for k in sinks:
                    ctx.set(k.port.ready, rng.random() >= k.backpressure)
                fired_src = [presenting[i] and ctx.get(s.port.ready)
                             for i, s in enumerate(sources)]
                fired_snk = [ctx.get(k.port.valid) and ctx.get(k.port.ready) for k in sinks]
                snk_vals = [ctx.get(Value.cast(k.port.payload)) if f else None
                            for k, f in zip(sinks, fired_snk, strict=True)]
                await ctx.tick()
                for i, s in enumerate(sources):
                    if fired_src[i]:
                        s.sent_at.append(cycles[0])
                        pos[i] += 1
                        presenting[i] = False
                for k, f, v in zip(sinks, fired_snk, snk_vals, strict=True):
                    if f:
                        k.beats.append(v)
                        k.got_at.append(cycles[0])
                cycles[0] += 1
            for s in sources:
                ctx.set(s.port.valid, 0)
            for k in sinks:
                ctx.set(k.port.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return cycles[0]
