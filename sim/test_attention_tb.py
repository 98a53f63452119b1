# amaranth: UnusedElaboratable=no
"""cocotb testbench of the bank attention path (hw/attention.py) against the golden model.

Run through pytest (tests/test_attention.py), which builds one Verilator model per parameter
set with :func:`aqpim.sim.runner.build_and_run`. The hardware parameters are ``Numerics``
fields; the test parameters are

``cases``
    list of ``[kind, tokens]`` (kinds: :data:`aqpim.sim.attn_stimulus.KINDS`), run back to
    back on one DUT, each one pass pair: LUT + value codebook load, then key and value columns
    offered together (the value stream must wait for the end of pass 1 by itself);
``e2e``
    optional ``{"tokens", "banks", "seed"}``: a synthetic head through
    :func:`aqpim.sw.golden.reference.int_attention` (codebooks by k-means, quantized LUT), each
    bank's tokens through the DUT, the RTL partials merged by :func:`intmodel.host_merge`
    and compared bit for bit with the golden model's merge, and the error against exact float
    attention reported;
``idle``, ``backpressure``
    probabilities of random idle cycles on every input and backpressure on ``o_partial``;
``report``
    path of a JSON file that receives the measured throughput, latencies and errors.

Every partial is compared with :func:`aqpim.sw.golden.intmodel.bank_partial`. Throughput is measured
from the handshakes: over every interval between two transfers during which the source kept
``valid`` high (so only the unit could delay it), pass 1 must take one key column per cycle and
pass 2 one token per cycle (a column every ``max(ntok, 1)`` cycles).
"""

from __future__ import annotations

import json
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from amaranth.hdl import unsigned
from aqpim.hw.attention import partial_layout
from aqpim.hw.lut_accumulate import column_layout, lut_write_layout
from aqpim.hw.value_mac import codebook_write_layout
from aqpim.sim.attn_stimulus import (
    AttnCase,
    codebook_beats,
    column_beats,
    lut_beats,
    make_case,
)
from aqpim.sim.streams import unpack
from aqpim.sim.testbench import Testbench
from aqpim.sw.golden import intmodel
from cocotb.triggers import RisingEdge

from aqpim.geometry import Geometry
from aqpim.numerics import Numerics

_NUM_FIELDS = {f.name for f in dc_fields(Numerics) if f.init}


def numerics(p: dict[str, Any]) -> Numerics:
    """The Numerics of a hardware parameter dict (other keys, e.g. ``forwarding``, ignored)."""
    return Numerics(**{k: v for k, v in p.items() if k in _NUM_FIELDS})


class HandshakeLog:
    """Per stream, the cycles with ``valid`` high and whether ``ready`` was high too."""

    def __init__(self, dut: Any, names: list[str]) -> None:
        self.dut = dut
        self.names = names
        self.cycle = 0
        self.valid: dict[str, list[tuple[int, bool]]] = {n: [] for n in names}

    async def run(self) -> None:
        while True:
            await RisingEdge(self.dut.clk)
            self.cycle += 1
            for n in self.names:
                if int(getattr(self.dut, f"{n}__valid").value):
                    ready = bool(int(getattr(self.dut, f"{n}__ready").value))
                    self.valid[n].append((self.cycle, ready))

    def saturated_rate(self, name: str, work: list[int], start: int = 0) -> tuple[int, int]:
        """(work units, cycles) over intervals where the source held valid between transfers.

        ``work[i]`` is the work of the i-th transfer since ``start`` (1 for a column in
        pass 1, ``max(ntok, 1)`` tokens in pass 2); the interval after transfer i counts it.
        """
        log = [(c, r) for c, r in self.valid[name] if c >= start]
        fires = [c for c, r in log if r]
        valid_cycles = {c for c, _ in log}
        units = cycles = 0
        for i in range(1, len(fires)):
            c0, c1 = fires[i - 1], fires[i]
            if all(c in valid_cycles for c in range(c0 + 1, c1 + 1)):
                units += work[i - 1]
                cycles += c1 - c0
        return units, cycles


class AttentionTB(Testbench):
    """Drivers, sink and golden checks around one Attention DUT."""

    def __init__(self, dut: Any) -> None:
        super().__init__(dut)
        self.num = numerics(self.params)
        num = self.num
        idle = float(self.test_params.get("idle", 0.3))
        bp = float(self.test_params.get("backpressure", 0.3))
        self.l_lut = lut_write_layout(num)
        self.l_vcb = codebook_write_layout(num)
        self.l_col = column_layout(num)
        self.l_part = partial_layout(num)
        self.tpc = Geometry(num).tokens_per_column

        def raw(layout: Any) -> Any:  # beats are packed already: drive them as plain words
            return unsigned(layout.size)

        self.lut = self.source("i_lut", raw(self.l_lut), idle_prob=idle)
        self.vcb = self.source("i_vcb", raw(self.l_vcb), idle_prob=idle)
        self.key = self.source("i_key", raw(self.l_col), idle_prob=idle)
        self.val = self.source("i_val", raw(self.l_col), idle_prob=idle)
        self.out = self.sink("o_partial", raw(self.l_part), backpressure_prob=bp)
        self.hs = HandshakeLog(dut, ["i_key", "i_val"])
        cocotb.start_soon(self.hs.run())
        self.col_units = self.col_cycles = self.tok_units = self.tok_cycles = 0
        self.latencies: list[int] = []

    async def run_case(self, case: AttnCase) -> dict[str, Any]:
        """Load, run one pass pair, return the decoded partial (and check the throughput)."""
        num = self.num
        self.lut.send_all(lut_beats(self.l_lut, case.lut))
        self.vcb.send_all(codebook_beats(self.l_vcb, case.value_codebook))
        await self.lut.wait_idle()
        await self.vcb.wait_idle()
        start = self.hs.cycle + 1
        keys = column_beats(self.l_col, case.key_codes, num)
        vals = column_beats(self.l_col, case.value_codes, num)
        n_before = len(self.out.received)
        self.key.send_all(keys)
        self.val.send_all(vals)
        # the value MAC takes up to D cycles per bin (D / lanes, lanes >= 1)
        budget = 4 * (len(keys) + case.tokens + num.centroids * num.head_dim) + 2000
        await self.out.wait_for(n_before + 1, timeout_cycles=budget)
        got = unpack(self.l_part, self.out.received[n_before].raw)

        # Throughput where only the unit could hold the source back.
        u, c = self.hs.saturated_rate("i_key", [1] * len(keys), start)
        self.col_units += u
        self.col_cycles += c
        ntok = [max(1, int(unpack(self.l_col, w)["ntok"])) for w in vals]
        u, c = self.hs.saturated_rate("i_val", ntok, start)
        self.tok_units += u
        self.tok_cycles += c
        last_val = self.val.sent[-1].cycle
        self.latencies.append(self.out.received[n_before].cycle - last_val)
        return got

    def check_case(self, got: dict[str, Any], case: AttnCase) -> None:
        exp = case.expected
        want = (exp.max, exp.sum, case.tokens, 0, exp.out.tolist())
        have = (got["max"], got["sum"], got["tokens"], got["overflow"], got["out"])
        if have != want:
            bad = [i for i, (a, b) in enumerate(zip(have[4], want[4], strict=True)) if a != b]
            self.errors.append(
                f"{case.kind} T={case.tokens}: max/sum/tokens/overflow {have[:4]} vs "
                f"{want[:4]}; out differs at {len(bad)} elements (first {bad[:4]})"
            )
        self.checked += 1


def _e2e(tb: AttentionTB, spec: dict[str, Any]) -> tuple[list[AttnCase], Any, Any, Any]:
    """A synthetic head split over banks by the golden model's own end-to-end path."""
    from aqpim.sw.golden import reference, synthetic

    num = tb.num
    data = synthetic.generate(heads=1, tokens=int(spec["tokens"]), head_dim=num.head_dim,
                              seed=int(spec["seed"]))
    q, k, v = data["q"][0], data["k"][0], data["v"][0]
    ia = reference.int_attention(q, k, v, numerics=num, banks=int(spec["banks"]), sinks=0,
                                 recent=0, seed=int(spec["seed"]), iters=10)
    cases = []
    for idx, part in zip(ia.banks, ia.partials, strict=True):
        kc, vc = ia.key_codes[idx], ia.value_codes[idx]
        cases.append(AttnCase("e2e", ia.lut, ia.value_codebook_int, kc, vc, part))
    float_pq = reference.pq_attention(q, k, v, ia.key_codebooks, ia.value_codebooks)
    return cases, ia, reference.exact_attention(q, k, v), float_pq


@cocotb.test()
async def attention_cases(dut: Any) -> None:
    """Every case of ``cases`` (and the end-to-end head) bit-exact against the golden model."""
    tb = AttentionTB(dut)
    tb.start_clock()
    await tb.reset()
    rng = np.random.default_rng(tb.seed)
    report: dict[str, Any] = {"seed": tb.seed, "cases": []}
    for kind, tokens in tb.test_params.get("cases", []):
        case = make_case(kind, int(tokens), tb.num, rng)
        got = await tb.run_case(case)
        tb.check_case(got, case)
        report["cases"].append([kind, int(tokens)])

    spec = tb.test_params.get("e2e")
    if spec:
        cases, ia, exact, float_pq = _e2e(tb, spec)
        partials = []
        for case in cases:
            got = await tb.run_case(case)
            tb.check_case(got, case)
            partials.append(intmodel.BankPartial(max=got["max"], sum=got["sum"],
                                                 out=np.array(got["out"], dtype=np.int64)))
        merged = intmodel.host_merge(partials, ia.value_scales, tb.num)
        golden = intmodel.host_merge(ia.partials, ia.value_scales, tb.num)
        if not (np.array_equal(merged, golden) and np.array_equal(merged, ia.out)):
            tb.errors.append(f"end-to-end: RTL merge differs from golden by "
                             f"{np.max(np.abs(merged - golden))}")
        def rel(a: np.ndarray, b: np.ndarray) -> float:
            return float(np.linalg.norm(a - b) / np.linalg.norm(b))

        report["e2e"] = {
            "tokens": int(spec["tokens"]), "banks": int(spec["banks"]),
            # RTL (fixed point, merged) against exact float attention: PQ + fixed-point error
            "max_abs_err": float(np.max(np.abs(merged - exact))),
            "rel_l2_err": rel(merged, exact),
            "max_abs_exact": float(np.max(np.abs(exact))),
            # the split: float PQ attention (same codebooks) against exact is the PQ error,
            # the RTL against float PQ the fixed-point (and W-bit quantization) error
            "float_pq_rel_l2_err": rel(float_pq, exact),
            "rtl_vs_float_pq_rel_l2_err": rel(merged, float_pq),
        }
        dut._log.info(f"end-to-end vs exact float attention: {report['e2e']}")

    # One column per cycle in pass 1, one token per cycle in pass 2, when the source allows.
    col_rate = tb.col_units / tb.col_cycles if tb.col_cycles else None
    tok_rate = tb.tok_units / tb.tok_cycles if tb.tok_cycles else None
    report.update({
        "columns_per_cycle": col_rate, "column_intervals": tb.col_cycles,
        "tokens_per_cycle": tok_rate, "token_intervals": tb.tok_cycles,
        "latency_last_value_to_partial": tb.latencies,
    })
    dut._log.info(f"measured: {col_rate} columns/cycle over {tb.col_cycles} cycles, "
                  f"{tok_rate} tokens/cycle over {tb.tok_cycles} cycles")
    if tb.col_cycles and col_rate != 1.0:
        tb.errors.append(f"pass 1 took {col_rate} columns/cycle, expected 1")
    if tb.tok_cycles and tok_rate != 1.0:
        tb.errors.append(f"pass 2 took {tok_rate} tokens/cycle, expected 1")
    report["errors"] = list(tb.errors)
    if tb.test_params.get("report"):
        Path(tb.test_params["report"]).write_text(json.dumps(report, indent=1) + "\n")
    tb.assert_ok()
