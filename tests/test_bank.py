"""Bank controller (hw/bank.py) against the golden bank: identical responses, status codes and
observable state, on Amaranth's simulator (quick) and under cocotb + Verilator (cosim)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from aqpim.hw.bank import BankController
from aqpim.sw.golden_device import GoldenBank

from aqpim import isa
from aqpim.isa import Command, Geometry, Response
from aqpim.numerics import Numerics

TINY = Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=12)
WATCHDOG = 20_000  # cycles any single command may take before the test calls it a hang


def run_amaranth(num: Numerics, commands: list[Command], *, seed: int = 0,
                 lanes: int | None = None) -> list[tuple[Response, int]]:
    """Run commands through the bank on Amaranth's simulator: (response, cycles) each.

    Random idle cycles on the command stream and random back-pressure on the responses.
    """
    dut = BankController(numerics=num, lanes=lanes)
    rng = random.Random(seed)
    out: list[tuple[Response, int]] = []

    async def bench(ctx) -> None:
        for cmd in commands:
            start = 0
            words = isa.encode_command(cmd)
            for w in words:
                while rng.random() < 0.2:
                    ctx.set(dut.i_cmd.valid, 0)
                    await ctx.tick()
                    start += 1
                ctx.set(dut.i_cmd.payload, w)
                ctx.set(dut.i_cmd.valid, 1)
                while True:
                    ready = ctx.get(dut.i_cmd.ready)  # settled value before the edge
                    await ctx.tick()
                    start += 1
                    if ready:
                        break
                    assert start < WATCHDOG, f"hang on {cmd!r} (input)"
            ctx.set(dut.i_cmd.valid, 0)
            got: list[int] = []
            need = None
            while need is None or len(got) < need:
                ready = rng.random() >= 0.2
                ctx.set(dut.o_rsp.ready, ready)
                valid, payload = ctx.get(dut.o_rsp.valid), ctx.get(dut.o_rsp.payload)
                await ctx.tick()
                start += 1
                assert start < WATCHDOG, f"hang on {cmd!r} (response)"
                if ready and valid:
                    got.append(payload)
                    if need is None:
                        need = 1 + ((payload >> 8) & 0xFFFF)  # header + its length field
            ctx.set(dut.o_rsp.ready, 0)
            out.append((isa.decode_response(got), start))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def test_directed_sequence_matches_golden() -> None:
    g = Geometry(TINY)
    n = TINY
    rng = np.random.default_rng(1)
    cbs = rng.integers(-128, 128, size=(2, n.subspaces, n.centroids, n.sub_dim))
    cmds = [isa.read_status(), isa.score(head=0), Command(13, data=(5, 6))]
    for kv in (0, 1):
        for m in range(n.subspaces):
            cmds.append(isa.load_cb(g, head=0, kv=kv, subspace=m,
                                    centroids=cbs[kv, m].reshape(-1).tolist()))
    x = rng.integers(-128, 128, size=(2, 11, n.head_dim))
    cmds += [
        isa.write_kv(g, head=0, token=0, keys=x[0, :3].tolist(), values=x[1, :3].tolist()),
        isa.write_kv(g, head=0, token=3, keys=x[0, 3:11].tolist(), values=x[1, 3:11].tolist()),
        isa.read_codes(head=0, kv=0, column=0, count=2),
        isa.read_codes(head=0, kv=1, column=1, count=1),
        isa.load_lut(g, head=0, lut=rng.integers(-32768, 32768, size=32).tolist()),
        isa.read_lut(head=0), isa.read_cb(head=0, kv=1, subspace=5),
        isa.score(head=0), isa.aggregate(head=0), isa.read_partial(head=0), isa.read_status(),
        isa.aggregate(head=0), isa.reset(), isa.read_status(),
    ]
    gold = GoldenBank(g)
    expected = [gold.execute(c) for c in cmds]
    got = run_amaranth(TINY, cmds)
    for i, (cmd, exp, (resp, _cyc)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, f"command {i} {cmd!r}: RTL {resp} != golden {exp}"


@pytest.mark.parametrize("seed", [2, 3])
def test_random_stream_amaranth(seed: int) -> None:
    from aqpim.sw.randcmd import build_stream

    cmds, expected, rejected = build_stream(Geometry(TINY), seed, 80)
    got = run_amaranth(TINY, cmds, seed=seed)
    assert rejected > 0
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, (
            f"seed {seed} command {i} {cmd!r}: RTL {resp} != golden {exp}; rerun with "
            f"pytest tests/test_bank.py -k 'random_stream_amaranth and {seed}'"
        )
