# amaranth: UnusedElaboratable=no
"""The channel merge unit (hw/merge.py) and its golden model (intmodel.channel_merge).

Quick checks on Amaranth's simulator (random idle on both inputs, random backpressure on the
output, several groups back to back on one DUT), the golden model's own properties, the
accuracy cost of merging in integers, and the Verilator co-simulation (cosim marker).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from aqpim.hw.merge import Merge
from aqpim.sim.amaranth_streams import Sink, Source, run_phases
from aqpim.sim.merge_stimulus import KINDS, decode_outputs, expected_beats, group_beats, make_group
from aqpim.sim.runner import build_and_run
from aqpim.sw.golden import intmodel

from aqpim.numerics import Numerics, merge_widths

# Small but not trivial: D = 16, E = 4 (4 slices), 5 banks (not a power of two).
NUM = Numerics(head_dim=16, subspaces=8, centroids=16, token_capacity=64)


def _run(dut: Merge, groups: list[list[intmodel.BankPartial]], *, seed: int,
         idle: float = 0.3) -> list[dict]:
    heads, outs = [], []
    for parts in groups:
        h, o = group_beats(parts, dut.i_head.payload.shape(), dut.i_out.payload.shape(),
                           dut.lanes)
        heads.append(h)
        outs.append(o)
    phases = []
    for h, o in zip(heads, outs, strict=True):
        phases.append(([Source(dut.i_head, h, idle=idle), Source(dut.i_out, o, idle=idle)],
                       [Sink(dut.o, dut.slices, backpressure=idle)]))
    run_phases(dut, phases, seed=seed)
    got = []
    for _, sinks in phases:
        got += decode_outputs(sinks[0].beats, dut.o.payload.shape())
    return got


@pytest.mark.parametrize("guard", [8, 0])
def test_merge_every_kind_back_to_back(guard: int) -> None:
    dut = Merge(numerics=NUM, banks=5, lanes=4, guard_bits=guard)
    rng = np.random.default_rng(21)
    groups = [make_group(k, 5, NUM, rng) for k in KINDS for _ in range(2)]
    got = _run(dut, groups, seed=4)
    want = [b for g in groups for b in expected_beats(g, NUM, 4, guard)]
    assert got == want


def test_merge_one_bank_one_lane_full_rate() -> None:
    """banks = 1, E = 1, no idle: the output is the bank's partial rounded (sum exact)."""
    num = Numerics(head_dim=8, subspaces=4, centroids=4, lut_bits=8, lut_frac_bits=4,
                   exp_bits=6, token_capacity=8)
    dut = Merge(numerics=num, banks=1, lanes=1)
    rng = np.random.default_rng(3)
    groups = [make_group(k, 1, num, rng) for k in ("random", "extreme", "all_empty", "random")]
    got = _run(dut, groups, seed=1, idle=0.0)
    assert got == [b for g in groups for b in expected_beats(g, num, 1)]
    for g, beats in zip(groups, [got[i:i + 8] for i in range(0, len(got), 8)], strict=True):
        # a single bank scales by exactly 2^P: the merge returns its partial unchanged
        assert [v for b in beats for v in b["out"]] == g[0].out.tolist()
        assert beats[0]["sum"] == g[0].sum


@pytest.mark.parametrize("banks", [1, 2, 5, 7])  # output FIFO of 7, 4, 2, 1 entries
def test_merge_skid_under_backpressure(banks: int) -> None:
    """Input every cycle against random backpressure 0.9: the output FIFO fills and the credit
    count holds slices' last beats back; every beat arrives once, bit-exact, in order."""
    num = Numerics(head_dim=8, subspaces=4, centroids=4, lut_bits=8, lut_frac_bits=4,
                   exp_bits=6, token_capacity=8)
    dut = Merge(numerics=num, banks=banks, lanes=1)
    rng = np.random.default_rng(banks)
    groups = [make_group(k, banks, num, rng) for k in ("random", "extreme", "random")]
    phases = []
    for parts in groups:
        h, o = group_beats(parts, dut.i_head.payload.shape(), dut.i_out.payload.shape(), 1)
        phases.append(([Source(dut.i_head, h, idle=0.0), Source(dut.i_out, o, idle=0.0)],
                       [Sink(dut.o, dut.slices, backpressure=0.9)]))
    run_phases(dut, phases, seed=banks, max_cycles=60 * len(groups) * dut.slices * banks)
    got = []
    for _, sinks in phases:
        got += decode_outputs(sinks[0].beats, dut.o.payload.shape())
    assert got == [b for g in groups for b in expected_beats(g, num, 1)]


@pytest.mark.parametrize("banks", [1, 3, 7])  # output FIFO of 7, 3 and 1 entries
def test_merge_latency(banks: int) -> None:
    """No idle, no backpressure: each slice's beat leaves ``latency`` cycles after its last,
    and no slice's last beat waits for the output FIFO (one beat per cycle)."""
    dut = Merge(numerics=NUM, banks=banks, lanes=4)
    assert dut.skid_depth == {1: 7, 3: 3, 7: 1}[banks]
    parts = make_group("random", banks, NUM, np.random.default_rng(5))
    h, o = group_beats(parts, dut.i_head.payload.shape(), dut.i_out.payload.shape(), 4)
    src_o = Source(dut.i_out, o, idle=0.0)
    snk = Sink(dut.o, dut.slices, backpressure=0.0)
    run_phases(dut, [([Source(dut.i_head, h, idle=0.0), src_o], [snk])], seed=0)
    assert np.diff(src_o.sent_at).tolist() == [1] * (len(o) - 1)  # one beat per cycle
    last_of_slice = src_o.sent_at[dut.banks - 1::dut.banks]
    assert [g - s for g, s in zip(snk.got_at, last_of_slice, strict=True)] == [dut.latency] * 4


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [({"banks": 0}, ValueError, "banks"), ({"lanes": 3}, ValueError, "lanes 3"),
     ({"banks": 2.0}, TypeError, "2.0"), ({"lanes": 256}, ValueError, "256")],
)
def test_merge_bad_parameters(kwargs, error, text) -> None:
    with pytest.raises(error, match=text):
        Merge(**kwargs)


# ----------------------------------------------------------------------------------------------
# golden model
# ----------------------------------------------------------------------------------------------
def test_channel_merge_known_values() -> None:
    """Two banks one log2 unit apart: the lower one's scale is exactly 2^P / 2."""
    num = Numerics(head_dim=2, subspaces=2, centroids=2, token_capacity=4)
    one, f1 = num.weight_one, 1 << num.lut_frac_bits
    a = intmodel.BankPartial(100, 3 * one, np.array([5 * one, -one]))
    b = intmodel.BankPartial(100 - f1, 2 * one + 1, np.array([-3, 7]))
    ch = intmodel.channel_merge([a, b], num)
    assert ch.max == 100
    # sum = 3*2^P + (2*2^P + 1) / 2, rounded half up: the .5 goes up
    assert ch.sum == 3 * one + one + 1
    # -3/2 = -1.5 -> -1 (half up), 7/2 = 3.5 -> 4
    assert ch.out.tolist() == [5 * one - 1, -one + 4]
    empty = intmodel.BankPartial(num.score_min, 0, np.zeros(2, dtype=np.int64))
    assert intmodel.channel_merge([empty, a], num).out.tolist() == a.out.tolist()
    none = intmodel.channel_merge([empty, empty], num)
    assert (none.max, none.sum, none.out.tolist()) == (num.score_min, 0, [0, 0])


def test_channel_merge_rejects_bad_partials() -> None:
    num = Numerics(head_dim=2, subspaces=2, centroids=2, token_capacity=4)
    with pytest.raises(ValueError, match="sum = -1"):
        intmodel.channel_merge([intmodel.BankPartial(0, -1, np.zeros(2, dtype=np.int64))], num)
    with pytest.raises(ValueError, match="shape"):
        intmodel.channel_merge([intmodel.BankPartial(0, 1, np.zeros(3, dtype=np.int64))], num)
    with pytest.raises(ValueError, match="no partials"):
        intmodel.channel_merge([], num)


def test_channel_merge_widths_hold_the_extremes() -> None:
    """The widest inputs of every kind stay inside the stated widths."""
    num = NUM
    w = merge_widths(num, 64)
    rng = np.random.default_rng(0)
    for kind in ("extreme", "random", "spread"):
        ch = intmodel.channel_merge(make_group(kind, 64, num, rng), num)
        assert ch.sum < 1 << w["sum"]
        lim = 1 << (w["out"] - 1)
        assert all(-lim <= int(v) < lim for v in ch.out)


def _realistic_partials(banks_per_channel: int, channels: int, seed: int):
    from aqpim.sw.golden import reference, synthetic

    num = Numerics(token_capacity=512)
    tokens = banks_per_channel * channels * 16
    data = synthetic.generate(heads=1, tokens=tokens, head_dim=num.head_dim, seed=seed)
    q, k, v = data["q"][0], data["k"][0], data["v"][0]
    ia = reference.int_attention(q, k, v, numerics=num, banks=banks_per_channel * channels,
                                 sinks=0, recent=0, seed=seed, iters=4)
    return num, ia


def test_channel_merge_accuracy_cost() -> None:
    """Merging each channel in integers, then the channels in float64, against the float64
    merge of every bank: with 8 guard bits only the exp2 ROM's rounding is left (~1e-5
    relative per scale), without them the floor of the shift costs about 50x more."""
    banks, channels = 16, 4
    num, ia = _realistic_partials(banks, channels, seed=2)
    flat = intmodel.host_merge(ia.partials, ia.value_scales, num)
    rel = {}
    for guard in (8, 0):
        chans = [intmodel.channel_merge(ia.partials[c * banks:(c + 1) * banks], num, guard)
                 for c in range(channels)]
        merged = intmodel.host_merge(chans, ia.value_scales, num)
        rel[guard] = float(np.linalg.norm(merged - flat) / np.linalg.norm(flat))
    print(json.dumps({"rel_l2_int_channel_merge_vs_float64_by_guard_bits": rel}))
    assert 0 < rel[8] < 2e-5 and rel[0] > 5 * rel[8]


# ----------------------------------------------------------------------------------------------
# Verilator co-simulation
# ----------------------------------------------------------------------------------------------
COSIM = {"head_dim": 16, "subspaces": 8, "token_capacity": 64,
         "banks": 6, "lanes": 4}


@pytest.mark.cosim
def test_merge_cosim(tmp_path) -> None:
    report = tmp_path / "report.json"
    build_and_run(Merge, unit="merge", params=COSIM, test_module="aqpim.sim.test_merge_tb",
                  test_params={"groups": 3, "report": str(report)})
    data = json.loads(report.read_text())
    assert data["checked"] == 3 * len(KINDS) * 4 and data["errors"] == []


@pytest.mark.cosim
@pytest.mark.slow
def test_merge_cosim_64_banks(tmp_path) -> None:
    params = {"banks": 64, "lanes": 4, "token_capacity": 512}
    report = tmp_path / "report.json"
    build_and_run(Merge, unit="merge", params=params, test_module="aqpim.sim.test_merge_tb",
                  test_params={"groups": 1, "report": str(report)})
    assert json.loads(report.read_text())["errors"] == []
