"""Performance model: each HBM3 timing rule, validation against the closed-form bound, config
errors, the two regimes of issue 7, the CLI and the driver-trace adapter.

Expected values come from the timing parameters in the config (read here, not from the
model's output): e.g. two column commands to different bank groups must be nCCD_S apart.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from aqpim.sw.perf import cli
from aqpim.sw.perf import equal_accuracy as eq
from aqpim.sw.perf.hbm3 import (
    ChannelTimer,
    Cmd,
    HBM3Config,
    PimWorkload,
    Segment,
    TimingError,
    closed_form_cycles,
    plan_channel,
    simulate_decode,
    stream_all_bank,
    stream_per_bank,
    trace_timing,
)
from aqpim.sw.perf.systems import (
    BUILTIN_MODELS,
    DEFAULT_SYSTEMS,
    SYSTEMS,
    GPUConfig,
    ModelConfig,
    SystemSpec,
    aqpim_workload,
    evaluate,
    get_spec,
    pq_numerics,
    pq_queries,
    spec_workload,
    system_for,
)

from aqpim.numerics import Numerics

HW = HBM3Config.load()
T = HW.timing
GPU = GPUConfig.load("h100")
MODELS = {name: ModelConfig.load(name) for name in BUILTIN_MODELS}


# ----------------------------------------------------------------------------------------------
# timing rules, one by one
# ----------------------------------------------------------------------------------------------
def _open(timer: ChannelTimer, banks: list[tuple[int, int, int]]) -> None:
    for r, g, b in banks:
        timer.issue(Cmd.ACT, r, g, b)


def test_config_matches_attacc_numbers() -> None:
    assert HW.banks_per_channel == 64 and HW.banks // HW.stacks == 1024
    assert (T["nCCD_S"], T["nCCD_L"], T["nCCD_AB"], T["nFAW"], T["nREFI"]) == (2, 4, 6, 39, 5070)
    # brief: about 10.6 TB/s per stack without the power limit, about 7.1 TB/s with it
    assert HW.replace(power_limit=False).internal_gbs / HW.stacks == pytest.approx(10650, rel=0.01)
    assert HW.internal_gbs / HW.stacks == pytest.approx(7100, rel=0.01)
    assert "attacc" in HW.source.lower()


def test_nccd_short_vs_long() -> None:
    tm = ChannelTimer(HW)
    _open(tm, [(0, 0, 0), (0, 0, 1), (0, 1, 0)])
    a = tm.issue(Cmd.RD, 0, 0, 0, not_before=200)  # every bank past nRCD
    b = tm.issue(Cmd.RD, 0, 1, 0)  # other bank group: nCCD_S
    c = tm.issue(Cmd.RD, 0, 1, 0)  # same bank group (and bank): nCCD_L after b
    d = tm.issue(Cmd.RD, 0, 0, 1)  # bank group 0 again: nCCD_S after c, nCCD_L after a
    assert b - a == T["nCCD_S"]
    assert c - b == T["nCCD_L"]
    assert d - c == T["nCCD_S"] and d - a >= T["nCCD_L"]


def test_nrrd_short_vs_long_and_other_rank() -> None:
    tm = ChannelTimer(HW)
    a = tm.issue(Cmd.ACT, 0, 0, 0)
    b = tm.issue(Cmd.ACT, 0, 1, 0)  # other bank group
    c = tm.issue(Cmd.ACT, 0, 1, 1)  # same bank group
    assert b - a == T["nRRD_S"]
    assert c - b == T["nRRD_L"]
    d = tm.issue(Cmd.ACT, 1, 1, 2)  # other rank (stack ID / pseudo-channel): only the bus
    assert d - c == 2  # an ACT holds the row-command bus two cycles


def test_nfaw_window() -> None:
    tm = ChannelTimer(HW)
    banks = [(g, b) for b in range(2) for g in range(4)][:5]
    acts = [tm.issue(Cmd.ACT, 0, g, b) for g, b in banks]
    assert acts[4] - acts[0] == T["nFAW"]  # the fifth ACT waits for the window
    assert all(y - x >= T["nRRD_S"] for x, y in zip(acts, acts[1:], strict=False))
    # another rank has its own window
    other = tm.issue(Cmd.ACT, 1, 0, 0)
    assert other - acts[4] == 2


def test_act_pre_on_row_switch_per_bank() -> None:
    tm = ChannelTimer(HW)
    a = tm.issue(Cmd.ACT, 0, 0, 0, row=1)
    rd = tm.issue(Cmd.RD, 0, 0, 0)
    assert rd - a == T["nRCD"]
    p = tm.issue(Cmd.PRE, 0, 0, 0)
    assert p - a == T["nRAS"]  # nRAS binds (the read's nRTPL ends earlier)
    a2 = tm.issue(Cmd.ACT, 0, 0, 0, row=2)
    assert a2 - a == max(T["nRC"], T["nRAS"] + T["nRP"])
    with pytest.raises(TimingError):
        tm.issue(Cmd.ACT, 0, 0, 0, row=3)  # row open
    tm2 = ChannelTimer(HW)
    with pytest.raises(TimingError):
        tm2.issue(Cmd.RD, 0, 0, 0)  # closed bank


def test_row_switch_all_bank() -> None:
    tm = ChannelTimer(HW, log=True)
    cols = HW.org["columns"]
    st = stream_all_bank(tm, [Segment(cols + 1)])
    cmds = [c for _, c, *_ in tm.log]
    assert cmds == [Cmd.ACTAB] + [Cmd.MACAB] * cols + [Cmd.PREA, Cmd.ACTAB, Cmd.MACAB, Cmd.PREA]
    times = [t for t, *_ in tm.log]
    first_mac, last_mac_row0 = times[1], times[cols]
    assert first_mac - times[0] == T["nRCD"]
    pre, act, mac = times[cols + 1], times[cols + 2], times[cols + 3]
    assert pre - last_mac_row0 == T["nRTPL"]
    assert act - pre == T["nRP"] and mac - act == T["nRCD"]
    assert st.rows == 2 and st.columns == cols + 1
    # a one-column row: nRAS and nRC bind, not the columns
    tm = ChannelTimer(HW, log=True)
    stream_all_bank(tm, [Segment(1), Segment(1)])
    times = {c: [t for t, cc, *_ in tm.log if cc is c] for c in (Cmd.ACTAB, Cmd.PREA)}
    assert times[Cmd.PREA][0] - times[Cmd.ACTAB][0] == T["nRAS"]
    assert times[Cmd.ACTAB][1] - times[Cmd.ACTAB][0] == max(T["nRC"], T["nRAS"] + T["nRP"])


@pytest.mark.parametrize("power_limit, unit, want", [
    (True, 0, 6), (False, 0, 4), (True, 9, 9), (False, 5, 5),
])
def test_all_bank_spacing(power_limit: bool, unit: int, want: int) -> None:
    cfg = HW.replace(power_limit=power_limit, refresh=False)
    assert want == max(T["nCCD_AB"] if power_limit else T["nCCD_AB_NPC"], unit)
    tm = ChannelTimer(cfg, log=True)
    stream_all_bank(tm, [Segment(8, unit)])
    macs = [t for t, c, *_ in tm.log if c is Cmd.MACAB]
    assert set(np.diff(macs).tolist()) == {want}


def test_macab_needs_open_rows() -> None:
    tm = ChannelTimer(HW)
    with pytest.raises(TimingError):
        tm.issue(Cmd.MACAB)
    tm.issue(Cmd.ACTAB, row=3)
    with pytest.raises(TimingError):
        tm.issue(Cmd.MACAB, row=4)
    with pytest.raises(TimingError):
        tm.issue(Cmd.REFAB)


def test_refresh_overhead() -> None:
    n = 32 * 400
    on = stream_all_bank(ChannelTimer(HW, log=True), [Segment(n)])
    off = stream_all_bank(ChannelTimer(HW.replace(refresh=False)), [Segment(n)])
    assert off.refreshes == 0 and off.refresh_cycles == 0
    # one refresh per nREFI of elapsed time, issued at the next row boundary (so one that
    # falls due in the last row is not issued)
    due = on.cycles // T["nREFI"]
    assert due - 1 <= on.refreshes <= due
    # a refresh rides on a row switch (PREA -nRP- REFAB -nRFC- ACTAB instead of PREA -nRP-
    # ACTAB): it costs nRFC, as long as nRAS / nRC do not bind
    assert on.cycles - off.cycles == on.refreshes * T["nRFC"]
    # the slot after a refresh slips by PREA -nRTPL- ... REFAB -nRFC- ACTAB -nRCD- MACAB
    slip = T["nRTPL"] + T["nRP"] + T["nRFC"] + T["nRCD"] - HW.n_ccd_ab
    assert on.refresh_cycles == on.refreshes * slip
    tm = ChannelTimer(HW, log=True)
    stream_all_bank(tm, [Segment(n)])
    log = tm.log
    for i, (t, c, *_) in enumerate(log):
        if c is Cmd.REFAB:
            assert log[i - 1][1] is Cmd.PREA and t - log[i - 1][0] == T["nRP"]
            assert log[i + 1][1] is Cmd.ACTAB and log[i + 1][0] - t == T["nRFC"]


def test_per_bank_mode_is_bus_bound() -> None:
    """Per-bank column commands of a channel are nBL apart and each reads the same bank in both
    pseudo-channels (AttAcc's MACPB broadcast): 2 columns per nBL vs 64 per nCCD_AB."""
    cfg = HW.replace(refresh=False)
    st = stream_per_bank(ChannelTimer(cfg), 64)
    assert st.columns == 64 * 64
    assert st.cycles >= st.columns // 2 * T["nBL"]
    single = stream_per_bank(ChannelTimer(cfg), 64, pch_broadcast=False)
    assert single.columns == st.columns and single.cycles >= st.columns * T["nBL"]
    assert single.cycles > 1.8 * st.cycles
    ab = stream_all_bank(ChannelTimer(cfg), [Segment(64)])
    assert st.cycles / ab.cycles > 5


@pytest.mark.parametrize("columns", [32 * 64, 32 * 500 + 7, 32 * 2000])
@pytest.mark.parametrize("spacing", [0, 8])
def test_steady_state_within_5pct_of_bound(columns: int, spacing: int) -> None:
    cfg = HW.replace(refresh=False)
    st = stream_all_bank(ChannelTimer(cfg), [Segment(columns, spacing)])
    bound = closed_form_cycles(cfg, columns, spacing)
    # the bound, written out: bytes / internal bandwidth + row-switch overhead
    sp = max(cfg.n_ccd_ab, spacing)
    nbytes = columns * cfg.banks_per_channel * cfg.org["column_bytes"]
    per_cycle = cfg.banks_per_channel * cfg.org["column_bytes"] / sp
    rows = math.ceil(columns / cfg.org["columns"])
    by_hand = nbytes / per_cycle + T["nRCD"] + (rows - 1) * (T["nRTPL"] + T["nRP"] + T["nRCD"] - sp)
    assert bound == pytest.approx(by_hand)
    assert st.cycles >= bound
    assert st.cycles <= 1.05 * bound
    # with refresh: never below the refresh-free bound, within 5 % of the refresh-aware one
    on = stream_all_bank(ChannelTimer(HW), [Segment(columns, spacing)])
    assert on.cycles >= bound
    assert on.cycles == pytest.approx(closed_form_cycles(HW, columns, spacing, refresh=True),
                                      rel=0.05)
    assert on.cycles == on.column_cycles + on.row_switch_cycles + on.refresh_cycles


def test_decode_report_breakdown_sums() -> None:
    m = MODELS["llama2-7b"]
    r = evaluate("aqpim-2b", m, GPU, HW, 32768, 4)
    assert sum(r.breakdown.values()) == pytest.approx(r.seconds)
    assert 0 < r.pim_bandwidth_utilisation <= 1


def test_plan_spreads_jobs_and_checks_spread() -> None:
    w = PimWorkload(layers=1, jobs_per_layer=8, passes=1, tokens=4096, key_bits_per_token=256,
                    value_bits_per_token=256, key_spacing=1, value_spacing=1,
                    write_beats_per_job=10, query_beats_per_pass=65, partial_beats_per_bank=34)
    most = HW.banks // 8
    plan = plan_channel(HW, w, most)
    assert plan.tokens_per_bank == math.ceil(4096 / most)
    chosen = plan_channel(HW, w)
    assert simulate_decode(HW, w).seconds <= simulate_decode(HW, w, spread=most).seconds
    assert 1 <= chosen.spread <= most
    with pytest.raises(ValueError, match="spread"):
        plan_channel(HW, w, most + 1)
    with pytest.raises(ValueError, match="tokens"):
        PimWorkload(layers=1, jobs_per_layer=1, passes=1, tokens=-1, key_bits_per_token=1,
                    value_bits_per_token=1, key_spacing=0, value_spacing=0,
                    write_beats_per_job=0, query_beats_per_pass=0, partial_beats_per_bank=0)


# ----------------------------------------------------------------------------------------------
# config errors
# ----------------------------------------------------------------------------------------------
def _hw_dict() -> dict:
    return json.loads((HW_PATH).read_text())


HW_PATH = __import__("aqpim.sw.perf.hbm3", fromlist=["CONFIG_DIR"]).CONFIG_DIR / "hbm3.json"


@pytest.mark.parametrize("edit, exc, match", [
    (lambda d: d["timing"].pop("nFAW"), ValueError, "nFAW"),
    (lambda d: d["timing"].update(nRCD=-3), ValueError, "nRCD.*-3"),
    (lambda d: d["timing"].update(nRCD=1.5), TypeError, "nRCD.*1.5"),
    (lambda d: d["timing"].update(nXYZ=3), ValueError, "nXYZ"),
    (lambda d: d["timing"].update(nCCD_L=1), ValueError, "nCCD_L"),
    (lambda d: d["organization"].update(banks_per_group=0), ValueError, "banks_per_group"),
    (lambda d: d.update(stacks="5"), TypeError, "stacks"),
    (lambda d: d.update(refresh="yes"), TypeError, "refresh"),
    (lambda d: d.pop("tck_ns"), ValueError, "tck_ns"),
])
def test_hw_config_errors(edit, exc, match) -> None:
    d = _hw_dict()
    edit(d)
    with pytest.raises(exc, match=match):
        HBM3Config.from_dict(d)


def test_model_and_gpu_config_errors(tmp_path) -> None:
    good = json.loads((HW_PATH.parent / "llama3-8b.json").read_text())
    bad = dict(good, kv_heads=5)
    with pytest.raises(ValueError, match="kv_heads 5"):
        ModelConfig.from_dict(bad)
    with pytest.raises(ValueError, match="layers"):
        ModelConfig.from_dict({k: v for k, v in good.items() if k != "layers"})
    with pytest.raises(TypeError, match="head_dim"):
        ModelConfig.from_dict(dict(good, head_dim="128"))
    g = json.loads((HW_PATH.parent / "h100.json").read_text())
    with pytest.raises(ValueError, match="bandwidth_utilisation.*1.5"):
        GPUConfig.from_dict(dict(g, bandwidth_utilisation=1.5))
    with pytest.raises(ValueError, match="does not exist"):
        ModelConfig.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        HBM3Config.load(broken)
    with pytest.raises(ValueError, match="unknown model 'gpt5'"):
        ModelConfig.load("gpt5")
    with pytest.raises(ValueError, match="unknown system"):
        evaluate("tpu", MODELS["llama2-7b"], GPU, HW, 4096, 1)
    with pytest.raises(ValueError, match="context"):
        evaluate("gpu", MODELS["llama2-7b"], GPU, HW, 0, 1)
    with pytest.raises(ValueError, match="queries must be an int in 0..8.*got 9"):
        SystemSpec("aqpim-bad", "pq", numerics=Numerics(), queries=9)
    with pytest.raises(TypeError, match="pq needs numerics"):
        SystemSpec("aqpim-bad", "pq")
    odd = ModelConfig.from_dict({"layers": 1, "heads": 2, "kv_heads": 1, "head_dim": 96,
                                 "hidden": 192, "intermediate": 192, "vocab": 1})
    with pytest.raises(ValueError, match="head_dim 96 is not divisible by the keys' .* d = 64"):
        pq_numerics(SystemSpec("aqpim-x", "pq", numerics=Numerics(head_dim=128, subspaces=2)),
                    odd.head_dim)
    bad = HW.replace(units={**HW.units, "aqpim": {**HW.units["aqpim"],
                                                  "query_heads_per_pass": 12}})
    with pytest.raises(ValueError, match="query_heads_per_pass must be an int in 1..8, got 12"):
        evaluate("aqpim-2b", MODELS["llama3-8b"], GPU, bad, 4096, 1)


def test_cli_reports_config_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"layers": 2, "heads": 3, "kv_heads": 2, "head_dim": 64,
                               "hidden": 192, "intermediate": 512, "vocab": 100}))
    assert cli.main(["--model", str(bad), "--no-plots"]) == 2
    assert "heads 3 is not a multiple of kv_heads 2" in capsys.readouterr().err
    assert cli.main(["--hw", str(tmp_path / "nope.json"), "--no-plots"]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert cli.main(["--systems", "gpu,abc", "--no-plots"]) == 2
    assert "abc" in capsys.readouterr().err
    hw = json.loads(HW_PATH.read_text())
    del hw["units"]["uniform"]
    (tmp_path / "hw.json").write_text(json.dumps(hw))
    assert cli.main(["--hw", str(tmp_path / "hw.json"), "--model", "llama2-7b", "--contexts",
                     "4K", "--batches", "1", "--systems", "int4-pim", "--no-plots"]) == 2
    assert "units.uniform.scale_bits is missing" in capsys.readouterr().err
    ppl = tmp_path / "p.json"
    ppl.write_text("{}")
    assert cli.main(["--ppl", str(ppl), "--no-plots"]) == 2
    assert "'settings' must be a non-empty list" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# the two regimes
# ----------------------------------------------------------------------------------------------
def _att_speedup(model: ModelConfig, ctx: int, batch: int, hw: HBM3Config = HW,
                 system: str = "aqpim-2b") -> float:
    fp = evaluate("fp16-pim", model, GPU, hw, ctx, batch)
    aq = evaluate(system, model, GPU, hw, ctx, batch)
    assert fp.fits and aq.fits, "regime (a) needs both designs to hold the KV cache"
    return fp.attention_seconds / aq.attention_seconds


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_regime_a_attention_speedup(name: str) -> None:
    """Both designs hold the KV cache: AQPIM-2b never beats its byte-ratio bound over the
    GQA-aware FP16 baseline (8x for MHA; 2x for the GQA models, whose codes are re-read per
    query head while the FP16 column serves up to 6 query heads), and Llama-2-7B (MHA) reaches
    >= 6x at 128K."""
    model = MODELS[name]
    assert 16 / get_spec("aqpim-2b").bits_per_element(HW, model.head_dim) == 8
    for ctx in (4096, 32768, 131072):
        fp = evaluate("fp16-pim", model, GPU, HW, ctx, 1)
        aq = evaluate("aqpim-2b", model, GPU, HW, ctx, 1)
        bound = fp.streamed_bytes / aq.streamed_bytes
        # both read each column once per pass: FP16 ceil(group / 6) passes, AQPIM ceil(group
        # / G) with G = the group (<= 8): one
        assert bound == pytest.approx(8 * -(-model.group // 6), rel=0.02)
        assert fp.attention_seconds / aq.attention_seconds <= bound * 1.05
    if model.group == 1:
        # at d = 2, K = 16 (2 KB LUTs) Llama-2-7B reaches >= 6x at 128K; d = 4, K = 256 pays
        # its 16 KB LUTs on the channel bus and the link (docs/perf.md)
        assert _att_speedup(model, 131072, 1, system="aqpim-2b-d2k16") >= 6.0


def test_regime_a_fails_when_units_cannot_keep_up() -> None:
    """The >= 6x check can fail: units slower than the bank (LUT-accumulate at 12 tCK per
    column instead of 1) make the PQ stream unit-bound."""
    units = {**HW.units, "aqpim": {**HW.units["aqpim"], "clock_divider": 12}}
    slow = HW.replace(units=units)
    assert _att_speedup(MODELS["llama2-7b"], 131072, 1, slow, "aqpim-2b-d2k16") < 6.0


def test_regime_b_capacity_wall() -> None:
    """Whole step: little gain where both fit; the FP16 cache spills where the PQ one fits."""
    m = MODELS["llama2-7b"]
    both = [evaluate(s, m, GPU, HW, 32768, 1) for s in ("fp16-pim", "aqpim-2b")]
    assert all(r.fits for r in both)
    assert 1.0 < both[0].seconds / both[1].seconds < 3.4  # FC weights dominate at batch 1
    fp = evaluate("fp16-pim-naive", m, GPU, HW, 32768, 16)
    aq = evaluate("aqpim-2b", m, GPU, HW, 32768, 16)
    assert not fp.fits and aq.fits
    assert fp.spilled_bytes == m.kv_bytes(32768, 16) - (
        HW.capacity_bytes // (16 * m.layers * m.kv_heads * m.kv_token_bytes())
        * 16 * m.layers * m.kv_heads * m.kv_token_bytes())
    assert 0.9 <= fp.pcie_share <= 1.0
    assert fp.seconds / aq.seconds > 10
    # time never falls as the batch or the context grows
    for system in ("gpu", "fp16-pim", "aqpim-2b"):
        prev = 0.0
        for b, ctx in ((1, 4096), (1, 32768), (4, 32768), (16, 32768), (16, 131072)):
            s = evaluate(system, m, GPU, HW, ctx, b).seconds
            assert s >= prev * 0.999, (system, b, ctx)
            prev = s


def test_paper_crossing_sits_on_the_capacity_wall() -> None:
    """3.4x is reached only once the FP16 cache spills (docs/perf.md), with either baseline."""
    m = MODELS["llama2-7b"]
    for baseline, most in (("fp16-pim-naive", 0.25), ("fp16-pim", 0.5)):
        (row,) = cli.crossings([m], GPU, HW, [16], baseline=baseline)
        ctx = row["context"]
        assert ctx is not None and row["speedup"] >= cli.PAPER_SPEEDUP
        before = [evaluate(s, m, GPU, HW, ctx - 1024, 16) for s in (baseline, "aqpim-2b")]
        assert before[0].seconds / before[1].seconds < cli.PAPER_SPEEDUP
        assert 0 < row["fp16_spilled_share"] < most


def test_gqa_aware_baseline_reads_each_kv_column_once() -> None:
    """Llama-3-8B (4 query heads per KV head, <= 6 MAC slots per nCCD_AB): the fair baseline
    streams the FP16 cache once, the naive one four times."""
    m = MODELS["llama3-8b"]
    fair = evaluate("fp16-pim", m, GPU, HW, 32768, 1)
    naive = evaluate("fp16-pim-naive", m, GPU, HW, 32768, 1)
    assert fair.streamed_bytes == m.kv_bytes(32768, 1)
    assert naive.streamed_bytes == m.group * m.kv_bytes(32768, 1)
    w = spec_workload(get_spec("fp16-pim"), m, HW, 1, 32768)
    # 4 query heads x 1 MAC cycle per column: the units' 4 cycles hide under nCCD_AB = 6
    assert (w.passes, w.queries_per_pass, w.key_spacing) == (1, 4, 4)
    # Llama-2-70B: 8 query heads need two passes of at most 6
    w70 = spec_workload(get_spec("fp16-pim"), MODELS["llama2-70b"], HW, 1, 4096)
    assert (w70.passes, w70.queries_per_pass) == (2, 6)


def test_spill_goes_to_gpu_hbm_before_pcie() -> None:
    """Just past the wall the fair baseline keeps the excess in the GPU's free HBM (no PCIe);
    the CPU part appears only once that is full, and PCIe and the GPU read overlap."""
    m = MODELS["llama2-7b"]
    r = evaluate("fp16-pim", m, GPU, HW, 16384, 16)
    assert not r.fits and r.cpu_bytes == 0 and r.gpu_hbm_bytes == r.spilled_bytes > 0
    assert "pcie" not in r.breakdown
    naive = evaluate("fp16-pim-naive", m, GPU, HW, 16384, 16)
    assert naive.cpu_bytes == naive.spilled_bytes and naive.seconds > 20 * r.seconds
    far = evaluate("fp16-pim", m, GPU, HW, 131072, 16)
    room = GPU.usable_bytes - m.weight_bytes
    assert far.gpu_hbm_bytes == pytest.approx(room, rel=1e-6) and far.cpu_bytes > 0
    read = GPU.read_seconds(far.gpu_hbm_bytes + far.cpu_bytes, 1)
    pcie = GPU.pcie_seconds(far.cpu_bytes, 1)
    assert far.attention_seconds == pytest.approx(max(read, pcie))  # not read + pcie
    cpu = evaluate("fp16-pim-cpu", m, GPU, HW, 131072, 16)
    assert cpu.attention_seconds == pytest.approx(GPU.host_read_seconds(cpu.cpu_bytes))


def test_merge_unit_shrinks_link_bytes_by_banks_per_channel() -> None:
    """With a job over whole channels, the merge unit sends one partial per channel and query
    head instead of one per bank: 64x fewer partial bytes on the link."""
    m = MODELS["llama2-7b"]
    num = pq_numerics(get_spec("aqpim-2b"), m.head_dim)
    spread = HW.banks_per_channel * 2
    plans = [plan_channel(HW, aqpim_workload(m, HW, num, 1, 65536, merge=mg), spread)
             for mg in (False, True)]
    assert plans[0].partials == HW.banks_per_channel * plans[1].partials
    w = aqpim_workload(m, HW, num, 1, 65536)
    down = w.jobs_per_layer * w.link_down_bytes_per_job
    up = [p.link_bytes - down for p in plans]
    assert up[0] == HW.banks_per_channel * up[1] > 0
    assert plans[0].link_cycles > plans[1].link_cycles


def test_one_pim_device_per_gpu_and_allreduce() -> None:
    """Llama-2-70B needs 2 GPUs: the fair baseline has 2 devices (10 stacks), the naive one
    shares 5; both pay the tensor-parallel all-reduce, the 1-GPU models do not."""
    m = MODELS["llama2-70b"]
    assert evaluate("fp16-pim", m, GPU, HW, 4096, 1).stacks == 2 * HW.stacks
    assert evaluate("fp16-pim-naive", m, GPU, HW, 4096, 1).stacks == HW.stacks
    assert evaluate("fp16-pim", m, GPU, HW, 4096, 1).breakdown["allreduce"] > 0
    assert "allreduce" not in {k for k, v in evaluate(
        "fp16-pim", MODELS["llama2-7b"], GPU, HW, 4096, 1).breakdown.items() if v}


def test_uniform_pim_bytes_and_mac_rate() -> None:
    """INT8 / INT4 / KIVI-2: bytes per element with the scales, and the dequantize-MAC rate
    (a 2-bit column of 128 elements needs 8 cycles of 16 MACs: slower than nCCD_AB = 6)."""
    m = MODELS["llama2-7b"]
    bpe = {s: get_spec(s).bits_per_element(HW, m.head_dim)
           for s in ("int8-pim", "int4-pim", "kivi2-pim")}
    assert bpe == {"int8-pim": 8.25, "int4-pim": 5.0, "kivi2-pim": 3.0}
    spacing = {s: spec_workload(get_spec(s), m, HW, 1, 4096).key_spacing for s in bpe}
    # units' cycles per column for one query head (the stream runs at max(nCCD_AB, this))
    assert spacing == {"int8-pim": 2, "int4-pim": 4, "kivi2-pim": 8}
    assert spec_workload(get_spec("int8-pim"), MODELS["llama3-8b"], HW, 1, 4096) \
        .queries_per_pass == 3


def test_energy_counts_every_system() -> None:
    """Every system has a positive energy; AQPIM reads fewer DRAM bits than FP16 PIM."""
    m = MODELS["llama2-7b"]
    rs = {s: evaluate(s, m, GPU, HW, 32768, 1) for s in SYSTEMS}
    assert all(r.energy_total_j > 0 for r in rs.values())
    assert rs["aqpim-2b"].energy_j["pim_dram"] < rs["fp16-pim"].energy_j["pim_dram"] / 7
    bad = HW.replace(energy={**HW.energy, "pq_op_pj": "cheap"})
    with pytest.raises(ValueError, match="energy.pq_op_pj.*'cheap'"):
        evaluate("aqpim-2b", m, GPU, bad, 4096, 1)
    bits = rs["fp16-pim"].streamed_bytes * 8
    assert rs["fp16-pim"].energy_j["pim_dram"] == pytest.approx(
        bits * (HW.energy["activate_pj_per_bit"] + HW.energy["cell_read_pj_per_bit"]) * 1e-12)


def test_equal_accuracy_choice(tmp_path) -> None:
    """Per level, the cheapest setting that meets it; FP16 always does; bad input is named."""
    data = eq.load_ppl()
    at101 = {f: s["name"] for f, s in eq.choose(data, 1.01).items()}
    assert at101["FP16-PIM"] == "fp16"
    for s in data["settings"]:
        if s["name"] in at101.values():
            assert eq.ratio(s) <= 1.01
    # the integer bank model's ratio decides where it was measured (what the RTL computes)
    pq = {"kind": "pq", "key": {"d": 4, "K": 256}, "value": {"d": 4, "K": 256},
          "bits_per_element": 2.3}
    two = {"settings": [{"name": "fp16", "kind": "fp16", "bits_per_element": 16.0,
                         "ppl_ratio_float": 1.0, "ppl_ratio_int": None},
                        {**pq, "name": "a", "ppl_ratio_float": 1.005, "ppl_ratio_int": 1.02},
                        {**pq, "name": "b", "ppl_ratio_float": 1.02, "ppl_ratio_int": 1.008,
                         "bits_per_element": 2.4}]}
    assert eq.choose(two, 1.01)["AQPIM"]["name"] == "b"
    loose = eq.choose(data, 1.03)
    for f, s in loose.items():
        assert s["bits_per_element"] <= eq.choose(data, 1.01).get(f, s)["bits_per_element"]
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"settings": [{"kind": "vq", "ppl_ratio_float": 1.0,
                                             "bits_per_element": 2}]}))
    with pytest.raises(ValueError, match="'vq'"):
        eq.load_ppl(bad)


def test_gpu_baseline_closed_form() -> None:
    m = MODELS["llama3-8b"]
    r = evaluate("gpu", m, GPU, HW, 8192, 1)
    kv = 1 * m.layers * m.kv_heads * 8192 * 2 * m.head_dim * 2
    assert r.breakdown["gpu_attention"] == pytest.approx(kv / (3352e9 * 0.85))
    assert r.breakdown["fc"] == pytest.approx(2 * m.params / (3352e9 * 0.85))
    assert r.fits


# ----------------------------------------------------------------------------------------------
# CLI and sweep time
# ----------------------------------------------------------------------------------------------
def test_cli_json_stdout(capsys) -> None:
    assert cli.main(["--model", "llama3-8b", "--contexts", "4K,128K", "--batches", "1,16",
                     "--eq-contexts", "4K", "--eq-batches", "1", "--json", "--no-plots"]) == 0
    cap = capsys.readouterr()
    rep = json.loads(cap.out)  # exactly one JSON document, nothing else
    assert len(rep["results"]) == 2 * 2 * len(DEFAULT_SYSTEMS)
    assert {"regime_a", "regime_b", "paper_3_4x", "validation", "equal_accuracy",
            "attacc_comparison"} <= rep.keys()
    assert {r["system"] for r in rep["results"]} == set(DEFAULT_SYSTEMS)
    assert all(r["energy_total_j"] > 0 for r in rep["results"])
    assert rep["equal_accuracy"]["rows"]
    assert rep["validation"]["refresh_off"]["model_over_bound"] <= 1.05
    assert cap.err == ""


def test_full_sweep_writes_files_under_out(tmp_path, capsys) -> None:
    """The default sweep at one batch: the JSON on stdout is the one written under --out.
    (No timing is asserted: the runner is shared; it takes about 5 s of CPU.)"""
    assert cli.main(["--batches", "16", "--out", str(tmp_path), "--json"]) == 0
    rep = json.loads((tmp_path / "perf.json").read_text())
    assert rep == json.loads(capsys.readouterr().out)
    assert len(rep["results"]) == 3 * 6 * len(DEFAULT_SYSTEMS)
    assert rep["models"] == [MODELS[n].name for n in BUILTIN_MODELS]
    assert (tmp_path / "equal_accuracy.png").stat().st_size > 1000


def test_cli_plots(tmp_path) -> None:
    out = tmp_path / "perf"
    assert cli.main(["--model", "llama2-7b", "--contexts", "4K,128K", "--batches", "1,16",
                     "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"attention_b1.png", "step_b16.png", "breakdown_b16.png", "speedup_map.png"} <= names
    assert all((out / n).stat().st_size > 1000 for n in names)


# ----------------------------------------------------------------------------------------------
# driver trace through the model
# ----------------------------------------------------------------------------------------------
def test_trace_timing_from_driver(tmp_path) -> None:
    from aqpim.sw.host.driver import Driver
    from aqpim.sw.host.golden_device import GoldenDevice
    from aqpim.sw.host.trace import TraceRecorder

    from aqpim.geometry import Geometry

    num = Numerics(token_capacity=256)
    rng = np.random.default_rng(3)
    k = rng.standard_normal((2, 61, num.head_dim))
    v = rng.standard_normal((2, 61, num.head_dim))
    path = tmp_path / "t.jsonl"
    with TraceRecorder(GoldenDevice(Geometry(num), 4), path) as rec:
        drv = Driver(rec, kv_heads=2, iters=2)
        drv.prefill(k[:, :60], v[:, :60])
        drv.step(rng.standard_normal((2, num.head_dim)), k[:, 60], v[:, 60])
    held = {p["bank"]: 0 for h in drv.mapping() for p in h["places"]}
    for hs in drv.heads:
        for i, (bank, _slot) in enumerate(hs.places):
            held[bank] = hs.place_tokens(i)
    tt = trace_timing(path, HW)
    u = HW.units["aqpim"]
    cc = u["command_cycles"]
    scores = [t for t in tt if t.opcode == "SCORE"]
    aggs = [t for t in tt if t.opcode == "AGGREGATE"]
    assert len(scores) == len(aggs) == 4
    for t in scores:
        cols = held[t.bank]  # 2 bits/element: M*b = 256 bits, one column per token
        assert t.tokens == held[t.bank]
        assert t.unit_cycles == cc["base"] + cc["score"] + \
            cols * u["lut_accumulate_cycles_per_column"]
        assert t.dram_cycles >= T["nRCD"] + cols * HW.n_ccd_ab
        assert t.recorded is None  # the golden device records no cycles
    # the driver sends AGGREGATE right after SCORE: the last score is still in the
    # LUT-accumulate pipeline for 1 + log2(M) + 1 cycles, `score_to_aggregate_slack` hidden
    wait = max(0, 2 + math.ceil(math.log2(num.subspaces)) - cc["score_to_aggregate_slack"])
    # M = 64: 8 cycles of pipeline, all hidden by the two-stage decode of the AGGREGATE
    assert wait == 0
    # the value MAC: D / lanes = 128 / 16 = 8 cycles per bin, then its pipeline latency
    assert u["value_mac_cycles_per_centroid"] == num.head_dim // u["value_mac_lanes"] == 8
    for t in aggs:
        assert t.unit_cycles == (cc["base"] + cc["aggregate"] + held[t.bank]
                                 + num.centroids * 8 + u["value_mac_latency"] + wait)
    assert cli.main(["--trace", str(path), "--json"]) == 0
    assert cli.main(["--trace", str(tmp_path / "none.jsonl")]) == 2


# ----------------------------------------------------------------------------------------------
# issue 7: the model's per-command cycles against what the RTL did (co-simulation)
# ----------------------------------------------------------------------------------------------
# (numerics, banks, encoder lanes): the first shares its Verilator build with tests/test_bank.py
# (SMALL, 4 banks, lanes = K: one sub-vector per cycle); the second (TINY there, lanes = K / 2)
# checks the encoder term at two cycles per sub-vector; the third (the demo's build, M = 64)
# the one-cycle wait of AGGREGATE right after SCORE.
RTL_CASES = [
    pytest.param(Numerics(head_dim=32, subspaces=16, centroids=16, token_capacity=64), 4, 16,
                 id="D32-M16-K16-lanes16", marks=pytest.mark.cosim),
    pytest.param(Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=12), 1, 2,
                 id="D16-M8-K4-lanes2", marks=[pytest.mark.cosim, pytest.mark.slow]),
    pytest.param(Numerics(head_dim=128, subspaces=64, centroids=16, token_capacity=576), 4, 16,
                 id="D128-M64-K16-lanes16", marks=[pytest.mark.cosim, pytest.mark.slow]),
    # separate key / value geometry and a token over two columns (the builds of
    # tests/test_bank.py::test_rtl_decode_key_value_geometry: same parameters, same folder)
    pytest.param(Numerics(head_dim=64, subspaces=8, centroids=256, value_subspaces=16,
                          value_centroids=256, token_capacity=160), 2, 16,
                 id="D64-k8x256-v4x256-lanes16", marks=[pytest.mark.cosim, pytest.mark.slow]),
    pytest.param(Numerics(head_dim=128, subspaces=32, centroids=256, token_capacity=160), 2, 16,
                 id="D128-d4-K256-lanes16", marks=[pytest.mark.cosim, pytest.mark.slow]),
    pytest.param(Numerics(head_dim=128, subspaces=64, centroids=256, token_capacity=160), 2, 16,
                 id="D128-d2-K256-lanes16", marks=[pytest.mark.cosim, pytest.mark.slow]),
]


def record_rtl_trace(path, num: Numerics, banks: int, lanes: int, seed: int) -> int:
    """A driver prefill + decode step (when the capacity allows) and a random command stream
    with rejected commands, on the RTL device with no idle cycles and no back-pressure (so the
    recorded cycles are the bank's own), written as a trace. Returns the rejected count."""
    from aqpim.sim.randcmd import build_stream
    from aqpim.sim.rtl_device import RtlDevice
    from aqpim.sw.golden.synthetic import generate
    from aqpim.sw.host.driver import Driver
    from aqpim.sw.host.trace import TraceRecorder

    from aqpim import isa
    from aqpim.geometry import Geometry

    g = Geometry(num)
    heads = 2 if banks % 2 == 0 and num.centroids <= 16 else 1
    # k-means needs K tokens per head
    tokens = min(num.token_capacity * banks // heads - 1, max(100, num.centroids + 8))
    data = generate(heads=heads, tokens=tokens + 1, head_dim=num.head_dim, seed=seed)
    with RtlDevice(g, banks, lanes=lanes, seed=seed, idle=0.0, backpressure=0.0) as dev, \
            TraceRecorder(dev, path) as rec:
        drv = Driver(rec, kv_heads=heads, iters=4, seed=seed)
        drv.prefill(data["k"][:, :tokens], data["v"][:, :tokens])
        drv.step(data["q"], data["k"][:, tokens], data["v"][:, tokens])
        cmds, _expected, rejected = build_stream(g, seed, 300 if num.centroids <= 16 else 60)
        rec.execute(0, isa.reset())
        for cmd in cmds:
            rec.execute(0, cmd)
    return rejected


@pytest.mark.parametrize(("num", "banks", "lanes"), RTL_CASES)
def test_model_cycles_match_rtl(tmp_path, num: Numerics, banks: int, lanes: int) -> None:
    """Every command's model unit cycles (trace_timing) equal the cycles the RTL recorded.

    Exact for every command (tolerance 0). The unit costs come from sw/configs/hbm3.json with
    encoder_lanes set to the RTL's.
    """
    path = tmp_path / "rtl.jsonl"
    rejected = record_rtl_trace(path, num, banks, lanes, seed=11)
    hw = HW.replace(units={**HW.units, "aqpim": {**HW.units["aqpim"], "encoder_lanes": lanes}})
    tt = trace_timing(path, hw)
    assert rejected > 0
    assert all(t.recorded is not None for t in tt)
    bad = [(t.index, t.opcode, t.tokens, t.unit_cycles, t.recorded) for t in tt
           if any(r != t.unit_cycles for r in t.recorded)]
    assert not bad, f"model != RTL cycles (index, opcode, tokens, model, RTL): {bad[:10]}"
    seen = {t.opcode for t in tt}
    assert {"LOAD_CB", "WRITE_KV", "LOAD_LUT", "SCORE", "AGGREGATE", "READ_PARTIAL",
            "READ_STATUS", "READ_CODES", "READ_CB", "READ_LUT", "RESET"} <= seen
    steps = [t for t in tt if t.opcode in ("SCORE", "AGGREGATE") and t.tokens > 0]
    assert steps, "no SCORE / AGGREGATE over stored tokens"


# ----------------------------------------------------------------------------------------------
# AQPIM systems from the built unit (issue 15): Numerics + G, GQA as built, RTL latencies
# ----------------------------------------------------------------------------------------------
def test_pq_systems_take_every_size_from_numerics() -> None:
    """Bits and columns per token, LUT beats, value MAC and codebooks per side come from the
    system's Numerics / Geometry: keys d8 + values d4 (1.5 bits), d2 K256 (two columns per
    token), and the demo's shape finds its named system."""
    m = MODELS["llama2-7b"]
    w15 = spec_workload(get_spec("aqpim-1.5b"), m, HW, 1, 4096)
    assert (w15.key_bits_per_token, w15.value_bits_per_token) == (16 * 8, 32 * 8)
    assert get_spec("aqpim-1.5b").bits_per_element(HW, 128) == 1.5
    # key LUT: M_k x K_k 16-bit entries, 256 bits a beat; one LUT per query head of the pass
    assert w15.query_beats_per_pass == 1 + 16 * 256 * 16 // 256
    w4 = spec_workload(get_spec("aqpim-4b"), m, HW, 1, 4096)
    # 512 bits per token: two columns per side per token, one column per cycle on AGGREGATE
    assert (w4.write_columns_per_job, w4.value_spacing) == (4, 1)
    u = HW.units["aqpim"]
    assert w4.pass_cycles == 256 * u["value_mac_cycles_per_centroid"] + u["value_mac_latency"]
    w16 = spec_workload(get_spec("aqpim-2b-d2k16"), m, HW, 1, 4096)
    assert w16.pass_cycles == 16 * u["value_mac_cycles_per_centroid"] + u["value_mac_latency"]
    # codebooks in the capacity: every bank piece holds K x D W-bit centroids per side
    r = evaluate("aqpim-1.5b", m, GPU, HW, 4096, 1)
    full = AQPIM_WINDOW
    tok = (128 + 256) // 8
    jobs = m.layers * m.kv_heads
    codebooks = r.kv_bytes - jobs * (4096 - full) * tok - jobs * full * m.kv_token_bytes()
    assert codebooks == m.layers * HW.banks * (256 + 256) * m.head_dim
    assert system_for(Numerics()) == "aqpim-2b-d2k16"
    assert system_for(Numerics(subspaces=32, centroids=256)) == "aqpim-2b"
    assert system_for(Numerics(subspaces=16, centroids=256, value_subspaces=32,
                               value_centroids=256)) == "aqpim-1.5b"
    assert system_for(Numerics(head_dim=32, subspaces=8, centroids=4)) is None
    # the perplexity sweep's keys d8 + values d4 setting is modelled as itself
    spec = eq.spec_for({"name": "kv", "kind": "pq", "key": {"d": 8, "K": 256},
                        "value": {"d": 4, "K": 256}})
    assert spec.numerics == get_spec("aqpim-1.5b").numerics


AQPIM_WINDOW = 4 + 64  # sinks + recent window kept in FP16 on the GPU (systems.AQPIM_DEFAULTS)


def test_gqa_as_built() -> None:
    """G = the group (<= 8) LUTs per pass: SCORE 1 cycle per key column whatever G, the codes
    read once per pass, AGGREGATE + (G - 1)(K_v + 3), ceil(group / G) passes; the host uploads
    every query head's LUT; G = 1 re-reads the codes per query head."""
    u = HW.units["aqpim"]
    mac = 256 * u["value_mac_cycles_per_centroid"] + u["value_mac_latency"]
    for name, g in (("llama3-8b", 4), ("llama2-70b", 8)):
        m = MODELS[name]
        assert pq_queries(get_spec("aqpim-2b"), m, HW) == g
        w = spec_workload(get_spec("aqpim-2b"), m, HW, 1, 8192)
        w1 = spec_workload(get_spec("aqpim-2b-g1"), m, HW, 1, 8192)
        assert (w.passes, w.queries_per_pass, w1.passes) == (1, g, m.group)
        assert w.key_spacing == w1.key_spacing == u["lut_accumulate_cycles_per_column"]
        assert w.pass_cycles == w1.pass_cycles + (g - 1) * mac
        assert w.lut_load_cycles == g * w1.lut_load_cycles
        lut = 32 * 256 * 16 // 8  # M_k K_k L bits: 16 KB per query head
        assert w.link_down_bytes_per_job == m.group * lut + 2 * m.head_dim * 2
        r, r1 = (evaluate(s, m, GPU, HW, 8192, 1) for s in ("aqpim-2b", "aqpim-2b-g1"))
        assert r1.streamed_bytes == m.group * r.streamed_bytes
    # a bank built with fewer LUTs: Llama-2-70B's 8 query heads in two passes of 4
    cap4 = HW.replace(units={**HW.units, "aqpim": {**u, "query_heads_per_pass": 4}})
    w = spec_workload(get_spec("aqpim-2b"), MODELS["llama2-70b"], cap4, 1, 8192)
    assert (w.passes, w.queries_per_pass) == (2, 4)
    # the value MAC's read-outs stop every pass's stream: counted per pass and round
    plan = plan_channel(HW, w)
    assert plan.tail_cycles == w.tail_cycles + plan.rounds * w.passes * w.pass_cycles


# the RTL classes are built only for their properties, never elaborated
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_unit_latencies_equal_the_rtl_classes() -> None:
    """The config's unit numbers are the RTL classes' documented properties (hw/ imported
    here only, not in sw/perf): a change in the RTL fails this test."""
    from aqpim.hw.encoder import PQEncoder
    from aqpim.hw.lut_accumulate import LUTAccumulate
    from aqpim.hw.merge import Merge
    from aqpim.hw.softmax import Softmax
    from aqpim.hw.value_mac import ValueMAC

    from aqpim.geometry import COLUMN_BITS, MAX_QUERIES
    from aqpim.isa import PARTIAL_WORD_BITS

    u = HW.units["aqpim"]
    num = Numerics()  # D = 128, M = 64: the configuration the config's latencies are quoted at
    assert u["lut_accumulate_latency"] == LUTAccumulate(numerics=num).latency == 7
    # softmax, then the histogram's first read-out beat 3 cycles after the last token
    # (hw/histogram.py: "first beat valid 3 cycles after last")
    assert u["softmax_histogram_latency"] == Softmax(numerics=num).latency + 3
    assert u["value_mac_latency"] == ValueMAC(numerics=num).latency
    merge = Merge(numerics=num)
    assert u["merge_unit"]["latency"] == merge.latency
    assert u["merge_unit"]["partial_word_bytes"] * 8 == PARTIAL_WORD_BITS
    assert merge.lanes * PARTIAL_WORD_BITS == COLUMN_BITS  # one 32 B beat per cycle in
    enc = PQEncoder()
    assert (u["encoder_lanes"], u["encoder_argmin_stage_levels"]) == (
        enc.lanes, enc.argmin_stage_levels)
    assert u["encoder_distance_pipelined"] == (enc.distance_latency > 0)
    assert u["query_heads_per_pass"] == MAX_QUERIES
    assert LUTAccumulate(numerics=num, queries=MAX_QUERIES).queries == MAX_QUERIES


def test_value_mac_pass_is_named_as_the_limit() -> None:
    """Issue 14's 16-lane value MAC: G (K_v D / 16 + 4) cycles per pass (2,052 per query head at
    K_v = 256, D = 128) land in ``pim_unit_tail``, and regime (a)'s "limited by" names that bucket
    for Llama-3-8B at batch 1; with 128 lanes (K_v + 4 per head) the LUT load is the limit again.
    """
    import copy

    m = MODELS["llama3-8b"]
    rows = {}
    for lanes in (16, 128):
        units = copy.deepcopy(HW.units)
        units["aqpim"]["value_mac_lanes"] = lanes
        hw = HW.replace(units=units)
        w = spec_workload(get_spec("aqpim-2b"), m, hw, 1, 16384)
        assert w.pass_cycles == 4 * (256 * 128 // lanes + 4)  # G = 4 heads per pass
        res = [evaluate(s, m, GPU, hw, 16384, 1) for s in ("fp16-pim", "aqpim-2b")]
        rows[lanes] = cli.summarise(res)["regime_a"][0]
    assert rows[16]["limited_by"] == "pim_unit_tail"
    assert rows[128]["limited_by"] == "pim_query_load"
    assert rows[16]["share_of_bound"] < rows[128]["share_of_bound"]


def test_markdown_tables_come_from_the_report(tmp_path, capsys) -> None:
    """``--markdown FILE`` writes docs/perf.md's tables from the same report as ``--json``."""
    from aqpim.sw.perf import markdown as md

    out = tmp_path / "t.md"
    assert cli.main(["--model", "llama3-8b", "--contexts", "16K,128K", "--batches", "1,16",
                     "--eq-contexts", "128K", "--eq-batches", "1", "--json", "--no-plots",
                     "--markdown", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out)
    text = out.read_text()
    assert text == md.report_markdown(rep)
    a = next(r for r in rep["regime_a"] if (r["batch"], r["context"]) == (1, 16384))
    row = next(line for line in text.splitlines() if line.startswith("| Llama-3-8B | 16K |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == f"{a['attention_speedup']:.2f}x"
    assert cells[6] == f"{a['share_of_bound']:.0%}"
    assert cells[7] == md.LIMIT_NAMES[a["limited_by"]]
    # every crossing row and equal-accuracy row is there
    assert text.count("| Llama-3-8B | 1 | ") >= 1
    assert len([line for line in text.splitlines() if line.startswith("| 1.0")]) == \
        len({(r["level"], r["context"], r["batch"]) for r in rep["equal_accuracy"]["rows"]})
    with pytest.raises(ValueError, match="'regime_a'"):
        md.regime_a_table({"results": []})
