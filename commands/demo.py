"""``aqpim demo``: PQ-attention decode steps through the driver on the RTL and the golden model.

Default (the main job, :func:`run_rtl`): synthetic LLM-like K/V/Q (:mod:`aqpim.sw.golden.synthetic`)
for 2 KV heads x 1024 tokens, D = 128, M = 64, K = 16 (2 bits per element, d = 2) over 4
banks, the issue's example (its 4-bank Verilator build took 141 s on 2 busy cores; built once
into ``build/sim``, then reused). The
host driver (:class:`aqpim.sw.host.driver.Driver`) runs prefill and a few decode steps on the RTL
bank array under cocotb + Verilator (:class:`aqpim.sim.rtl_device.RtlDevice`, built once per
configuration into ``build/sim``) and, command for command, on the golden device; each step's
outputs must be equal bit for bit. The driver keeps ``--sinks`` (4) leading tokens and a
``--recent`` (32) window of each head on the host in FP16 and merges them with the banks'
partials. Printed per step: mismatches, bank cycles, the error against exact attention and
against float PQ with the same codebooks and the same sinks and window, and (golden device) the
error of the same driver without sinks and window. Then a performance estimate from
:mod:`aqpim.sw.perf`: the recorded command trace timed on HBM3-PIM, and the model's decode
attention time of this shape for AQPIM, FP16 PIM (AttAcc-style) and the GPU.

``--golden-only`` (the fast path, :func:`run_golden`): H heads x T tokens through
:func:`aqpim.sw.golden.reference.int_attention` (codebooks trained on the compressed tokens,
per-bank
integer partials, host merge with full-precision sinks and recent window). Each head's output is
compared with exact attention and with the float PQ reference that uses the same float
codebooks, so the two error sources are seen apart: PQ itself (float PQ vs exact) and the
integer contract (integer vs float PQ).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from aqpim.sw.golden import reference, synthetic

from aqpim.geometry import COLUMN_BITS, Geometry
from aqpim.numerics import Numerics

if TYPE_CHECKING:
    from aqpim.commands.console import Console
    from aqpim.sw.perf.hbm3 import HBM3Config

__all__ = ["DemoConfig", "RtlDemoConfig", "compare", "load_config", "rtl_config", "run_golden",
           "run_rtl", "main"]


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the demo's decode step (defaults: 2 bits per element)."""

    heads: int = 4
    tokens: int = 2048
    head_dim: int = 128
    subspaces: int = 64
    centroids: int = 16
    banks: int = 4
    sinks: int = 4
    recent: int = 32
    layout: str = "round-robin"
    iters: int = 25
    seed: int = 0

    def numerics(self) -> Numerics:
        """The contract's parameters for this configuration (validates M, K, D)."""
        return Numerics(head_dim=self.head_dim, subspaces=self.subspaces, centroids=self.centroids)


def compare(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Relative L2 error ``|out - ref| / |ref|`` and cosine similarity of two vectors."""
    diff = float(np.linalg.norm(out - ref))
    nref = float(np.linalg.norm(ref))
    cos = float(out @ ref / (np.linalg.norm(out) * nref)) if nref and np.any(out) else 0.0
    return {"rel_err": diff / nref if nref else diff, "cosine": cos}


def _storage(cfg: DemoConfig, num: Numerics) -> dict[str, float]:
    """Bits per element and compression against an FP16 KV cache, codes only and all in."""
    full, comp = reference.split_tokens(cfg.tokens, cfg.sinks, cfg.recent)
    fp16 = 2 * cfg.tokens * cfg.head_dim * 16  # K and V
    codes = 2 * comp.size * num.subspaces * num.code_bits
    books = 2 * num.subspaces * num.centroids * num.sub_dim * num.elem_bits
    kept = 2 * full.size * cfg.head_dim * 16
    return {
        "bits_per_element": num.bits_per_element,
        "compression_codes": 16.0 / num.bits_per_element,
        "compression_total": fp16 / (codes + books + kept),
    }


def run_golden(config: DemoConfig) -> dict[str, object]:
    """Run the decode step on the integer golden model; errors per head and their means.

    Returns a JSON-ready dict: ``config``, ``storage`` (bits/element, compression),
    ``heads`` (per head: ``int_vs_exact``, ``int_vs_pq``, ``pq_vs_exact``, each rel_err and
    cosine), ``mean`` (the same, averaged over heads) and ``seconds``; plus ``outputs``
    (H, D) float64 arrays under the keys ``int``, ``pq``, ``exact`` (not JSON; dropped by
    :func:`main`).
    """
    if not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig, got {type(config).__name__}")
    num = config.numerics()
    start = time.perf_counter()
    data = synthetic.generate(
        heads=config.heads, tokens=config.tokens, head_dim=config.head_dim, seed=config.seed
    )
    heads = []
    outs: dict[str, list[np.ndarray]] = {"int": [], "pq": [], "exact": []}
    for h in range(config.heads):
        q, k, v = data["q"][h], data["k"][h], data["v"][h]
        res = reference.int_attention(
            q, k, v, subspaces=config.subspaces, centroids=config.centroids, banks=config.banks,
            sinks=config.sinks, recent=config.recent, layout=config.layout, iters=config.iters,
            seed=config.seed + 2 * h,
        )
        pq_out = reference.pq_attention(
            q, k, v, res.key_codebooks, res.value_codebooks, sinks=config.sinks,
            recent=config.recent,
        )
        exact = reference.exact_attention(q, k, v)
        heads.append({
            "int_vs_exact": compare(res.out, exact),
            "int_vs_pq": compare(res.out, pq_out),
            "pq_vs_exact": compare(pq_out, exact),
        })
        for key, val in (("int", res.out), ("pq", pq_out), ("exact", exact)):
            outs[key].append(val)
    mean = {
        pair: {m: float(np.mean([hd[pair][m] for hd in heads])) for m in ("rel_err", "cosine")}
        for pair in heads[0]
    }
    return {
        "config": asdict(config),
        "storage": _storage(config, num),
        "heads": heads,
        "mean": mean,
        "seconds": time.perf_counter() - start,
        "outputs": {key: np.stack(val) for key, val in outs.items()},
    }



# ----------------------------------------------------------------------------------------------
# the main job: the driver on the RTL bank array and on the golden device
# ----------------------------------------------------------------------------------------------
CAPACITY_ROUND = 64  # token capacity rounds up to this, so nearby configs share one RTL build


@dataclass(frozen=True)
class RtlDemoConfig:
    """Parameters of the RTL demo: prefill, then ``steps`` decode steps on both devices.

    ``sinks`` and ``recent`` are the driver's host-kept FP16 tokens per head (first and last).

    ``capacity`` is the token capacity of each RTL bank (0: just enough for the prompt and
    the steps, rounded up to a multiple of 64). Default: the issue's 2 KV heads, D = 128,
    M = 64, K = 16, 1024 tokens over 4 banks (docs/driver.md has the measured build and run
    times). A configuration is built once, into ``build/sim``. ``subspaces`` / ``centroids``
    are the keys' (M_k, K_k); ``value_subspaces`` / ``value_centroids`` the values' (0: the
    keys'); ``lanes`` the encoder's distance lanes (0: min(K, 16)); ``slots`` the head slots
    of each bank (1..8): the driver places the ``heads`` KV heads over banks x slots, so
    ``heads`` must divide ``banks * slots``.
    """

    heads: int = 2
    tokens: int = 1024
    steps: int = 2
    head_dim: int = 128
    subspaces: int = 64
    centroids: int = 16
    banks: int = 4
    capacity: int = 0
    iters: int = 8
    seed: int = 0
    sinks: int = 4
    recent: int = 32
    value_subspaces: int = 0
    value_centroids: int = 0
    lanes: int = 0
    slots: int = 1

    def __post_init__(self) -> None:
        for name in ("heads", "tokens", "steps", "head_dim", "subspaces", "centroids", "banks",
                     "capacity", "iters", "seed", "sinks", "recent", "value_subspaces",
                     "value_centroids", "lanes", "slots"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
            low = 0 if name in ("steps", "capacity", "iters", "seed", "sinks", "recent",
                                "value_subspaces", "value_centroids", "lanes") else 1
            if v < low:
                raise ValueError(f"{name} must be >= {low}, got {v}")
        if not 1 <= self.banks <= 16:
            raise ValueError(f"banks must be in [1, 16] for the RTL array, got {self.banks}")
        if not 1 <= self.slots <= 8:
            raise ValueError(f"slots must be in [1, 8] (the ISA's head field), got {self.slots}")
        places = self.banks * self.slots
        if self.heads > places or places % self.heads:
            # each head owns banks x slots / heads (bank, slot) places (driver.head_places)
            raise ValueError(f"heads {self.heads} must divide banks x slots = {self.banks} x "
                             f"{self.slots}")
        need = self.per_bank_tokens
        if self.capacity and self.capacity < need:
            raise ValueError(f"capacity {self.capacity} < {need} tokens per head slot "
                             f"({self.tokens} + {self.steps} per head over "
                             f"{places // self.heads} places)")

    @property
    def per_bank_tokens(self) -> int:
        """Most tokens one head slot of a bank holds after the last step (round-robin
        placement), counting the host-kept ones too (an upper bound that keeps the RTL build
        independent of them)."""
        return -(-(self.tokens + self.steps) * self.heads // (self.banks * self.slots))

    def numerics(self) -> Numerics:
        """The contract's parameters, with the banks' token capacity."""
        cap = self.capacity or -(-self.per_bank_tokens // CAPACITY_ROUND) * CAPACITY_ROUND
        return Numerics(head_dim=self.head_dim, subspaces=self.subspaces,
                        centroids=self.centroids, token_capacity=cap,
                        value_subspaces=self.value_subspaces or None,
                        value_centroids=self.value_centroids or None)

    @property
    def encoder_lanes(self) -> int:
        """The encoder's distance lanes: ``lanes``, or min(K, 16) (K = 256 at 256 lanes makes
        a very large Verilator build for no gain in a demo)."""
        return self.lanes or min(self.centroids, 16)


# --accurate: keys and values d = 4, K = 256 (2 bits per element; SmolLM2's accurate setting,
# docs/llm.md), at the configuration's D
ACCURATE = {"sub_dim": 4, "centroids": 256}
# --config FILE: the short names the issue uses, beside RtlDemoConfig's own field names
CONFIG_ALIASES = {"D": "head_dim", "M_k": "subspaces", "K_k": "centroids",
                  "M_v": "value_subspaces", "K_v": "value_centroids"}


def load_config(path: str | Path) -> dict[str, int]:
    """RtlDemoConfig fields from a JSON object (field names or D, M_k, K_k, M_v, K_v).

    Raises ValueError naming the file and the bad key or value.
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"--config {path}: expected a JSON object, got {type(raw).__name__}")
    fields = set(asdict(RtlDemoConfig()))
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = CONFIG_ALIASES.get(key, key)
        if name not in fields:
            raise ValueError(f"--config {path}: unknown key {key!r}; expected one of "
                             f"{sorted(fields | set(CONFIG_ALIASES))}")
        out[name] = value
    return out


def _same_banks(cfg: RtlDemoConfig, hw: HBM3Config, context: int) -> dict[str, object]:
    """FP16 PIM and GPU time for the same attention: the FP16 K and V of the busiest bank
    streamed in all-bank mode at nCCD_AB (AttAcc: 16 MACs per column command keep pace),
    plus its score round trip (FP16 scores out, softmax weights back over the bus); the GPU
    reading the whole FP16 cache at 0.85 of its HBM bandwidth."""
    from aqpim.sw.perf.hbm3 import ChannelTimer, Segment, stream_all_bank
    from aqpim.sw.perf.systems import GPUConfig

    per_bank = -(-context * cfg.heads // cfg.banks)
    col_bytes = hw.org["column_bytes"]
    cols = -(-per_bank * cfg.head_dim * 2 // col_bytes)  # FP16 K (and again V) per bank
    stream = stream_all_bank(ChannelTimer(hw), [Segment(cols), Segment(cols)]).cycles
    roundtrip = 2 * -(-per_bank * 2 // col_bytes) * hw.timing["nBL"]
    gpu = GPUConfig.load("h100")
    fp16_bytes = 2 * cfg.heads * context * cfg.head_dim * 2
    return {"fp16_pim_tck": stream + roundtrip,
            "fp16_pim_seconds": (stream + roundtrip) * hw.tck_ns * 1e-9,
            "gpu_seconds": gpu.read_seconds(fp16_bytes, 1), "gpu": gpu.name}


def _model_estimate(cfg: RtlDemoConfig, num: Numerics, context: int) -> dict[str, object]:
    """Decode attention of this shape (1 layer, ``heads`` KV heads) per system, from the model."""
    from dataclasses import replace

    from aqpim.sw.perf.hbm3 import HBM3Config
    from aqpim.sw.perf.systems import GPUConfig, ModelConfig, evaluate, get_spec, system_for

    model = ModelConfig(name="demo step", layers=1, heads=cfg.heads, kv_heads=cfg.heads,
                        head_dim=cfg.head_dim, hidden=cfg.heads * cfg.head_dim,
                        intermediate=cfg.heads * cfg.head_dim, vocab=1)
    system = system_for(num)
    if system is None:
        return {"note": f"no named AQPIM system of the whole-device model has this shape (D = "
                        f"{num.head_dim}, keys M = {num.subspaces} K = {num.centroids}, values "
                        f"M = {num.values.subspaces} K = {num.values.centroids}); the default "
                        "D = 128, d = 2, K = 16 has (aqpim-2b-d2k16)"}
    hw, gpu = HBM3Config.load(), GPUConfig.load("h100")
    out: dict[str, object] = {"hardware": f"{hw.name}, {hw.stacks} stacks", "gpu": gpu.name,
                              "context": context, "attention_seconds": {}}
    for s in (system, "fp16-pim", "gpu"):
        out["attention_seconds"][s] = evaluate(s, model, gpu, hw, context, 1).attention_seconds
    # The GPU-PIM link of the whole step (LUTs and new K/V down, partials up), with the
    # buffer-die merge unit (one partial per channel and query head) and without it.
    spec = get_spec(system)
    out["link_bytes"] = {
        "merge": evaluate(spec, model, gpu, hw, context, 1).link_bytes,
        "no_merge": evaluate(replace(spec, merge=False), model, gpu, hw, context, 1).link_bytes,
    }
    return out


def _demo_link(cfg: RtlDemoConfig, geom: Geometry) -> dict[str, int]:
    """Partial bytes leaving the demo's banks per step: one READ_PARTIAL per bank holding a
    head, or, with the buffer-die merge unit, one per head (the demo's banks share a channel)."""
    per_partial = geom.partial_beats * COLUMN_BITS // 8
    banks_per_head = cfg.banks * cfg.slots // cfg.heads  # (bank, slot) places
    return {"partial_bytes": per_partial,
            "no_merge": cfg.heads * banks_per_head * per_partial,
            "merge": cfg.heads * per_partial}


def run_rtl(config: RtlDemoConfig, *, trace: str | Path | None = None,
            console: Console | None = None) -> dict[str, object]:
    """Prefill and decode steps through the driver on the RTL bank array and the golden device.

    Parameters
    ----------
    config:
        The configuration (:class:`RtlDemoConfig`).
    trace:
        Where to keep the RTL command trace (:mod:`aqpim.sw.host.trace` format, cycles included);
        default a temporary file.
    console:
        Where the stage lines go (Verilog, build, start, prefill, each step); None: silent.

    Returns
    -------
    dict
        JSON-ready: ``config``, ``numerics``, ``seconds`` (build, prefill, steps), ``prefill``
        (commands, bank cycles), ``steps`` (per step: tokens, ``mismatched_elements``,
        ``bit_exact``, commands, ``bank_cycles`` per bank, ``rtl_vs_exact``, ``rtl_vs_pq``,
        ``pq_vs_exact``, ``no_window_vs_exact`` (golden driver without sinks and window) as
        rel_err/cosine), ``bit_exact``, ``perf`` (trace timing per step,
        model estimate).

    Raises
    ------
    TypeError, ValueError
        On a bad configuration, before anything is built.
    """
    import tempfile

    from aqpim.sim.rtl_device import RtlDevice
    from aqpim.sim.session import PairedDecode
    from aqpim.sw.host.driver import Driver
    from aqpim.sw.host.golden_device import GoldenDevice
    from aqpim.sw.host.trace import TraceRecorder
    from aqpim.sw.perf.hbm3 import HBM3Config, trace_timing

    if not isinstance(config, RtlDemoConfig):
        raise TypeError(f"config must be an RtlDemoConfig, got {type(config).__name__}")
    num = config.numerics()
    geom = Geometry(num, heads=config.slots)
    kmax = max(num.centroids, num.values.centroids)
    if config.tokens < kmax:
        raise ValueError(f"tokens {config.tokens} < K = {kmax} (k-means needs K points)")

    def say(msg: str) -> None:
        if console is not None:
            console.say(msg)

    t_all = config.tokens + config.steps
    data = synthetic.generate(heads=config.heads, tokens=t_all, head_dim=config.head_dim,
                              seed=config.seed)
    q, k, v = data["q"], data["k"], data["v"]
    tmp = None
    if trace is None:
        tmp = tempfile.TemporaryDirectory(prefix="aqpim-demo-")
        trace = Path(tmp.name) / "trace.jsonl"
    trace = Path(trace)
    seconds: dict[str, float] = {}
    steps: list[dict[str, object]] = []
    win = {"sinks": config.sinks, "recent": config.recent}
    try:
        say(f"RTL bank array: {config.banks} banks, D={num.head_dim}, keys M={num.subspaces} "
            f"K={num.centroids}, values M={num.values.subspaces} K={num.values.centroids}, "
            f"capacity {num.token_capacity} tokens per bank")
        t0 = time.perf_counter()
        # No idle cycles or back-pressure: the recorded cycles are the bank's own latency
        # (the co-simulation tests randomise both).
        with RtlDevice(geom, config.banks, seed=config.seed, idle=0.0, backpressure=0.0,
                       lanes=config.encoder_lanes,
                       on_stage=console.stage if console else None) as rtl:
            seconds["build_and_start"] = time.perf_counter() - t0
            with TraceRecorder(rtl, trace) as rec:
                run = PairedDecode(rec, kv_heads=config.heads, iters=config.iters,
                                   seed=config.seed, **win)
                # the same driver without sinks and window, on a golden device: the baseline
                plain = Driver(GoldenDevice(geom, config.banks), kv_heads=config.heads,
                               iters=config.iters, seed=config.seed)
                say(f"prefill: {config.heads} heads x {config.tokens} tokens, RTL and golden")
                t0 = time.perf_counter()
                run.prefill(k[:, :config.tokens], v[:, :config.tokens])
                plain.prefill(k[:, :config.tokens], v[:, :config.tokens])
                seconds["prefill"] = time.perf_counter() - t0
                # the driver's float codebooks, for the float-PQ reference of each step
                fcb = [(hs.key_codebook_float, hs.value_codebook_float)
                       for hs in run.golden.heads]
                prefill = {"commands": len(run.log.records), "bank_cycles": run.log.bank_cycles()}
                marks = [len(run.log.records)]
                t0 = time.perf_counter()
                for s in range(config.steps):
                    t = config.tokens + s
                    # each step a slightly different query, as consecutive decode steps
                    qs = q + 0.05 * s * np.roll(q, 1, axis=1)
                    st = run.step(qs, k[:, t], v[:, t])
                    out_r, diff = st.out, st.mismatched_elements
                    out_p = plain.step(qs, k[:, t], v[:, t])
                    marks.append(len(run.log.records))
                    row: dict[str, object] = {
                        "tokens": st.tokens, "mismatched_elements": diff,
                        "bit_exact": st.bit_exact, "commands": st.commands,
                        "bank_cycles": st.bank_cycles,
                    }
                    pairs: dict[str, list[dict[str, float]]] = {
                        "rtl_vs_exact": [], "rtl_vs_pq": [], "pq_vs_exact": [],
                        "no_window_vs_exact": []}
                    for h in range(config.heads):
                        kk, vv = k[h, :t + 1], v[h, :t + 1]
                        exact = reference.exact_attention(qs[h], kk, vv)
                        fpq = reference.pq_attention(qs[h], kk, vv, *fcb[h], **win)
                        pairs["rtl_vs_exact"].append(compare(out_r[h], exact))
                        pairs["rtl_vs_pq"].append(compare(out_r[h], fpq))
                        pairs["pq_vs_exact"].append(compare(fpq, exact))
                        pairs["no_window_vs_exact"].append(compare(out_p[h], exact))
                    for name, vals in pairs.items():
                        row[name] = {m: float(np.mean([x[m] for x in vals]))
                                     for m in ("rel_err", "cosine")}
                    steps.append(row)
                    say(f"decode step {s}: {t + 1} tokens, "
                        f"{'bit-exact' if diff == 0 else 'MISMATCH'}, "
                        f"{max(row['bank_cycles'])} cycles on the busiest bank")
                seconds["steps"] = time.perf_counter() - t0
        # Performance: the recorded trace on HBM3-PIM timing (aqpim.sw.perf), step by step,
        # with the encoder lanes of the RTL that ran.
        hwcfg = HBM3Config.load()
        hwcfg = hwcfg.replace(units={**hwcfg.units, "aqpim": {
            **hwcfg.units["aqpim"], "encoder_lanes": config.encoder_lanes}})
        timing = trace_timing(trace, hwcfg)
        perf_steps = []
        for s in range(config.steps):
            ents = timing[marks[s]:marks[s + 1]]
            dram = [0] * config.banks
            unit = [0] * config.banks
            for e in ents:
                for b in range(config.banks) if e.bank is None else [e.bank]:
                    dram[b] += e.dram_cycles
                    unit[b] += e.unit_cycles
            perf_steps.append({
                "hbm3_tck": max(dram),
                "hbm3_seconds": max(dram) * hwcfg.tck_ns * 1e-9,
                "model_unit_cycles": max(unit),
                "rtl_cycles": max(steps[s]["bank_cycles"]),
            })
        perf = {"tck_ns": hwcfg.tck_ns, "trace_steps": perf_steps,
                "demo_link": _demo_link(config, geom),
                "same_banks": _same_banks(config, hwcfg, t_all),
                "model": _model_estimate(config, num, t_all)}
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "config": asdict(config),
        "numerics": {"head_dim": num.head_dim, "subspaces": num.subspaces,
                     "centroids": num.centroids, "value_subspaces": num.values.subspaces,
                     "value_centroids": num.values.centroids,
                     "token_capacity": num.token_capacity,
                     "bits_per_element": num.bits_per_element},
        "seconds": seconds,
        "prefill": prefill,
        "steps": steps,
        "bit_exact": all(st["bit_exact"] for st in steps),
        "perf": perf,
    }


def _us(sec: float) -> str:
    return f"{sec * 1e6:.2f} us"


def _rtl_report(res: dict[str, object]) -> str:
    c, n, sec = res["config"], res["numerics"], res["seconds"]
    lines = [
        "AQPIM demo: decode steps through the host driver on the RTL bank array "
        "(cocotb + Verilator) and on the golden device",
        f"config: {c['heads']} KV heads x {c['tokens']} tokens + {c['steps']} decode steps, "
        f"D={n['head_dim']}, keys M={n['subspaces']} K={n['centroids']}, values "
        f"M={n['value_subspaces']} K={n['value_centroids']} "
        f"({n['bits_per_element']:g} bits/element), {c['banks']} banks "
        f"(token capacity {n['token_capacity']} each), k-means {c['iters']} iterations, "
        f"seed {c['seed']}",
        f"host-kept FP16 tokens per head: {c['sinks']} sinks + a recent window of "
        f"{c['recent']} (never sent to the banks)",
        f"prefill: {res['prefill']['commands']} commands, "
        f"{max(res['prefill']['bank_cycles'])} cycles on the busiest bank",
        "",
        f"{'step':>4} {'tokens':>6} {'RTL==golden':>11} {'mism.':>5} {'cmds':>4} "
        f"{'cycles':>7}  {'RTL vs exact':>17}  {'RTL vs float PQ':>17}  {'PQ vs exact':>17}"
        f"  {'no sinks/window':>17}",
        f"{'':>4} {'':>6} {'':>11} {'':>5} {'':>4} {'':>7}  "
        + "  ".join(f"{'rel err':>8} {'cosine':>8}" for _ in range(4)),
    ]
    for i, st in enumerate(res["steps"]):
        errs = "  ".join(f"{st[p]['rel_err']:>8.4f} {st[p]['cosine']:>8.5f}"
                         for p in ("rtl_vs_exact", "rtl_vs_pq", "pq_vs_exact",
                                   "no_window_vs_exact"))
        lines.append(f"{i:>4} {st['tokens']:>6} {'yes' if st['bit_exact'] else 'NO':>11} "
                     f"{st['mismatched_elements']:>5} {st['commands']:>4} "
                     f"{max(st['bank_cycles']):>7}  {errs}")
    lines.append("float PQ: the same codebooks, sinks and window in float64; no sinks/window: "
                 "the same driver with every token in the banks (golden device) vs exact")
    lines.append("cycles: the busiest bank's clock cycles for the step's commands (the RTL "
                 "records each command from the edge its header is offered to the one its last "
                 "response word is taken)")
    p = res["perf"]
    ts, sb, m = p["trace_steps"], p["same_banks"], p["model"]
    aq = ts[-1]["hbm3_seconds"] if ts else float("nan")
    here = f"the demo: its {c['banks']} banks, the recorded last step"
    lines += ["", f"performance estimate: attention of one decode step, HBM3-PIM timing "
              f"(tCK {p['tck_ns']} ns), GPU {sb['gpu']} at 0.85 of its HBM bandwidth",
              f"  {'where':<48} {'AQPIM':>10} {'FP16-PIM':>10} {'GPU':>10}",
              f"  {here:<48} "
              f"{_us(aq):>10} {_us(sb['fp16_pim_seconds']):>10} {'-':>10}"]
    if "note" in m:
        lines.append(f"  whole device: {m['note']}")
    else:
        att = m["attention_seconds"]
        name = next(s for s in att if s.startswith("aqpim"))
        where = f"the same tokens, whole device ({m['hardware'].split(', ')[-1]})"
        lines.append(f"  {where:<48} {_us(att[name]):>10} {_us(att['fp16-pim']):>10} "
                     f"{_us(att['gpu']):>10}")
    lines.append(f"  row 1: the driver's commands timed on {c['banks']} banks (FP16-PIM: the "
                 "same K/V in FP16 on those banks); row 2: the")
    lines.append("  tokens spread over every bank of the device, where fixed costs dominate. "
                 "`aqpim bench perf` sweeps models.")
    dl = p["demo_link"]
    link = (f"  partials leaving the banks per step: {dl['no_merge']} B (one READ_PARTIAL of "
            f"{dl['partial_bytes']} B per bank and head), {dl['merge']} B with the buffer-die "
            "merge unit")
    if "link_bytes" in m:
        link += (f"; whole-device GPU-PIM link: {m['link_bytes']['no_merge']} B, "
                 f"{m['link_bytes']['merge']} B with it")
    lines.append(link)
    lines.append("  unit cycles per step, model vs RTL: "
                 + ", ".join(f"{x['model_unit_cycles']} vs {x['rtl_cycles']}" for x in ts))
    lines.append("")
    lines.append(f"{'BIT-EXACT' if res['bit_exact'] else 'MISMATCH'}: RTL vs golden over "
                 f"{len(res['steps'])} steps; {sec.get('build_and_start', 0):.1f} s build + "
                 f"start, {sec.get('prefill', 0):.1f} s prefill, {sec.get('steps', 0):.1f} s "
                 "steps" + (f"; logs in {res['log']}" if res.get("log") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
GOLDEN_ONLY = ("layout",)
RTL_ONLY = ("steps", "capacity", "trace", "config", "accurate", "value_subspaces",
            "value_centroids", "lanes", "slots")


LOG = Path("build/logs/demo.log")


def _run_rtl_logged(cfg: RtlDemoConfig, trace: str | None, log: Path | None) -> dict[str, object]:
    """:func:`run_rtl` with stage lines on the terminal and child-process logs in ``log``."""
    from aqpim.commands.console import logged

    with logged("aqpim demo ", log) as console:
        res = run_rtl(cfg, trace=trace, console=console)
    res["log"] = None if log is None else str(log)
    return res


def rtl_config(given: dict[str, object]) -> RtlDemoConfig:
    """The RTL demo's configuration from the command line's options (``config``: a JSON file,
    ``accurate``: the d = 4, K = 256 preset); options given explicitly override both."""
    given = dict(given)
    base = load_config(given.pop("config")) if "config" in given else {}
    if given.pop("accurate", False):
        d = given.get("head_dim", base.get("head_dim", RtlDemoConfig.head_dim))
        base.update(subspaces=max(1, d // ACCURATE["sub_dim"]), centroids=ACCURATE["centroids"],
                    value_subspaces=0, value_centroids=0)
    return RtlDemoConfig(**{**base, **given})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aqpim demo", description=__doc__.splitlines()[0],
        epilog="Defaults differ by mode: RTL (default) "
               + ", ".join(f"{k}={v}" for k, v in asdict(RtlDemoConfig()).items())
               + "; --golden-only "
               + ", ".join(f"{k}={v}" for k, v in asdict(DemoConfig()).items()))
    p.add_argument("--golden-only", action="store_true",
                   help="fast path: the integer golden model only (no RTL build)")
    p.add_argument("--heads", type=int)
    p.add_argument("--tokens", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--subspaces", "-M", type=int)
    p.add_argument("--centroids", "-K", type=int)
    p.add_argument("--banks", type=int)
    p.add_argument("--iters", type=int, help="k-means iterations")
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int, help="decode steps (RTL mode)")
    p.add_argument("--capacity", type=int,
                   help="token capacity per RTL bank (0: enough, rounded up to 64)")
    p.add_argument("--trace", metavar="FILE.jsonl", help="keep the RTL command trace (RTL mode)")
    p.add_argument("--config", metavar="FILE.json",
                   help="RTL configuration as JSON (D, M_k, K_k, M_v, K_v, banks, tokens, ... or "
                        "the option names); options given on the command line override it")
    p.add_argument("--accurate", action="store_true",
                   help="keys and values d = 4, K = 256 (2 bits/element, the accurate setting "
                        "of docs/llm.md) at the configured D")
    p.add_argument("--value-subspaces", type=int, help="M_v (default: the keys' M)")
    p.add_argument("--value-centroids", type=int, help="K_v (default: the keys' K)")
    p.add_argument("--lanes", type=int, help="encoder lanes (default min(K, 16))")
    p.add_argument("--slots", type=int,
                   help="head slots per RTL bank (1..8; heads must divide banks x slots)")
    p.add_argument("--sinks", type=int, help="full-precision sink tokens per head (host, FP16)")
    p.add_argument("--recent", type=int,
                   help="full-precision recent window per head (host, FP16)")
    p.add_argument("--layout", choices=reference.LAYOUTS, help="token layout (--golden-only)")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON document on stdout, nothing else")
    p.add_argument("-v", "--verbose", action="store_true",
                   help=f"show the build and simulator logs instead of writing them to {LOG}")
    return p


def _report(res: dict[str, object]) -> str:
    cfg, st = res["config"], res["storage"]
    lines = [
        "AQPIM demo: one decode step of PQ attention through the integer golden model",
        "config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()),
        f"storage: {st['bits_per_element']:g} bits/element; compression vs FP16 "
        f"{st['compression_codes']:.1f}x (codes), {st['compression_total']:.2f}x (with "
        "codebooks, sinks and recent window)",
        "",
        f"{'head':>4}  {'int vs exact':>21}  {'int vs float PQ':>21}  {'float PQ vs exact':>21}",
        f"{'':>4}  " + "  ".join(f"{'rel err':>10} {'cosine':>10}" for _ in range(3)),
    ]
    pairs = ("int_vs_exact", "int_vs_pq", "pq_vs_exact")
    rows = [(str(i), hd) for i, hd in enumerate(res["heads"])] + [("mean", res["mean"])]
    for name, hd in rows:
        lines.append(
            f"{name:>4}  "
            + "  ".join(f"{hd[p]['rel_err']:>10.4f} {hd[p]['cosine']:>10.6f}" for p in pairs)
        )
    lines.append(f"\n{res['seconds']:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``aqpim demo``; returns the exit status (1: RTL != golden)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    given = {k: v for k, v in vars(args).items()
             if v is not None and v is not False and k not in ("json", "golden_only", "verbose")}
    try:
        if args.golden_only:
            bad = [k for k in RTL_ONLY if k in given]
            if bad:
                raise ValueError(f"--{bad[0]} applies to the RTL mode, not --golden-only")
            cfg = DemoConfig(**given)
            if cfg.heads < 1 or cfg.tokens < 1:
                raise ValueError(f"heads and tokens must be >= 1, got {cfg.heads}, {cfg.tokens}")
            res = run_golden(cfg)
        else:
            bad = [k for k in GOLDEN_ONLY if k in given]
            if bad:
                raise ValueError(f"--{bad[0]} needs --golden-only (the driver spreads "
                                 "tokens round-robin)")
            trace = given.pop("trace", None)
            cfg = rtl_config(given)
            cfg.numerics()  # a bad configuration is refused before anything is logged or built
            res = _run_rtl_logged(cfg, trace, None if args.verbose else LOG)
    except (TypeError, ValueError) as exc:
        print(f"aqpim demo: {exc}", file=sys.stderr)
        return 2
    if args.golden_only:
        res.pop("outputs")
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
    else:
        print(_report(res) if args.golden_only else _rtl_report(res))
    if not args.golden_only:
        return 0 if res["bit_exact"] else 1
    values = [v for hd in res["heads"] for p in hd.values() for v in p.values()]
    return 0 if all(math.isfinite(v) for v in values) else 1


if __name__ == "__main__":
    sys.exit(main())
