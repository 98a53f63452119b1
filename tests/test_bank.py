"""Bank controller (hw/bank.py) against the golden bank: identical responses, status codes and
observable state, on Amaranth's simulator (quick) and under cocotb + Verilator (cosim)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from aqpim.hw.bank import BankController
from aqpim.hw.command import ResponseHeader
from aqpim.sw.host.golden_device import GoldenBank

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Command, Response
from aqpim.numerics import Numerics

TINY = Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=12)
# separate key / value geometry: keys d = 8 (16 bits, 16 tokens per column), values d = 4
# (32 bits, 8 tokens per column); 20 tokens cross columns on both sides
ASYM = Numerics(head_dim=32, subspaces=4, centroids=16, value_subspaces=8, value_centroids=16,
                token_capacity=20)
# one token over two columns (d = 1, 128 codes of 4 bits)
WIDE = Numerics(head_dim=128, subspaces=128, centroids=16, token_capacity=6)
WATCHDOG = 20_000  # cycles any single command may take before the test calls it a hang


def run_amaranth(num: Numerics, commands: list[Command], *, seed: int = 0,
                 lanes: int | None = None, idle: float = 0.2,
                 queries: int = 1, heads: int = 1) -> list[tuple[Response, int]]:
    """Run commands through the bank on Amaranth's simulator: (response, cycles) each.

    Random idle cycles on the command stream and random back-pressure on the responses, each
    with probability ``idle`` (0: the bank's own cycles, as the cycle check wants them).
    """
    dut = BankController(numerics=num, lanes=lanes, queries=queries, heads=heads)
    rng = random.Random(seed)
    out: list[tuple[Response, int]] = []

    async def bench(ctx) -> None:
        for cmd in commands:
            start = 0
            words = isa.encode_command(cmd)
            for w in words:
                while rng.random() < idle:
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
                ready = rng.random() >= idle
                ctx.set(dut.o_rsp.ready, ready)
                valid, payload = ctx.get(dut.o_rsp.valid), ctx.get(dut.o_rsp.payload)
                await ctx.tick()
                start += 1
                assert start < WATCHDOG, f"hang on {cmd!r} (response)"
                if ready and valid:
                    got.append(payload)
                    if need is None:  # header + the data beats its length field announces
                        need = 1 + ResponseHeader.from_bits(payload).length
            ctx.set(dut.o_rsp.ready, 0)
            out.append((isa.decode_response(got), start))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def _directed(num: Numerics, tokens: tuple[int, int], seed: int = 1) -> list[Command]:
    """Codebooks, two WRITE_KVs (the second continuing a column), reads of every kind, a
    pass pair, and the bad and reset cases around them."""
    g = Geometry(num)
    rng = np.random.default_rng(seed)
    cmds = [isa.read_status(), isa.score(head=0), Command(13, data=(5, 6))]
    for kv in (0, 1):
        s = num.side(kv)
        for m in range(s.subspaces):
            cb = rng.integers(-128, 128, size=(s.centroids, s.sub_dim))
            cmds.append(isa.load_cb(g, head=0, kv=kv, subspace=m,
                                    centroids=cb.reshape(-1).tolist()))
    a, b = tokens
    x = rng.integers(-128, 128, size=(2, a + b, num.head_dim))
    cmds += [
        isa.write_kv(g, head=0, token=0, keys=x[0, :a].tolist(), values=x[1, :a].tolist()),
        isa.write_kv(g, head=0, token=a, keys=x[0, a:].tolist(), values=x[1, a:].tolist()),
    ]
    for kv in (0, 1):
        used = g.used_columns(a + b, kv)
        cmds += [isa.read_codes(head=0, kv=kv, column=0, count=used),
                 isa.read_codes(head=0, kv=kv, column=used - 1, count=1),
                 isa.read_codes(head=0, kv=kv, column=used - 1, count=2),  # one too many
                 isa.read_cb(head=0, kv=kv, subspace=num.side(kv).subspaces - 1)]
    lut = rng.integers(num.lut_min, num.lut_max + 1, size=num.subspaces * num.centroids)
    cmds += [
        isa.load_lut(g, head=0, lut=lut.tolist()),
        isa.read_lut(head=0),
        isa.score(head=0), isa.aggregate(head=0), isa.read_partial(head=0), isa.read_status(),
        isa.aggregate(head=0), isa.reset(), isa.read_status(),
    ]
    return cmds


@pytest.mark.parametrize(("num", "tokens", "lanes"), [
    (TINY, (3, 8), None), (ASYM, (5, 14), None), (WIDE, (2, 3), 16),
], ids=["tiny", "asym", "wide"])
def test_directed_sequence_matches_golden(num: Numerics, tokens: tuple[int, int],
                                          lanes: int | None) -> None:
    cmds = _directed(num, tokens)
    gold = GoldenBank(Geometry(num))
    expected = [gold.execute(c) for c in cmds]
    assert sum(not e.ok for e in expected) == 5  # the planted bad commands only
    got = run_amaranth(num, cmds, lanes=lanes)
    for i, (cmd, exp, (resp, _cyc)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, f"command {i} {cmd!r}: RTL {resp} != golden {exp}"


@pytest.mark.parametrize("seed", [2, 3])
def test_random_stream_amaranth(seed: int) -> None:
    from aqpim.sim.randcmd import build_stream

    cmds, expected, rejected = build_stream(Geometry(TINY), seed, 80)
    got = run_amaranth(TINY, cmds, seed=seed)
    assert rejected > 0
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, (
            f"seed {seed} command {i} {cmd!r}: RTL {resp} != golden {exp}; rerun with "
            f"pytest tests/test_bank.py -k 'random_stream_amaranth and {seed}'"
        )


@pytest.mark.parametrize(("num", "tokens", "lanes", "queries"), [
    (ASYM, (5, 14), 16, 1),
    (ASYM, (5, 14), 4, 1),  # K / lanes = 4 encoder passes per sub-vector
    (ASYM, (5, 14), 16, 3),  # GQA: three histograms through the value MAC
    # M_k = 128: an AGGREGATE right after SCORE takes one cycle more on the RTL than the model
    # says (also at one column per token; cause not found, docs/bank.md)
    pytest.param(WIDE, (2, 3), 16, 1, marks=[pytest.mark.slow, pytest.mark.xfail(
        strict=True, reason="M_k = 128: AGGREGATE after SCORE one cycle above the model")]),
], ids=["asym", "asym-lanes4", "asym-G3", "wide"])
def test_model_cycles_match_rtl_amaranth(num: Numerics, tokens: tuple[int, int],
                                         lanes: int, queries: int) -> None:
    """The performance model's unit cycles equal the RTL's for every command of the directed
    sequence (no idle input, no back-pressure), on the new layouts: SCORE one key column per
    cycle, AGGREGATE one token or one value column per cycle, LOAD_CB / READ_CB of the side."""
    from aqpim.sw.perf.hbm3 import HBM3Config, command_unit_cycles, score_drain_cycles

    hw = HBM3Config.load()
    hw = hw.replace(units={**hw.units, "aqpim": {**hw.units["aqpim"], "encoder_lanes": lanes}})
    cmds = _directed(num, tokens)
    got = run_amaranth(num, cmds, lanes=lanes, idle=0.0, queries=queries)
    held, last, bad, seen = 0, None, [], set()
    reads = ("READ_CODES", "READ_CB", "READ_LUT")
    for i, (cmd, (resp, cycles)) in enumerate(zip(cmds, got, strict=True)):
        name = cmd.opcode.name if isinstance(cmd.opcode, isa.Opcode) else "BAD"
        n = cmd.count if name == "WRITE_KV" else held
        model = command_unit_cycles(hw, num, name, n, cmd.length, count=cmd.count,
                                    accepted=resp.ok, kv=cmd.kv, queries=queries)
        if resp.ok and name == "AGGREGATE" and last == "SCORE":  # the last score in flight
            model += score_drain_cycles(hw, Geometry(num))
        if last in reads:
            # a header offered in the very next cycle waits one: RSP_MEM returns to IDLE a
            # cycle after its last beat (the RTL device's commands never come that soon)
            model += 1
        last = None if last in reads else last
        if resp.ok:
            held = {"WRITE_KV": held + cmd.count, "RESET": 0}.get(name, held)
            last = name
            seen.add(name)
        if model != cycles:
            bad.append((i, name, n, model, cycles))
    assert not bad, f"model != RTL cycles (index, opcode, tokens, model, RTL): {bad}"
    assert {"SCORE", "AGGREGATE", "WRITE_KV", "LOAD_CB", "READ_CB", "READ_CODES"} <= seen


def test_gqa_bank_matches_golden() -> None:
    """G = 3 query heads per pass on the bank: LUTs loaded in order (and the out-of-order,
    other-set and past-G errors), READ_LUT of each, one SCORE / AGGREGATE, three partials and
    the status count, all equal to the golden bank's; then a random stream with G = 3."""
    from aqpim.sim.randcmd import build_stream

    num, G = ASYM, 3
    g = Geometry(num, queries=G)
    cmds = _directed(num, (5, 14))
    rng = np.random.default_rng(3)
    luts = rng.integers(num.lut_min, num.lut_max + 1, size=(G, num.subspaces * num.centroids))
    at = next(i for i, c in enumerate(cmds) if c.opcode == isa.Opcode.LOAD_LUT)
    gqa = [isa.load_lut(g, head=0, lut=luts[1].tolist(), query=1),  # no set yet
           isa.load_lut(g, head=0, lut=luts[0].tolist(), query=0),
           isa.load_lut(g, head=0, lut=luts[2].tolist(), query=2),  # skips q = 1
           isa.load_lut(g, head=0, lut=luts[1].tolist(), query=1),
           isa.load_lut(g, head=0, lut=luts[2].tolist(), query=2),
           isa.load_lut(g, head=0, lut=luts[2].tolist(), query=3),  # q >= G
           isa.read_status(), isa.read_lut(head=0, query=2), isa.read_lut(head=0, query=1),
           isa.score(head=0), isa.aggregate(head=0),
           *[isa.read_partial(head=0, query=q) for q in range(G + 1)],
           isa.load_lut(g, head=0, lut=luts[0].tolist(), query=0), isa.score(head=0),
           isa.aggregate(head=0), isa.read_partial(head=0, query=1),  # one query head now
           isa.read_partial(head=0, query=0), isa.read_status()]
    cmds = cmds[:at] + gqa
    gold = GoldenBank(g)
    expected = [gold.execute(c) for c in cmds]
    assert [e.status for e in expected[at:]].count(isa.Status.OK) == 16  # 5 planted errors
    got = run_amaranth(num, cmds, queries=G)
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, f"command {i} {cmd!r}: RTL {resp} != golden {exp}"
    cmds, expected, rejected = build_stream(g, 7, 60)
    got = run_amaranth(num, cmds, seed=7, queries=G)
    assert rejected > 0
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, f"stream command {i} {cmd!r}: RTL {resp} != golden {exp}"


def test_random_stream_amaranth_key_value_geometry() -> None:
    """Separate key / value (M, K): every response (codes read back per side, partials,
    status) equals the golden bank's, on a random stream with invalid commands mixed in."""
    from aqpim.sim.randcmd import build_stream

    num, seed = ASYM, 4
    cmds, expected, rejected = build_stream(Geometry(num), seed, 70)
    got = run_amaranth(num, cmds, seed=seed)
    assert rejected > 0
    ops = {c.opcode for c, e in zip(cmds, expected, strict=True) if e.ok}
    assert {isa.Opcode.WRITE_KV, isa.Opcode.READ_CODES, isa.Opcode.AGGREGATE} <= ops, ops
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, (
            f"seed {seed} command {i} {cmd!r}: RTL {resp} != golden {exp}; rerun with "
            f"pytest tests/test_bank.py -k 'key_value_geometry'"
        )


# ----------------------------------------------------------------------------------------------
# cocotb + Verilator: the RTL device against the golden device
# ----------------------------------------------------------------------------------------------
SMALL = Numerics(head_dim=32, subspaces=16, centroids=16, token_capacity=64)  # tpc = 4
FULL = Numerics(head_dim=128, subspaces=64, centroids=16, token_capacity=576)  # the demo's build


def decode_on_both(num: Numerics, banks: int, kv_heads: int, tokens: int, steps: int,
                   rtl, seed: int = 0) -> dict[str, float]:
    """Prefill + decode steps through the driver on the RTL and the golden device.

    Returns the worst relative error of the RTL's output against exact attention and against
    float PQ attention with the codebooks the driver trained (same data, iterations, seed).
    """
    from aqpim.sim.session import PairedDecode
    from aqpim.sw.golden import pq, reference
    from aqpim.sw.golden.synthetic import generate

    data = generate(heads=kv_heads, tokens=tokens + steps, head_dim=num.head_dim, seed=seed)
    q, k, v = data["q"], data["k"], data["v"]
    books = [[pq.train_codebooks(x[h, :tokens], subspaces=side.subspaces,
                                 centroids=side.centroids, iters=8, seed=seed)
              for x, side in ((k, num.keys), (v, num.values))]
             for h in range(kv_heads)]
    rtl.execute(None, isa.reset())
    run = PairedDecode(rtl, kv_heads=kv_heads, iters=8, seed=seed)
    run.prefill(k[:, :tokens], v[:, :tokens])
    worst = worst_pq = 0.0
    for s in range(steps):
        t = tokens + s
        qs = q + 0.01 * s * np.roll(q, 1, axis=1)
        st = run.step(qs, k[:, t], v[:, t])
        np.testing.assert_array_equal(st.out, st.golden, err_msg=f"step {s}: RTL != golden")
        exact = np.stack([reference.exact_attention(qs[h], k[h, :t + 1], v[h, :t + 1])
                          for h in range(kv_heads)])
        fpq = np.stack([reference.pq_attention(qs[h], k[h, :t + 1], v[h, :t + 1], *books[h])
                        for h in range(kv_heads)])
        err = float(np.linalg.norm(st.out - exact) / np.linalg.norm(exact))
        err_pq = float(np.linalg.norm(st.out - fpq) / np.linalg.norm(fpq))
        worst, worst_pq = max(worst, err), max(worst_pq, err_pq)
        print(f"step {s}: {t + 1} tokens, RTL == golden bit for bit, relative error vs exact "
              f"attention {err:.4f}, vs float PQ {err_pq:.4f}")
    return {"worst_rel_err": worst, "worst_rel_err_vs_pq": worst_pq}


def random_streams_on(rtl, geometry: Geometry, seeds: range, commands: int) -> int:
    """Random streams (invalid commands mixed in, state observed after each rejected one) on
    bank 0 of ``rtl``; returns the number of random commands run."""
    from aqpim.sim.randcmd import build_stream

    total = 0
    for seed in seeds:
        cmds, expected, rejected = build_stream(geometry, seed, commands)
        (r,) = rtl.execute(0, isa.reset())
        assert r.ok
        for i, (cmd, exp) in enumerate(zip(cmds, expected, strict=True)):
            (got,) = rtl.execute(0, cmd)
            assert got == exp, (
                f"seed {seed} command {i} {cmd!r}: RTL {got} != golden {exp} "
                f"(rebuild the stream with aqpim.sim.randcmd.build_stream(geometry, {seed}, "
                f"{commands}))"
            )
        assert rejected > 0
        total += commands
    return total


@pytest.fixture(scope="module")
def rtl_small():
    from aqpim.sim.rtl_device import RtlDevice

    with RtlDevice(Geometry(SMALL), 4, seed=1) as dev:
        yield dev


@pytest.mark.cosim
def test_rtl_decode_small(rtl_small) -> None:
    res = decode_on_both(SMALL, 4, 2, 100, 2, rtl_small)
    # The integer pipeline stays close to float PQ with the same codebooks (measured 0.09);
    # the error against exact attention is PQ's own at 2 bits with no full-precision sinks or
    # window (measured 0.38), bounded loosely.
    assert res["worst_rel_err_vs_pq"] < 0.15
    assert res["worst_rel_err"] < 0.6


@pytest.mark.cosim
def test_rtl_random_streams_small(rtl_small) -> None:
    n = random_streams_on(rtl_small, Geometry(SMALL), range(100, 106), 120)
    print(f"{n} random commands, RTL == golden")


@pytest.mark.cosim
@pytest.mark.slow
def test_rtl_random_streams_matrix(rtl_small) -> None:
    n = random_streams_on(rtl_small, Geometry(SMALL), range(200, 240), 250)
    assert n >= 10_000


@pytest.mark.cosim
@pytest.mark.slow
def test_rtl_random_streams_tiny() -> None:
    from aqpim.sim.rtl_device import RtlDevice

    with RtlDevice(Geometry(TINY), 1, seed=2, lanes=2) as dev:
        random_streams_on(dev, Geometry(TINY), range(300, 320), 200)


@pytest.mark.cosim
@pytest.mark.slow
def test_rtl_decode_full() -> None:
    """The issue's configuration: 2 KV heads, D=128, 1024 tokens over 4 banks, 3 steps."""
    from aqpim.sim.rtl_device import RtlDevice

    with RtlDevice(Geometry(FULL), 4, seed=3) as dev:
        res = decode_on_both(FULL, 4, 2, 1024, 3, dev)
    # measured: 0.07 vs float PQ, 0.41 vs exact (2 bits/element, no sinks or window)
    assert res["worst_rel_err_vs_pq"] < 0.15
    assert res["worst_rel_err"] < 0.6


# The configurations (docs/bank.md, "Key and value geometry"): 300 tokens of one KV head
# over 2 banks (K = 256 needs 256 tokens to train), 16 encoder lanes.
KV_CASES = {
    # keys d = 8, K = 256 with values d = 4, K = 256 at D = 64 (SmolLM2's 1.5-bit setting)
    "D64-k8x256-v4x256": Numerics(head_dim=64, subspaces=8, centroids=256, value_subspaces=16,
                                  value_centroids=256, token_capacity=160),
    # keys and values d = 4, K = 256 at D = 128 (2 bits, one token per column)
    "D128-d4-K256": Numerics(head_dim=128, subspaces=32, centroids=256, token_capacity=160),
    # d = 2, K = 256 at D = 128 (4 bits, one token over two columns)
    "D128-d2-K256": Numerics(head_dim=128, subspaces=64, centroids=256, token_capacity=160),
}


@pytest.mark.cosim
@pytest.mark.slow
@pytest.mark.parametrize("name", list(KV_CASES))
def test_rtl_decode_key_value_geometry(name: str) -> None:
    """RTL == golden bit for bit through the driver (random idle and back-pressure), then
    random command streams with invalid commands mixed in, on each configuration."""
    from aqpim.sim.rtl_device import RtlDevice

    num = KV_CASES[name]
    with RtlDevice(Geometry(num), 2, seed=4, lanes=16) as dev:
        res = decode_on_both(num, 2, 1, 300, 2, dev)
        n = random_streams_on(dev, Geometry(num), range(400, 402), 40)
    print(f"{name}: {n} random commands, RTL == golden; errors {res}")
    assert res["worst_rel_err_vs_pq"] < 0.15


@pytest.mark.cosim
@pytest.mark.parametrize(("queries", "kv_heads", "group"), [
    (3, 3, 3),  # SmolLM2's shape: 3 KV heads x 3 query heads, one pass each
    pytest.param(4, 1, 8, marks=pytest.mark.slow),  # Llama-2-70B's group of 8: 2 passes of 4
    pytest.param(1, 1, 3, marks=pytest.mark.slow),  # G = 1: a pass per query head
], ids=["G3", "G4", "G1"])
def test_rtl_decode_gqa(queries: int, kv_heads: int, group: int) -> None:
    """GQA through the driver on the RTL bank array (G query heads per pass, random idle and
    back-pressure) equal bit for bit to the golden device, then a random stream with G LUTs."""
    from aqpim.sim.rtl_device import RtlDevice
    from aqpim.sim.session import PairedDecode
    from aqpim.sw.golden.synthetic import generate

    g = Geometry(SMALL, queries=queries)
    data = generate(heads=kv_heads, tokens=61, head_dim=SMALL.head_dim, seed=5)
    q = np.stack([data["q"] + 0.2 * i * np.roll(data["q"], i, axis=1) for i in range(group)],
                 axis=1)
    with RtlDevice(g, kv_heads, seed=6) as dev:
        run = PairedDecode(dev, kv_heads=kv_heads, iters=4, seed=5)
        run.prefill(data["k"][:, :60], data["v"][:, :60])
        st = run.step(q, data["k"][:, 60], data["v"][:, 60])
        assert st.out.shape == (kv_heads, group, SMALL.head_dim)
        np.testing.assert_array_equal(st.out, st.golden)
        n = random_streams_on(dev, g, range(500, 502), 60)
    print(f"G = {queries}: {kv_heads} KV heads x {group} query heads bit-exact; {n} random "
          "commands, RTL == golden")


# ----------------------------------------------------------------------------------------------
# head slots (H > 1): per-slot codes, codebooks and masks; the shared LUT, scores and partials
# tagged with their slot
# ----------------------------------------------------------------------------------------------
def _slot_pass(g: Geometry, slot: int, tokens: int, seed: int) -> list[Command]:
    """Codebooks, ``tokens`` tokens, G LUTs, SCORE, AGGREGATE and reads on one slot."""
    num = g.num
    rng = np.random.default_rng(seed)
    cmds = []
    for kv in (0, 1):
        side = num.side(kv)
        for m in range(side.subspaces):
            cb = rng.integers(num.elem_min, num.elem_max + 1, size=side.centroids * side.sub_dim)
            cmds.append(isa.load_cb(g, head=slot, kv=kv, subspace=m, centroids=cb.tolist()))
    x = rng.integers(num.elem_min // 2, num.elem_max // 2 + 1, size=(2, tokens, num.head_dim))
    cmds.append(isa.write_kv(g, head=slot, token=0, keys=x[0].tolist(), values=x[1].tolist()))
    for q in range(g.queries):
        lut = rng.integers(num.lut_min, num.lut_max + 1, size=num.subspaces * num.centroids)
        cmds.append(isa.load_lut(g, head=slot, lut=lut.tolist(), query=q))
    cmds += [isa.score(head=slot), isa.aggregate(head=slot),
             *[isa.read_partial(head=slot, query=q) for q in range(g.queries)],
             isa.read_codes(head=slot, kv=1, column=0, count=g.used_columns(tokens, 1)),
             isa.read_cb(head=slot, kv=1, subspace=num.values.subspaces - 1)]
    return cmds


def test_head_slots_amaranth() -> None:
    """H = 3, G = 2 on Amaranth's simulator: two slots with different codebooks and tokens,
    the LUT / scores / partials of one slot invisible to the other (NO_LUT, NO_SCORES,
    NO_PARTIAL, a LUT set of another slot), head >= H refused; every response equal to the
    golden bank's. Then the same pass on slot 0 and on slot H - 1 with no idle cycles takes
    the same cycles command by command as on a one-slot bank (the performance model has no
    slot term)."""
    num, H, G = TINY, 3, 2
    g = Geometry(num, heads=H, queries=G)
    a, b = _slot_pass(g, 0, 3, seed=20), _slot_pass(g, 2, 5, seed=21)
    n_cb = num.subspaces + num.values.subspaces
    lut = [0] * (num.subspaces * num.centroids)
    cmds = [
        *a[:n_cb + 1], *b[:n_cb + 1],  # codebooks and tokens of slots 0 and 2
        isa.write_kv(g, head=1, token=0, keys=[[0] * num.head_dim], values=[[0] * num.head_dim]),
        isa.read_cb(head=1, kv=0, subspace=0),  # slot 1 has no codebook
        b[n_cb + 1],  # slot 2's first LUT
        isa.load_lut(g, head=0, lut=lut, query=1),  # not slot 0's set
        isa.score(head=0),  # the LUT is slot 2's
        *b[n_cb + 2:n_cb + 4],  # slot 2's second LUT, SCORE
        isa.write_kv(g, head=0, token=3, keys=[[1] * num.head_dim], values=[[2] * num.head_dim]),
        isa.aggregate(head=0),  # the scores are slot 2's (a write to slot 0 keeps them)
        isa.read_status(),
        *b[n_cb + 4:],  # AGGREGATE on slot 2 and its reads
        isa.read_partial(head=0), isa.read_lut(head=0),  # slot 2's
        isa.score(head=3), isa.read_codes(head=7, kv=0, column=0, count=1),  # head >= H
        *a[n_cb + 1:], isa.read_status(), isa.read_cb(head=2, kv=0, subspace=1),
        isa.reset(), isa.read_status(),
    ]
    gold = GoldenBank(g)
    expected = [gold.execute(c) for c in cmds]
    planted = [isa.Status.NO_CODEBOOK, isa.Status.NO_CODEBOOK, isa.Status.ADDR_RANGE,
               isa.Status.NO_LUT, isa.Status.NO_SCORES, isa.Status.NO_PARTIAL, isa.Status.NO_LUT,
               isa.Status.ADDR_RANGE, isa.Status.ADDR_RANGE]
    assert [e.status for e in expected if not e.ok] == planted
    got = run_amaranth(num, cmds, seed=22, heads=H, queries=G)
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, f"command {i} {cmd!r}: RTL {resp} != golden {exp}"

    # the same pass on the first and the last slot, and on a one-slot bank (whose cycles the
    # performance model's check covers): equal cycles, command by command
    first, last = _slot_pass(g, 0, 5, seed=23), _slot_pass(g, H - 1, 5, seed=23)
    c0 = run_amaranth(num, first, idle=0.0, heads=H, queries=G)
    c1 = run_amaranth(num, last, idle=0.0, heads=H, queries=G)
    one = run_amaranth(num, first, idle=0.0, heads=1, queries=G)
    assert all(r.ok for r, _ in c0 + c1 + one)
    cyc0, cyc1, cyc = ([c for _, c in run] for run in (c0, c1, one))
    assert cyc0 == cyc1 == cyc, list(zip([c.opcode.name for c in first], cyc0, cyc1, cyc,
                                         strict=True))
    score, agg = (first.index(next(c for c in first if c.opcode == op))
                  for op in (isa.Opcode.SCORE, isa.Opcode.AGGREGATE))
    # and the performance model's (no slot term): SCORE and AGGREGATE right after it
    from aqpim.sw.perf.hbm3 import HBM3Config, command_unit_cycles, score_drain_cycles

    hw = HBM3Config.load()
    model = [command_unit_cycles(hw, num, name, 5, 0, accepted=True, queries=G)
             for name in ("SCORE", "AGGREGATE")]
    model[1] += score_drain_cycles(hw, Geometry(num))
    assert [cyc1[score], cyc1[agg]] == model
    print(f"slot 0 and slot {H - 1}: SCORE {cyc0[score]} cycles, AGGREGATE {cyc0[agg]} cycles "
          f"(model {model[0]}, {model[1]})")


def test_read_back_from_working_storage_amaranth() -> None:
    """READ_CB answers from the encoder's codebook store and READ_LUT from the LUT-accumulate
    unit (no read-back copies): H = 2 slots with different codebooks (d_k = 8, d_v = 4: the
    store's padding must not show), G = 2 LUTs, every codebook and LUT read back equal to the
    golden bank's, also after rejected LOAD_CBs and LOAD_LUTs whose drained data beats must
    not reach the units (a rejected command changes nothing)."""
    from dataclasses import replace

    num, H, G = ASYM, 2, 2
    g = Geometry(num, heads=H, queries=G)
    rng = np.random.default_rng(31)

    def centroids(kv: int) -> list[int]:
        s = num.side(kv)
        return rng.integers(-128, 128, size=s.centroids * s.sub_dim).tolist()

    def lut() -> list[int]:
        return rng.integers(num.lut_min, num.lut_max + 1,
                            size=num.subspaces * num.centroids).tolist()

    def read_all() -> list[Command]:
        return [isa.read_cb(head=h, kv=kv, subspace=m) for h in range(H) for kv in (0, 1)
                for m in range(num.side(kv).subspaces)] + [
            isa.read_lut(head=1, query=q) for q in range(G)] + [isa.read_lut(head=0)]

    cmds = [isa.load_cb(g, head=h, kv=kv, subspace=m, centroids=centroids(kv))
            for h in range(H) for kv in (0, 1) for m in range(num.side(kv).subspaces)]
    cmds += [isa.load_lut(g, head=1, lut=lut(), query=q) for q in range(G)]
    cmds += read_all()
    bad_cb = isa.load_cb(g, head=1, kv=1, subspace=2, centroids=centroids(1))
    bad_lut = isa.load_lut(g, head=1, lut=lut(), query=0)
    rejected = [
        replace(bad_cb, data=bad_cb.data + (7,)),  # BAD_LENGTH
        replace(bad_cb, subspace=num.values.subspaces),  # ADDR_RANGE
        replace(bad_cb, head=H),  # ADDR_RANGE
        replace(bad_lut, data=bad_lut.data[:-1]),  # BAD_LENGTH
        replace(bad_lut, subspace=G),  # q >= G: ADDR_RANGE
        replace(bad_lut, head=0, subspace=1),  # not slot 0's set: ADDR_RANGE
    ]
    for cmd in rejected:
        cmds += [cmd, isa.read_cb(head=1, kv=1, subspace=2), isa.read_lut(head=1, query=0)]
    cmds += read_all()
    gold = GoldenBank(g)
    expected = [gold.execute(c) for c in cmds]
    assert [e.status for e in expected if not e.ok] == [
        isa.Status.NO_LUT, isa.Status.BAD_LENGTH, isa.Status.ADDR_RANGE, isa.Status.ADDR_RANGE,
        isa.Status.BAD_LENGTH, isa.Status.ADDR_RANGE, isa.Status.ADDR_RANGE, isa.Status.NO_LUT]
    got = run_amaranth(num, cmds, seed=31, heads=H, queries=G)
    for i, (cmd, exp, (resp, _)) in enumerate(zip(cmds, expected, got, strict=True)):
        assert resp == exp, f"command {i} {cmd!r}: RTL {resp} != golden {exp}"
