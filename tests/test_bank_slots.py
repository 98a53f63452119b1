"""Several KV head slots per bank (issue 13, phase 3): the RTL bank array under cocotb +
Verilator against the golden device, bit for bit, with random idle cycles and back-pressure.

- A driver decode step with KV heads placed over banks x slots and G query heads per pass.
- Random command streams over the whole array (one generator per bank, broadcasts mixed in,
  invalid commands of every kind), with the bank's whole observable state read back after
  each rejected command (:func:`aqpim.sim.randcmd.observe_commands`): every response and
  status equal to the golden device's, no hang (the testbench's per-command watchdog).

- Every command's cycles against the performance model, on slot 0 and slot 1.

Default suite: one build, H = 2, G = 2, 2 banks (decode + a 600-command stream; the cycle
check). ``slow``: the same build with a 10,000-command stream, and H = 8, G = 3 (decode + a
stream).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.numerics import Numerics

# d = 4 (8 codes of 4 bits: 8 tokens per key and value column), 32 tokens per slot
SLOTS2 = Numerics(head_dim=32, subspaces=8, centroids=16, token_capacity=32)
# SMALL of tests/test_bank.py (d = 2, 4 tokens per column), 64 tokens per slot
SLOTS8 = Numerics(head_dim=32, subspaces=16, centroids=16, token_capacity=64)
CHUNK = 500  # items per execute_batch round trip (banks run their items in parallel)


def decode_slots(dev, kv_heads: int, group: int, tokens: int, seed: int) -> None:
    """Prefill ``kv_heads`` KV heads over the device's banks x slots and run one decode step
    with ``group`` query heads per KV head; RTL == golden bit for bit, every slot used."""
    from aqpim.sim.session import PairedDecode
    from aqpim.sw.golden.synthetic import generate

    g = dev.geometry
    data = generate(heads=kv_heads, tokens=tokens + 1, head_dim=g.num.head_dim, seed=seed)
    q = np.stack([data["q"] + 0.2 * i * np.roll(data["q"], i, axis=1) for i in range(group)],
                 axis=1)
    assert all(r.ok for r in dev.execute(None, isa.reset()))
    run = PairedDecode(dev, kv_heads=kv_heads, iters=4, seed=seed)
    run.prefill(data["k"][:, :tokens], data["v"][:, :tokens])
    st = run.step(q if group > 1 else data["q"], data["k"][:, tokens], data["v"][:, tokens])
    np.testing.assert_array_equal(st.out, st.golden, err_msg="RTL != golden")
    slots_used = {p["slot"] for h in run.driver.mapping() for p in h["places"]}
    assert slots_used == set(range(g.heads)), slots_used
    print(f"H = {g.heads}, G = {g.queries}: {kv_heads} KV heads x {group} query heads over "
          f"{dev.num_banks} banks x {g.heads} slots, RTL == golden bit for bit")


def stream_on(dev, seed: int, commands: int, *, focus: float = 0.0) -> float:
    """A random array stream on ``dev`` (``focus``: the generator's probability of staying on
    a head slot); every response equal to the golden device's, and some AGGREGATE accepted
    (the stream reached the end of a pass). Returns the random commands per second (wall time
    of the simulation, observing reads included in the time, not in the count)."""
    from aqpim.sim.randcmd import build_array_stream

    st = build_array_stream(dev.geometry, dev.num_banks, seed, commands, focus=focus)
    assert dev.execute(None, isa.reset())[0].ok
    t0 = time.perf_counter()
    for lo in range(0, len(st.items), CHUNK):
        got = dev.execute_batch(st.items[lo:lo + CHUNK])
        for i, (item, exp, resps) in enumerate(zip(st.items[lo:lo + CHUNK],
                                                   st.expected[lo:lo + CHUNK], got,
                                                   strict=True)):
            assert resps == exp, (
                f"item {lo + i} (bank, command) {item!r}: RTL {resps} != golden {exp}; "
                f"rebuild with aqpim.sim.randcmd.build_array_stream(geometry, "
                f"{dev.num_banks}, {seed}, {commands})"
            )
    dt = time.perf_counter() - t0
    print(f"seed {seed}: {st.summary()}; RTL == golden on every response; "
          f"{dt:.1f} s, {commands / dt:.0f} random commands/s, {len(st.items) / dt:.0f} "
          "commands/s with the observing reads")
    print("by opcode and status: " + ", ".join(
        f"{op}/{s} {c}" for (op, s), c in sorted(st.statuses.items())))
    assert st.rejected > 0 and st.statuses[("AGGREGATE", "OK")] > 0
    return commands / dt


@pytest.fixture(scope="module")
def rtl_slots2():
    from aqpim.sim.rtl_device import RtlDevice

    t0 = time.perf_counter()
    with RtlDevice(Geometry(SLOTS2, heads=2, queries=2), 2, seed=11) as dev:
        print(f"build and start: {time.perf_counter() - t0:.1f} s")
        yield dev


@pytest.mark.cosim
def test_rtl_slots2_decode_and_stream(rtl_slots2) -> None:
    """H = 2, G = 2 on 2 banks: 2 KV heads x 2 query heads (one per slot of each bank), then
    a 600-command array stream."""
    decode_slots(rtl_slots2, kv_heads=2, group=2, tokens=40, seed=12)
    stream_on(rtl_slots2, seed=13, commands=600)


@pytest.mark.cosim
@pytest.mark.slow
def test_rtl_slots2_stream_10k(rtl_slots2) -> None:
    """The issue's 10,000 random commands on the multi-slot GQA array."""
    stream_on(rtl_slots2, seed=14, commands=10_000)


@pytest.mark.cosim
@pytest.mark.slow
def test_rtl_slots8_gqa3() -> None:
    """H = 8, G = 3 on 2 banks: 8 KV heads x 3 query heads (SmolLM2's group) over the 16
    (bank, slot) places, then a 1,500-command array stream."""
    from aqpim.sim.rtl_device import RtlDevice

    t0 = time.perf_counter()
    with RtlDevice(Geometry(SLOTS8, heads=8, queries=3), 2, seed=15) as dev:
        print(f"build and start: {time.perf_counter() - t0:.1f} s")
        decode_slots(dev, kv_heads=8, group=3, tokens=100, seed=16)
        # 16 (bank, slot) places: a stream drawing the slot afresh for every command loaded
        # no slot's 32 codebooks in 2,000 commands (measured on the golden device); staying
        # on a slot with probability 0.97 reaches 28 WRITE_KV and 9 AGGREGATE in 1,500
        stream_on(dev, seed=17, commands=1500, focus=0.97)


def test_slot_bits_and_demo_slots() -> None:
    """``slot_bits`` counts what one more slot adds to the bank's memories; the demo's
    ``slots`` places heads over banks x slots and refuses a bad count by name."""
    from aqpim.commands import demo
    from aqpim.hw.bank import slot_bits
    from aqpim.hw.bank_reader import Source, encoder_subspaces, memory_depths

    g1, g3 = Geometry(SLOTS2), Geometry(SLOTS2, heads=3)
    d1, d3 = memory_depths(g1), memory_depths(g3)
    bits = slot_bits(g3)
    for src, name in ((Source.KEYS, "key_codes"), (Source.VALUES, "value_codes")):
        assert (d3[src] - d1[src]) * isa.WORD_BITS == 2 * bits[name], name
    assert set(d3) == {Source.KEYS, Source.VALUES}  # no read-back copies (READ_CB / READ_LUT)
    n = SLOTS2
    per_sub = n.centroids * max(n.sub_dim, n.values.sub_dim) * n.elem_bits
    assert ((encoder_subspaces(g3) - encoder_subspaces(g1)) * per_sub
            == 2 * bits["encoder_codebooks"])
    assert bits["memory_total"] == sum(v for k, v in bits.items()
                                       if k not in ("memory_total", "state_flip_flops"))
    assert bits == slot_bits(g1)  # per slot: the same whatever H
    cfg = demo.RtlDemoConfig(heads=4, banks=2, slots=2, tokens=100, steps=2)
    assert cfg.per_bank_tokens == 102  # each head owns one (bank, slot) place
    with pytest.raises(ValueError, match="slots must be in"):
        demo.RtlDemoConfig(slots=9)
    with pytest.raises(ValueError, match="must divide banks x slots"):
        demo.RtlDemoConfig(heads=3, banks=2, slots=2)


def test_array_stream_is_seeded_and_checks_its_input() -> None:
    """The same seed gives the same stream and answers; a rejected command is followed by the
    observing reads (READ_STATUS first); bad parameters are refused by name."""
    from aqpim.sim.randcmd import RandomStream, build_array_stream

    g = Geometry(SLOTS2, heads=2, queries=2)
    a, b = (build_array_stream(g, 2, 5, 150, focus=0.5) for _ in range(2))
    assert a.items == b.items and a.expected == b.expected and a.statuses == b.statuses
    assert sum(a.statuses.values()) == 150 + sum(  # a broadcast counts once per bank
        1 for bank, _ in a.items if bank is None)
    first_bad = next(i for i, e in enumerate(a.expected) if not all(r.ok for r in e))
    assert a.items[first_bad + 1][1].opcode == isa.Opcode.READ_STATUS
    assert {bank for bank, _ in a.items} >= {0, 1}
    with pytest.raises(ValueError, match="banks"):
        build_array_stream(g, 0, 5, 10)
    with pytest.raises(ValueError, match="focus"):
        RandomStream(g, 1, focus=1.0)


@pytest.mark.cosim
def test_rtl_slot_cycles_match_model(tmp_path) -> None:
    """The performance model's cycles (``hbm3.trace_timing``, no slot term) equal the cycles the
    H = 2, G = 2 RTL recorded for every command (no idle input, no back-pressure) of a driver
    decode over both slots of 2 banks and a random stream on bank 0; SCORE and AGGREGATE cost
    the same on slot 0 and slot 1 holding the same tokens. The build is test_rtl_slots2_*'s."""
    from aqpim.sim.randcmd import build_stream
    from aqpim.sim.rtl_device import RtlDevice
    from aqpim.sw.golden.synthetic import generate
    from aqpim.sw.host.driver import Driver
    from aqpim.sw.host.trace import TraceRecorder
    from aqpim.sw.perf.hbm3 import HBM3Config, trace_timing

    g = Geometry(SLOTS2, heads=2, queries=2)
    data = generate(heads=2, tokens=41, head_dim=SLOTS2.head_dim, seed=18)
    q = np.stack([data["q"], np.roll(data["q"], 1, axis=1)], axis=1)
    path = tmp_path / "slots.jsonl"
    with RtlDevice(g, 2, seed=18, idle=0.0, backpressure=0.0) as dev, \
            TraceRecorder(dev, path) as rec:
        drv = Driver(rec, kv_heads=2, iters=4, seed=18)
        drv.prefill(data["k"][:, :40], data["v"][:, :40])
        drv.step(q, data["k"][:, 40], data["v"][:, 40])
        cmds, _expected, rejected = build_stream(g, 19, 200, observe_rejected=False)
        rec.execute(0, isa.reset())
        for cmd in cmds:
            rec.execute(0, cmd)
    hw = HBM3Config.load()
    hw = hw.replace(units={**hw.units, "aqpim": {**hw.units["aqpim"], "encoder_lanes": 16}})
    tt = trace_timing(path, hw)
    assert rejected > 0 and all(t.recorded is not None for t in tt)
    bad = [(t.index, t.opcode, t.tokens, t.unit_cycles, t.recorded) for t in tt
           if any(r != t.unit_cycles for r in t.recorded)]
    assert not bad, f"model != RTL cycles (index, opcode, tokens, model, RTL): {bad[:10]}"
    from aqpim.sw.host.trace import read_trace

    _g, _banks, entries = read_trace(path)
    per_slot: dict[tuple[str, int], set[tuple[int, int]]] = {}
    for t, e in zip(tt, entries, strict=True):
        if t.opcode in ("SCORE", "AGGREGATE") and t.tokens > 0 and t.index < len(tt) - len(cmds):
            per_slot.setdefault((t.opcode, e.cmd.head), set()).add((t.tokens, t.recorded[0]))
    print({k: sorted(v) for k, v in per_slot.items()})
    for op in ("SCORE", "AGGREGATE"):
        assert per_slot[(op, 0)] == per_slot[(op, 1)], op  # same tokens, same cycles
