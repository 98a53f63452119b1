# amaranth: UnusedElaboratable=no
"""Quick tests of the attention units on Amaranth's own simulator (no Verilog build).

Every check is against the integer golden model (aqpim.sw.golden.intmodel), with random idle cycles
on every input stream and random backpressure on every output stream. The Verilator
co-simulation of the same cases is tests/test_attention.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from aqpim.hw.attention import Attention
from aqpim.hw.histogram import Histogram
from aqpim.hw.lut_accumulate import LUTAccumulate
from aqpim.hw.softmax import Softmax
from aqpim.hw.value_mac import ValueMAC
from aqpim.hw.verilog import build_unit
from aqpim.sim.amaranth_streams import Sink, Source, run_phases
from aqpim.sim.attn_stimulus import (
    KINDS,
    codebook_beats,
    column_beats,
    lut_beats,
    make_case,
)
from aqpim.sim.streams import pack, unpack
from aqpim.sw.golden import intmodel

from aqpim.geometry import Geometry
from aqpim.numerics import Numerics, exp2_weight

# Small configurations that keep amaranth.sim fast yet cover tpc = 1, 2, 8 and 32.
NUM_TPC8 = Numerics(head_dim=16, subspaces=8, centroids=16, token_capacity=64)
NUM_TPC2 = Numerics(head_dim=32, subspaces=16, centroids=256, token_capacity=48)
NUM_TPC32 = Numerics(head_dim=8, subspaces=4, centroids=4, lut_bits=8, lut_frac_bits=4,
                     exp_bits=6, token_capacity=100)
NUM_TPC1 = Numerics(head_dim=64, subspaces=64, centroids=16, token_capacity=16)


# ----------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("unit", "kwargs", "error", "text"),
    [
        ("lut_accumulate", {"subspaces": 3, "head_dim": 3}, ValueError, r"M\*b = 3\*4 = 12 bits"),
        ("lut_accumulate", {"centroids": 12}, ValueError, "12"),
        ("lut_accumulate", {"subspaces": 64.0}, TypeError, "64.0"),
        ("lut_accumulate", {"lanes": 4}, ValueError, "unknown parameter"),
        ("softmax", {"tag_bits": -1}, ValueError, "-1"),
        ("softmax", {"tag_bits": True}, TypeError, "True"),
        ("histogram", {"forwarding": 1}, TypeError, "forwarding"),
        ("value_mac", {"subspaces": 48}, ValueError, "48"),
        ("value_mac", {"lanes": 3}, ValueError, "lanes must divide D = 128 .* got 3"),
        ("value_mac", {"lanes": 2, "subspaces": 32}, ValueError, "multiple of d = 4, got 2"),
        ("value_mac", {"lanes": 256}, ValueError, r"lanes must be in \[1, 128\], got 256"),
        ("value_mac", {"lanes": 16.0}, TypeError, "16.0"),
        ("attention", {"token_capacity": 0}, ValueError, "token_capacity"),
    ],
)
def test_bad_parameters_raise(unit, kwargs, error, text) -> None:
    """Flat parameters (as `aqpim verilog --param` gives them) build the unit's Numerics."""
    with pytest.raises(error, match=text):
        build_unit(unit, kwargs)


@pytest.mark.parametrize("cls", [LUTAccumulate, Softmax, Histogram, ValueMAC, Attention])
def test_units_take_a_numerics(cls) -> None:
    with pytest.raises(TypeError, match="numerics must be a Numerics"):
        cls(numerics={"subspaces": 4})
    with pytest.raises(TypeError):
        cls(subspaces=4)  # flat fields are for build_unit, not the unit


def test_parameters_are_read_only() -> None:
    dut = LUTAccumulate(numerics=Numerics(subspaces=32, centroids=256))
    assert dut.tokens_per_column == 1 and dut.numerics.lut_bits == 16
    with pytest.raises(AttributeError):
        dut.tokens_per_column = 2  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# LUT-accumulate
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num", [NUM_TPC8, NUM_TPC2, NUM_TPC32], ids=["tpc8", "tpc2", "tpc32"])
@pytest.mark.parametrize("kind", ["wide", "lut_max", "lut_min", "extremes"])
def test_lut_accumulate(num: Numerics, kind: str) -> None:
    rng = np.random.default_rng(11)
    dut = LUTAccumulate(numerics=num)
    tokens = 3 * dut.tokens_per_column + 1  # last column partly filled
    case = make_case(kind, tokens, num, rng)
    snk = Sink(dut.o_scores, -(-tokens // dut.tokens_per_column))
    cols = column_beats(dut.i_cols.payload.shape(), case.key_codes, num)
    run_phases(dut, [
        ([Source(dut.i_lut, lut_beats(dut.i_lut.payload.shape(), case.lut))], []),
        ([Source(dut.i_cols, cols)], [snk]),
    ], seed=5)
    got = []
    for word in snk.beats:
        beat = unpack(dut.o_scores.payload.shape(), word)
        got += beat["scores"][:beat["ntok"]]
    assert got == intmodel.lut_accumulate(case.lut, case.key_codes, num).tolist()


@pytest.mark.parametrize(("num", "queries"), [(NUM_TPC8, 3), (NUM_TPC2, 4)],
                         ids=["tpc8-G3", "tpc2-G4"])
def test_lut_accumulate_gqa(num: Numerics, queries: int) -> None:
    """G LUTs (GQA): every column scored against each query head's LUT in the same pass,
    each equal to intmodel's scores for that LUT; the LUT beats of the G heads interleaved."""
    rng = np.random.default_rng(12)
    dut = LUTAccumulate(numerics=num, queries=queries)
    tokens = 3 * dut.tokens_per_column + 1
    cases = [make_case("wide", tokens, num, rng) for _ in range(queries)]
    layout = dut.i_lut.payload.shape()
    plain = LUTAccumulate(numerics=num).i_lut.payload.shape()
    beats = []
    for q, case in enumerate(cases):  # the same beats with their query head's index
        for word in lut_beats(plain, case.lut):
            fields = unpack(plain, word)
            beats.append((fields["row"], q, pack(layout, {**fields, "query": q})))
    beats = [b for *_, b in sorted(beats)]  # row-major: the heads' beats interleaved
    snk = Sink(dut.o_scores, -(-tokens // dut.tokens_per_column))
    key_codes = cases[0].key_codes
    run_phases(dut, [
        ([Source(dut.i_lut, beats)], []),
        ([Source(dut.i_cols, column_beats(dut.i_cols.payload.shape(), key_codes, num))],
         [snk]),
    ], seed=6)
    got: list[list[int]] = [[] for _ in range(queries)]
    for word in snk.beats:
        beat = unpack(dut.o_scores.payload.shape(), word)
        for q in range(queries):
            got[q] += beat["scores"][q][:beat["ntok"]]
    for q, case in enumerate(cases):
        assert got[q] == intmodel.lut_accumulate(case.lut, key_codes, num).tolist(), q


def test_lut_accumulate_beats_in_any_order() -> None:
    """L = 24 (E = 8 entries per beat, K = 16: two rows per subspace), beats in reverse order."""
    num = dataclasses.replace(NUM_TPC8, lut_bits=24, lut_frac_bits=8)
    dut = LUTAccumulate(numerics=num)
    tokens = 2 * dut.tokens_per_column + 3
    case = make_case("wide", tokens, num, np.random.default_rng(4))
    beats = lut_beats(dut.i_lut.payload.shape(), case.lut)
    assert len(beats) == num.subspaces * num.centroids // 8
    snk = Sink(dut.o_scores, -(-tokens // dut.tokens_per_column))
    run_phases(dut, [
        ([Source(dut.i_lut, beats[::-1])], []),
        ([Source(dut.i_cols, column_beats(dut.i_cols.payload.shape(), case.key_codes, num))],
         [snk]),
    ], seed=3)
    got = []
    for word in snk.beats:
        beat = unpack(dut.o_scores.payload.shape(), word)
        got += beat["scores"][:beat["ntok"]]
    assert got == intmodel.lut_accumulate(case.lut, case.key_codes, num).tolist()


def test_lut_accumulate_one_column_per_cycle() -> None:
    """No idle, no backpressure: columns are taken on consecutive cycles, scores follow."""
    num = dataclasses.replace(NUM_TPC8, token_capacity=512)
    dut = LUTAccumulate(numerics=num)
    case = make_case("random", 40 * dut.tokens_per_column, num, np.random.default_rng(2))
    src = Source(dut.i_cols, column_beats(dut.i_cols.payload.shape(), case.key_codes, num),
                 idle=0.0)
    snk = Sink(dut.o_scores, 40, backpressure=0.0)
    lut_src = Source(dut.i_lut, lut_beats(dut.i_lut.payload.shape(), case.lut), idle=0.0)
    run_phases(dut, [([lut_src], []), ([src], [snk])], seed=1)
    # the LUT goes in one 256-bit beat (16 entries at L = 16) per cycle: M*K/16 cycles
    nbeats = num.subspaces * num.centroids * num.lut_bits // 256
    assert len(lut_src.sent_at) == nbeats
    assert np.diff(lut_src.sent_at).tolist() == [1] * (nbeats - 1)
    assert np.diff(src.sent_at).tolist() == [1] * 39
    assert np.diff(snk.got_at).tolist() == [1] * 39
    assert snk.got_at[0] - src.sent_at[0] == dut.latency


@pytest.mark.parametrize("backpressure", [0.5, 0.9])
def test_lut_accumulate_skid_under_backpressure(backpressure: float) -> None:
    """Columns offered every cycle against heavy random backpressure: the output FIFO fills
    and the credit count holds columns back; none is lost or duplicated (a FIFO one entry
    short of the credit count dropped columns here), and a column is never taken while the
    FIFO could not hold it."""
    num = dataclasses.replace(NUM_TPC8, token_capacity=512)
    dut = LUTAccumulate(numerics=num)
    ncols = 48
    case = make_case("random", ncols * dut.tokens_per_column, num, np.random.default_rng(8))
    src = Source(dut.i_cols, column_beats(dut.i_cols.payload.shape(), case.key_codes, num),
                 idle=0.0)
    snk = Sink(dut.o_scores, ncols, backpressure=backpressure)
    run_phases(dut, [([Source(dut.i_lut, lut_beats(dut.i_lut.payload.shape(), case.lut))], []),
                     ([src], [snk])], seed=9, max_cycles=20 * ncols)
    got = []
    for word in snk.beats:
        beat = unpack(dut.o_scores.payload.shape(), word)
        got += beat["scores"][:beat["ntok"]]
    assert got == intmodel.lut_accumulate(case.lut, case.key_codes, num).tolist()
    # never more columns taken than delivered plus the FIFO's entries
    for j, sent in enumerate(src.sent_at):
        delivered = sum(1 for t in snk.got_at if t < sent)
        assert j - delivered < dut.skid_depth, (j, sent)


# ----------------------------------------------------------------------------------------------
# softmax
# ----------------------------------------------------------------------------------------------
def test_softmax_every_delta() -> None:
    """Every delta of a small format (0 .. score_max - score_min) against the golden model."""
    num = Numerics(head_dim=2, subspaces=2, centroids=2, lut_bits=8, lut_frac_bits=3,
                   exp_bits=5, token_capacity=8)
    dut = Softmax(numerics=num, tag_bits=12)
    mx = num.score_max
    deltas = list(range(num.score_max - num.score_min + 1))
    scores = [mx - dl for dl in deltas]
    in_l, out_l = dut.i.payload.shape(), dut.o.payload.shape()
    snk = Sink(dut.o, len(scores))

    async def setup(ctx) -> None:
        ctx.set(dut.max, mx)

    run_phases(dut, [([Source(dut.i, [pack(in_l, {"score": s, "tag": i % 4096})
                                       for i, s in enumerate(scores)])], [snk])],
               seed=7, setup=setup)
    beats = [unpack(out_l, w) for w in snk.beats]
    _, golden = intmodel.softmax_weights(np.array(scores), num)
    assert [b["weight"] for b in beats] == golden.tolist()
    assert [b["weight"] for b in beats] == [
        exp2_weight(dl, num.lut_frac_bits, num.exp_bits, num.exp_rom) for dl in deltas]
    assert [b["tag"] for b in beats] == [i % 4096 for i in range(len(scores))]


def test_softmax_default_format_range_ends() -> None:
    num = Numerics()
    dut = Softmax(numerics=num)
    one = 1 << num.lut_frac_bits
    edge = (num.exp_bits + 1) * one
    deltas = sorted({0, 1, one - 1, one, edge - 2, edge - 1, edge, edge + 1,
                     num.score_max - num.score_min - 1, num.score_max - num.score_min})
    mx = num.score_max
    scores = np.array([mx - dl for dl in deltas])
    snk = Sink(dut.o, len(deltas))

    async def setup(ctx) -> None:
        ctx.set(dut.max, mx)

    run_phases(dut, [([Source(dut.i, [pack(dut.i.payload.shape(), {"score": int(s)})
                                       for s in scores])], [snk])], seed=3, setup=setup)
    got = [unpack(dut.o.payload.shape(), w)["weight"] for w in snk.beats]
    assert got == intmodel.softmax_weights(scores, num)[1].tolist()
    assert got[0] == num.weight_one and got[-1] == 0


@pytest.mark.parametrize("backpressure", [0.5, 0.9])
def test_softmax_skid_under_backpressure(backpressure: float) -> None:
    """Scores offered every cycle against heavy random backpressure: every weight and tag
    arrives once, in order (the output FIFO fills and the credit count holds scores back)."""
    num = Numerics()
    dut = Softmax(numerics=num, tag_bits=8)
    rng = np.random.default_rng(13)
    scores = rng.integers(num.score_min, num.score_max + 1, 64)
    mx = int(scores.max())  # the golden model subtracts the scores' own maximum
    snk = Sink(dut.o, len(scores), backpressure=backpressure)
    src = Source(dut.i, [pack(dut.i.payload.shape(), {"score": int(s), "tag": i})
                         for i, s in enumerate(scores)], idle=0.0)

    async def setup(ctx) -> None:
        ctx.set(dut.max, mx)

    run_phases(dut, [([src], [snk])], seed=4, setup=setup, max_cycles=20 * len(scores))
    beats = [unpack(dut.o.payload.shape(), w) for w in snk.beats]
    assert [b["tag"] for b in beats] == list(range(len(scores)))
    assert [b["weight"] for b in beats] == intmodel.softmax_weights(scores, num)[1].tolist()
    for j, sent in enumerate(src.sent_at):  # never more in flight than the FIFO holds
        assert j - sum(1 for t in snk.got_at if t < sent) < dut.skid_depth, (j, sent)


def test_softmax_one_score_per_cycle() -> None:
    """No idle, no backpressure: a score every cycle, its weight ``latency`` cycles later."""
    num = Numerics()
    dut = Softmax(numerics=num)
    snk = Sink(dut.o, 16, backpressure=0.0)
    src = Source(dut.i, [pack(dut.i.payload.shape(), {"score": -i}) for i in range(16)],
                 idle=0.0)

    async def setup(ctx) -> None:
        ctx.set(dut.max, 0)

    run_phases(dut, [([src], [snk])], seed=1, setup=setup)
    assert np.diff(src.sent_at).tolist() == [1] * 15
    assert np.diff(snk.got_at).tolist() == [1] * 15
    assert snk.got_at[0] - src.sent_at[0] == dut.latency


# ----------------------------------------------------------------------------------------------
# histogram
# ----------------------------------------------------------------------------------------------
def _run_histogram(num: Numerics, weights: np.ndarray, codes: np.ndarray, *,
                   forwarding: bool = True, idle: float = 0.3, seed: int = 1):
    dut = Histogram(numerics=num, forwarding=forwarding)
    tl = dut.i_tok.payload.shape()
    beats = [pack(tl, {"codes": [int(c) for c in codes[t]], "weight": int(weights[t]),
                       "last": int(t == len(weights) - 1)}) for t in range(len(weights))]
    if not beats:  # no tokens: one weight-0 token ends the pass
        beats = [tl.const({"last": 1}).as_bits()]
    src = Source(dut.i_tok, beats, idle=idle)
    snk = Sink(dut.o_bins, num.centroids, backpressure=idle)
    run_phases(dut, [([src], [snk])], seed=seed)
    hist = np.zeros((num.subspaces, num.centroids), dtype=np.int64)
    for j, word in enumerate(snk.beats):
        beat = unpack(dut.o_bins.payload.shape(), word)
        assert beat["index"] == j and beat["last"] == (j == num.centroids - 1)
        hist[:, j] = beat["bins"]
    return hist, src


@pytest.mark.parametrize("kind", ["random", "one_code", "alternating"])
@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_histogram(kind: str, idle: float) -> None:
    num = NUM_TPC8
    rng = np.random.default_rng(4)
    case = make_case(kind, 50, num, rng)
    w = rng.integers(0, num.weight_one + 1, 50)
    hist, src = _run_histogram(num, w, case.value_codes, idle=idle)
    assert np.array_equal(hist, intmodel.histogram(w, case.value_codes, num))
    if idle == 0.0:  # one token per cycle, never refused
        assert np.diff(src.sent_at).tolist() == [1] * 49


def test_histogram_zero_tokens_and_reuse() -> None:
    num = NUM_TPC8
    hist, _ = _run_histogram(num, np.zeros(0, dtype=np.int64), np.zeros((0, 8), dtype=np.int64))
    assert not hist.any()


def test_histogram_without_forwarding_is_wrong() -> None:
    """The checker catches the back-to-back hazard: a design without forwarding fails."""
    num = NUM_TPC8
    case = make_case("one_code", 20, num, np.random.default_rng(3))
    w = np.full(20, 5)
    good, _ = _run_histogram(num, w, case.value_codes, idle=0.0)
    bad, _ = _run_histogram(num, w, case.value_codes, idle=0.0, forwarding=False)
    golden = intmodel.histogram(w, case.value_codes, num)
    assert np.array_equal(good, golden)
    assert not np.array_equal(bad, golden)


# ----------------------------------------------------------------------------------------------
# value MAC
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("num", "lanes"),
    [(NUM_TPC8, 16), (NUM_TPC8, 4), (NUM_TPC8, 2), (NUM_TPC32, 8), (NUM_TPC32, 2)],
    ids=["K16-lanesD", "K16-lanes4", "K16-lanes2", "K4-lanesD", "K4-lanes2"],
)
def test_value_mac(num: Numerics, lanes: int) -> None:
    """Random and extreme histograms back to back on one DUT (the accumulators clear)."""
    rng = np.random.default_rng(8)
    dut = ValueMAC(numerics=num, lanes=lanes)
    assert dut.cycles_per_bin == num.head_dim // lanes
    cap = num.token_capacity * num.weight_one
    shape = (num.subspaces, num.centroids, num.sub_dim)
    cases = [
        (rng.integers(0, num.weight_one + 1, (num.subspaces, num.centroids)),
         rng.integers(num.elem_min, num.elem_max + 1, shape)),
    ]
    # the bounds: every subspace's whole weight on one bin, centroid at the format's minimum
    # (the most negative out) or maximum
    for j, elem in ((-1, num.elem_min), (0, num.elem_max)):
        hist = np.zeros((num.subspaces, num.centroids), dtype=np.int64)
        hist[:, j] = cap
        cases.append((hist, np.full(shape, elem)))
    # the whole weight split over two bins of opposite extreme centroids (cancellation), and
    # split at random over all K bins with random extreme centroids (bins sum to the bound)
    hist = np.zeros((num.subspaces, num.centroids), dtype=np.int64)
    hist[:, 0], hist[:, 1] = cap // 2, cap - cap // 2
    cv = np.full(shape, num.elem_max)
    cv[:, 1] = num.elem_min
    cases.append((hist, cv))
    cases.append((rng.multinomial(cap, np.full(num.centroids, 1 / num.centroids),
                                  size=num.subspaces),
                  rng.choice([num.elem_min, num.elem_max], shape)))
    bl = dut.i_bins.payload.shape()
    phases, sinks = [], []
    for hist, cv in cases:
        order = rng.permutation(num.centroids)  # bins in any index order
        bins = [pack(bl, {"bins": [int(x) for x in hist[:, j]], "index": int(j),
                          "last": int(i == num.centroids - 1)}) for i, j in enumerate(order)]
        snk = Sink(dut.o_out, 1)
        sinks.append(snk)
        phases += [([Source(dut.i_cb, codebook_beats(dut.i_cb.payload.shape(), cv))], []),
                   ([Source(dut.i_bins, bins)], [snk])]
    run_phases(dut, phases, seed=lanes)
    for i, ((hist, cv), snk) in enumerate(zip(cases, sinks, strict=True)):
        out = unpack(dut.o_out.payload.shape(), snk.beats[0])["out"]
        assert out == intmodel.hist_times_centroids(hist, cv, num).tolist(), f"case {i}"


@pytest.mark.parametrize("lanes", [16, 4])
def test_value_mac_cycles(lanes: int) -> None:
    """A bin index per D / lanes cycles; o_out valid ``latency`` cycles after the last bin."""
    num = NUM_TPC8
    dut = ValueMAC(numerics=num, lanes=lanes)
    n = num.head_dim // lanes
    bl = dut.i_bins.payload.shape()
    bins = [pack(bl, {"bins": [1] * num.subspaces, "index": j, "last": int(j == num.centroids - 1)})
            for j in range(num.centroids)]
    src, snk = Source(dut.i_bins, bins, idle=0.0), Sink(dut.o_out, 1, backpressure=0.0)
    run_phases(dut, [([src], [snk])], seed=0)
    assert np.diff(src.sent_at).tolist() == [n] * (num.centroids - 1)
    assert snk.got_at[0] - src.sent_at[-1] == dut.latency
    assert snk.got_at[0] - src.sent_at[0] == (num.centroids - 1) * n + dut.latency


@pytest.mark.slow
@pytest.mark.parametrize(("unit", "params"), [
    ("value_mac", {}), ("value_mac", {"lanes": 8}), ("lut_accumulate", {}), ("histogram", {}),
    ("softmax", {}),
])
def test_units_meet_level_budget(unit: str, params: dict) -> None:
    """Each attention unit's longest path fits the tCK x 2 budget (``aqpim synth``, minutes).

    The value MAC with its whole product in one stage measured 26 levels and failed this.
    """
    from aqpim.hw.synth import LEVEL_BUDGET, synth_unit

    res = synth_unit(unit, params)
    assert res.levels <= LEVEL_BUDGET, f"{unit} {params}: {res.levels} levels via {res.path}"


# ----------------------------------------------------------------------------------------------
# the whole bank attention path
# ----------------------------------------------------------------------------------------------
def run_attention(num: Numerics, cases: list, *, seed: int, forwarding: bool = True) -> list:
    """Run the cases back to back on one Attention DUT (reloading LUT and codebook each time)."""
    dut = Attention(numerics=num, forwarding=forwarding)
    col_l = dut.i_key.payload.shape()
    phases = []
    sinks = []
    for case in cases:
        snk = Sink(dut.o_partial, 1)
        sinks.append(snk)
        phases.append(([Source(dut.i_lut, lut_beats(dut.i_lut.payload.shape(), case.lut)),
                        Source(dut.i_vcb, codebook_beats(dut.i_vcb.payload.shape(),
                                                         case.value_codebook))], []))
        phases.append(([Source(dut.i_key, column_beats(col_l, case.key_codes, num)),
                        Source(dut.i_val, column_beats(col_l, case.value_codes, num))], [snk]))
    run_phases(dut, phases, seed=seed)
    return [unpack(dut.o_partial.payload.shape(), s.beats[0]) for s in sinks]


def _check(got: dict, case) -> None:
    exp = case.expected
    assert (got["max"], got["sum"], got["tokens"], got["overflow"]) == (
        exp.max, exp.sum, case.tokens, 0), case.kind
    assert got["out"] == exp.out.tolist(), case.kind


@pytest.mark.parametrize(
    "num",
    [NUM_TPC8, NUM_TPC32, pytest.param(NUM_TPC2, marks=pytest.mark.slow)],
    ids=["tpc8", "tpc32", "tpc2"],
)
def test_attention_every_kind(num: Numerics) -> None:
    rng = np.random.default_rng(21)
    tpc = Geometry(num).tokens_per_column
    counts = [num.token_capacity, 2 * tpc + 1, 1, 0]
    cases = [make_case(kind, counts[i % len(counts)], num, rng) for i, kind in enumerate(KINDS)]
    cases += [make_case("random", 0, num, rng), make_case("random", 1, num, rng)]
    for got, case in zip(run_attention(num, cases, seed=9), cases, strict=True):
        _check(got, case)


@pytest.mark.slow  # M = 64 is slow on amaranth.sim; the Verilator test covers it by default
def test_attention_tpc1() -> None:
    num = NUM_TPC1
    rng = np.random.default_rng(5)
    cases = [make_case("one_code", 16, num, rng), make_case("random", 7, num, rng)]
    for got, case in zip(run_attention(num, cases, seed=2), cases, strict=True):
        _check(got, case)


def test_attention_without_forwarding_fails() -> None:
    num = NUM_TPC8
    case = make_case("one_code", 30, num, np.random.default_rng(6))
    (got,) = run_attention(num, [case], seed=4, forwarding=False)
    assert got["out"] != case.expected.out.tolist()


@pytest.mark.parametrize(("num", "queries", "tokens"), [
    (NUM_TPC8, 3, [19, 0]),
    (Numerics(head_dim=16, subspaces=4, centroids=16, value_subspaces=8, value_centroids=16,
              token_capacity=40), 4, [33]),  # separate key / value geometry
], ids=["tpc8-G3", "asym-G4"])
def test_attention_gqa(num: Numerics, queries: int, tokens: list[int]) -> None:
    """G query heads in one pass pair: G LUTs, the key and value columns streamed once, G
    partials (``query`` 0..G-1), each equal to intmodel's bank_partial with its own LUT; two
    pass pairs back to back (the second with no tokens)."""
    rng = np.random.default_rng(31)
    dut = Attention(numerics=num, queries=queries)
    lut_l, plain = dut.i_lut.payload.shape(), Attention(numerics=num).i_lut.payload.shape()
    nk, nv = num.keys, num.values
    phases, sinks, expected = [], [], []
    for t in tokens:
        kc = rng.integers(0, nk.centroids, size=(t, nk.subspaces))
        vc = rng.integers(0, nv.centroids, size=(t, nv.subspaces))
        cv = rng.integers(num.elem_min, num.elem_max + 1,
                          size=(nv.subspaces, nv.centroids, nv.sub_dim))
        luts = rng.integers(num.lut_min // 8, num.lut_max // 8,
                            size=(queries, nk.subspaces, nk.centroids))
        beats = [pack(lut_l, {**unpack(plain, w), "query": q})
                 for q in range(queries) for w in lut_beats(plain, luts[q])]
        snk = Sink(dut.o_partial, queries)
        sinks.append(snk)
        expected.append([intmodel.bank_partial(luts[q], kc, vc, cv, num) for q in range(queries)])
        phases.append(([Source(dut.i_lut, beats),
                        Source(dut.i_vcb, codebook_beats(dut.i_vcb.payload.shape(), cv))], []))
        phases.append(([Source(dut.i_key, column_beats(dut.i_key.payload.shape(), kc, nk)),
                        Source(dut.i_val, column_beats(dut.i_val.payload.shape(), vc, nv))],
                       [snk]))
    run_phases(dut, phases, seed=8)
    for t, snk, exp in zip(tokens, sinks, expected, strict=True):
        got = [unpack(dut.o_partial.payload.shape(), w) for w in snk.beats]
        assert [g["query"] for g in got] == list(range(queries))
        for g, e in zip(got, exp, strict=True):
            assert (g["max"], g["sum"], g["tokens"], g["overflow"]) == (e.max, e.sum, t, 0)
            assert g["out"] == e.out.tolist()


# ----------------------------------------------------------------------------------------------
# the fixed-point exp2 against float exp2 over its whole input range
# ----------------------------------------------------------------------------------------------
def test_exp2_error_bound() -> None:
    from aqpim.sim.exp2_error import measure

    for num in (Numerics(), Numerics(lut_frac_bits=10, exp_bits=20)):
        r = measure(num)
        assert r["deltas"] == num.score_max - num.score_min + 1
        assert r["max_abs_lsb"] < r["bound_lsb"] == 1.0
        assert r["max_rel_n0"] <= 0.5 / (1 << num.exp_bits) * 2  # 1/2 LSB of weights >= 1/2
        # the first zero weight is where the shift passes P: delta = (P + 1) * 2^F at most
        assert r["zero_from"] <= (num.exp_bits + 1) << num.lut_frac_bits
