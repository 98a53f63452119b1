# amaranth: UnusedElaboratable=no
"""The FP16 MAC area reference (hw/fp16_mac.py) computes what its bit model says.

It exists to be synthesized (docs/silicon.md), but an area reference that does not compute a
MAC would make the comparison meaningless; its bit model is checked against NumPy's float16.
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator
from aqpim.hw.fp16_mac import FP16MAC, fp16_mac_ref


def _h(x: float) -> int:
    return int(np.float16(x).view(np.uint16))


def _f(b: int) -> float:
    return float(np.uint16(b).view(np.float16))


def test_bit_model_is_an_fp16_mac() -> None:
    assert _f(fp16_mac_ref(_h(1.0), _h(1.5), _h(2.0))) == 4.0
    assert _f(fp16_mac_ref(_h(4.0), _h(-1.5), _h(2.0))) == 1.0
    assert fp16_mac_ref(_h(3.0), _h(-1.5), _h(2.0)) == 0
    rng = np.random.default_rng(0)
    for _ in range(200):
        acc, ref = 0, np.float32(0)
        for _ in range(16):
            a, b = np.float16(rng.normal()), np.float16(rng.normal())
            acc = fp16_mac_ref(acc, _h(a), _h(b))
            ref = np.float16(np.float32(ref) + np.float32(a) * np.float32(b))
        assert abs(_f(acc) - float(ref)) <= 0.01 * max(abs(float(ref)), 1e-2)


def test_rtl_matches_bit_model() -> None:
    lanes, steps = 4, 40
    dut = FP16MAC(lanes=lanes)
    rng = np.random.default_rng(1)
    a = [[_h(np.float16(rng.normal() * 4)) for _ in range(lanes)] for _ in range(steps)]
    b = [[_h(np.float16(rng.normal())) for _ in range(lanes)] for _ in range(steps)]
    got: list[list[int]] = []

    async def bench(ctx) -> None:
        for t in range(steps + 2):
            if t < steps:
                for i in range(lanes):
                    ctx.set(dut.a[i], a[t][i])
                    ctx.set(dut.b[i], b[t][i])
            ctx.set(dut.en, int(t < steps))
            await ctx.tick()
        got.append([ctx.get(dut.acc[i]) for i in range(lanes)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [0] * lanes
    for t in range(steps):
        want = [fp16_mac_ref(want[i], a[t][i], b[t][i]) for i in range(lanes)]
    assert got[0] == want
