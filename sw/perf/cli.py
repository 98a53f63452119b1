"""``aqpim bench perf``: sweep models x contexts x batches x systems; table, JSON and plots.

Examples::

    aqpim bench perf                               # 3 models x 6 contexts x 4 batches
    aqpim bench perf --json --no-plots             # one JSON document on stdout
    aqpim bench perf --model my.json --hw hw.json --gpu a100 --stacks 8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from aqpim.sw.perf.equal_accuracy import FAMILIES, LEVELS, PPL_FILE, choose, load_ppl
from aqpim.sw.perf.equal_accuracy import table as equal_accuracy_table
from aqpim.sw.perf.hbm3 import (
    ChannelTimer,
    HBM3Config,
    Segment,
    closed_form_cycles,
    simulate_decode,
    stream_all_bank,
    trace_timing,
)
from aqpim.sw.perf.markdown import report_markdown
from aqpim.sw.perf.systems import (
    BUILTIN_MODELS,
    DEFAULT_SYSTEMS,
    SYSTEM_SPECS,
    SYSTEMS,
    GPUConfig,
    ModelConfig,
    Result,
    evaluate,
    spec_workload,
)

__all__ = ["main", "sweep", "validation", "summarise", "crossings", "trace_report",
           "attacc_points", "BASELINE"]

BASELINE = "fp16-pim"  # the fair FP16 PIM baseline (GQA-aware, GPU HBM first, PIM per GPU)
NAIVE = "fp16-pim-naive"
OVERHEADS = ("pim_row_switch", "pim_refresh", "pim_query_load", "pim_bus", "pim_unit_tail",
             "pim_link", "pim_write")

DEFAULT_CONTEXTS = (4096, 8192, 16384, 32768, 65536, 131072)
DEFAULT_BATCHES = (1, 4, 16, 64)
PAPER_SPEEDUP = 3.4
PAPER_PCIE_SHARE = (0.90, 0.985)


def _int_list(text: str, what: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        mult = 1
        if part.endswith("k"):
            part, mult = part[:-1], 1024
        try:
            v = int(part) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: {part!r} is not an integer") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{what}: {v} must be >= 1")
        out.append(v)
    return out


def sweep(models: list[ModelConfig], gpu: GPUConfig, hw: HBM3Config, contexts: list[int],
          batches: list[int], systems: list[str]) -> list[Result]:
    """Every (model, batch, context, system) point, in that order."""
    return [
        evaluate(s, m, gpu, hw, t, b)
        for m in models for b in batches for t in contexts for s in systems
    ]


def validation(hw: HBM3Config, columns: int = 32 * 512) -> dict[str, Any]:
    """Steady-state all-bank stream against the closed-form bound, refresh off and on."""
    out: dict[str, Any] = {"columns_per_bank": columns}
    for refresh in (False, True):
        cfg = hw.replace(refresh=refresh)
        st = stream_all_bank(ChannelTimer(cfg), [Segment(columns)])
        base = closed_form_cycles(cfg, columns)
        with_ref = closed_form_cycles(cfg, columns, refresh=refresh)
        out["refresh_on" if refresh else "refresh_off"] = {
            "model_cycles": st.cycles,
            "bound_cycles": base,
            "bound_with_refresh_cycles": with_ref,
            "model_over_bound": st.cycles / base,
            "model_over_bound_with_refresh": st.cycles / with_ref,
            "refreshes": st.refreshes,
        }
    return out


def _get(results: list[Result], system: str, model: str, batch: int, ctx: int) -> Result | None:
    for r in results:
        if (r.system, r.model, r.batch, r.context) == (system, model, batch, ctx):
            return r
    return None


def summarise(results: list[Result], baseline: str = BASELINE) -> dict[str, Any]:
    """Regime (a), regime (b) and where the paper's 3.4x sits, from a sweep.

    Regime (a) rows carry AQPIM-2b's byte-ratio bound over ``baseline`` (bytes the baseline
    streams inside the banks over the bytes AQPIM streams: 8x without GQA, less where AQPIM
    re-reads its codes per query head and the baseline does not), the share of it reached, and
    AQPIM's largest fixed cost (the overhead bucket that grows most against the baseline's).
    """
    regime_a, regime_b, paper = [], [], {}
    keys = sorted({(r.model, r.batch, r.context) for r in results},
                  key=lambda k: (k[0], k[1], k[2]))
    for model, batch, ctx in keys:
        fp = _get(results, baseline, model, batch, ctx)
        aq = _get(results, "aqpim-2b", model, batch, ctx)
        gpu = _get(results, "gpu", model, batch, ctx)
        naive = _get(results, NAIVE, model, batch, ctx)
        if fp is None or aq is None:
            continue
        row = {"model": model, "batch": batch, "context": ctx,
               "fp16_fits": fp.fits, "aqpim_fits": aq.fits,
               "step_speedup_vs_fp16_pim": fp.seconds / aq.seconds,
               "fp16_pim_pcie_share": fp.pcie_share}
        if naive is not None:
            row["step_speedup_vs_fp16_pim_naive"] = naive.seconds / aq.seconds
        if gpu is not None:
            row["step_speedup_vs_gpu"] = gpu.seconds / aq.seconds
            row["gpu_pcie_share"] = gpu.pcie_share
        regime_b.append(row)
        if fp.fits and aq.fits:
            a = {"model": model, "batch": batch, "context": ctx,
                 "attention_speedup": fp.attention_seconds / aq.attention_seconds,
                 "aqpim_bandwidth_utilisation": aq.pim_bandwidth_utilisation,
                 "fp16_bandwidth_utilisation": fp.pim_bandwidth_utilisation}
            if fp.streamed_bytes and aq.streamed_bytes:
                bound = fp.streamed_bytes / aq.streamed_bytes
                a["byte_ratio_bound"] = bound
                a["share_of_bound"] = a["attention_speedup"] / bound
                over = {k: aq.breakdown.get(k, 0.0) - fp.breakdown.get(k, 0.0) / bound
                        for k in OVERHEADS}
                a["limited_by"] = max(over, key=lambda k: over[k])
            regime_a.append(a)
    for model in sorted({r["model"] for r in regime_b}):
        rows = [r for r in regime_b if r["model"] == model]
        near = min(rows, key=lambda r: abs(math.log(r["step_speedup_vs_fp16_pim"] / PAPER_SPEEDUP)))
        reached = [r for r in rows if r["step_speedup_vs_fp16_pim"] >= PAPER_SPEEDUP]
        paper[model] = {
            "nearest": {k: near[k] for k in ("batch", "context", "step_speedup_vs_fp16_pim",
                                             "fp16_fits")},
            "reached_at": [(r["batch"], r["context"]) for r in reached],
            "max_speedup_where_both_fit": max(
                (r["step_speedup_vs_fp16_pim"] for r in rows if r["fp16_fits"]), default=None),
        }
    return {"baseline": baseline, "regime_a": regime_a, "regime_b": regime_b,
            "paper_3_4x": paper}


def crossings(models: list[ModelConfig], gpu: GPUConfig, hw: HBM3Config, batches: list[int],
              lo: int = 1024, hi: int = 1 << 20, target: float = PAPER_SPEEDUP,
              baseline: str = BASELINE) -> list[dict]:
    """Per model and batch: the shortest context (to 1K) where aqpim-2b's whole step is
    ``target`` times faster than fp16-pim's, by bisection (the speedup grows with context),
    with the FP16 cache's spilled share and PCIe share there. None when not reached by ``hi``.
    """
    out = []
    for m in models:
        for b in batches:
            def speedup(ctx: int, m: ModelConfig = m, b: int = b) -> tuple[float, Result]:
                fp = evaluate(baseline, m, gpu, hw, ctx, b)
                return fp.seconds / evaluate("aqpim-2b", m, gpu, hw, ctx, b).seconds, fp

            row: dict[str, Any] = {"model": m.name, "batch": b, "baseline": baseline,
                                   "context": None}
            if speedup(hi)[0] >= target:
                a, z = lo, hi
                if speedup(a)[0] >= target:
                    z = a
                while z - a > 1024:
                    mid = (a + z) // 2 // 1024 * 1024 or a + 1024
                    if speedup(mid)[0] >= target:
                        z = mid
                    else:
                        a = mid
                sp, fp = speedup(z)
                row.update(context=z, speedup=sp, fp16_spilled_share=fp.spilled_bytes / fp.kv_bytes,
                           fp16_pcie_share=fp.pcie_share)
            out.append(row)
    return out


ATTACC_POINTS = (("llama2-7b", 1, 4096), ("llama2-7b", 1, 32768), ("llama2-7b", 16, 4096),
                 ("llama2-7b", 16, 32768), ("llama2-70b", 1, 4096), ("llama2-70b", 16, 4096))


def attacc_points(gpu: GPUConfig, hw: HBM3Config) -> list[dict[str, Any]]:
    """FP16-PIM attention in the AttAcc mapping at the issue's points, next to what AttAcc's
    trace generator (gen_trace_attacc_bank.py) issues for the same heads.

    AttAcc's simulator runs ``ceil(batch x heads / stacks)`` heads per stack, one per channel,
    in rounds of 16; per round and channel it issues L / 8 MACAB for the scores and L / 8 for
    the context (dhead 128 over 4 banks x 16 MACs, L over 16 pseudo-channel x rank x bank-group
    units), plus WRGB (8), MVSB (8 per 16 score columns + 16), MVGB (8 per 256 tokens) and one
    SFM (16 tCK per 256 tokens). ``attacc_stream_ms`` is the MACAB stream alone in the
    closed form (nCCD_AB, row switches, refresh), ``attacc_serial_ms`` adds every other command
    at 4 tCK and the softmax, unoverlapped: AttAcc's ramulator2 time lies between the two (its
    schedule overlaps two heads' moves with the other's MACs).
    """
    out = []
    for name, batch, ctx in ATTACC_POINTS:
        m = ModelConfig.load(name)
        # as many 5-stack devices as the FP16 cache needs (AttAcc's DGX has one per GPU, 8)
        devices = max(gpu.count_for(m), -(-m.kv_bytes(ctx, batch) // hw.capacity_bytes))
        hw_d = hw.replace(stacks=hw.stacks * devices, link_gbs=hw.link_gbs * devices)
        spec = SYSTEM_SPECS["fp16-pim-attacc"]
        rep = simulate_decode(hw_d, spec_workload(spec, m, hw_d, batch, ctx))
        link = rep.breakdown()["pim_link"]
        heads_per_stack = -(-batch * m.heads // devices // hw.stacks)
        rounds = -(-heads_per_stack // hw.org["channels"])
        macab = ctx // 4
        stream = closed_form_cycles(hw, macab, refresh=True)
        other = 8 + 8 * -(-ctx // 256) + 16 + 8 * -(-ctx // 256)
        sfm = 16 * -(-ctx // 256)
        per_layer_stream = rounds * stream
        per_layer_serial = rounds * (stream + 4 * other + sfm)
        ms = m.layers * hw.tck_ns * 1e-6
        out.append({
            "model": m.name, "batch": batch, "context": ctx, "devices": devices,
            "heads_per_stack": heads_per_stack, "rounds": rounds,
            "macab_per_round_per_channel": macab,
            "model_attention_ms": rep.seconds * 1e3,
            "model_pim_ms_without_link": (rep.seconds - link) * 1e3,
            "attacc_stream_ms": per_layer_stream * ms,
            "attacc_serial_ms": per_layer_serial * ms,
        })
    return out


def trace_report(path: str | Path, hw: HBM3Config) -> dict[str, Any]:
    """Per opcode of a driver trace: commands, model unit / DRAM cycles, recorded cycles."""
    per: dict[str, dict[str, Any]] = {}
    for t in trace_timing(path, hw):
        d = per.setdefault(t.opcode, {"commands": 0, "unit_cycles": 0, "dram_cycles": 0,
                                      "recorded_cycles": 0, "recorded_commands": 0})
        d["commands"] += 1
        d["unit_cycles"] += t.unit_cycles
        d["dram_cycles"] += t.dram_cycles
        if t.recorded is not None:
            d["recorded_cycles"] += max(t.recorded)
            d["recorded_commands"] += 1
    return per


def _table(results: list[Result], systems: list[str]) -> str:
    head = f"{'model':<12} {'batch':>5} {'context':>7} "
    head += " ".join(f"{s + ' ms':>12}" for s in systems)
    head += f" {'att x':>7} {'step x':>7} {'fp16 pcie':>9}"
    lines = [head, "-" * len(head)]
    keys = []
    for r in results:
        k = (r.model, r.batch, r.context)
        if k not in keys:
            keys.append(k)
    for model, batch, ctx in keys:
        line = f"{model:<12} {batch:>5} {ctx:>7} "
        cells = []
        for s in systems:
            r = _get(results, s, model, batch, ctx)
            mark = "*" if r is not None and not r.fits else " "
            cells.append(f"{r.seconds * 1e3:>11.2f}{mark}" if r else f"{'-':>12}")
        line += " ".join(cells)
        fp = _get(results, "fp16-pim", model, batch, ctx)
        aq = _get(results, "aqpim-2b", model, batch, ctx)
        if fp and aq:
            line += f" {fp.attention_seconds / aq.attention_seconds:>7.2f}"
            line += f" {fp.seconds / aq.seconds:>7.2f} {fp.pcie_share:>9.1%}"
        lines.append(line)
    lines.append("* spills to CPU memory. att x / step x: aqpim-2b over fp16-pim (attention / "
                 "whole step); fp16 pcie: share of the fp16-pim step spent on PCIe.")
    return "\n".join(lines)


def _plots(results: list[Result], out: Path, plot_batch: int, systems: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib import ticker

    out.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r.model for r in results))
    contexts = sorted({r.context for r in results})
    batches = sorted({r.batch for r in results})
    written = []
    colors = {"gpu": "tab:gray", "fp16-pim": "tab:blue", "fp16-pim-naive": "tab:blue",
              "fp16-pim-cpu": "tab:cyan", "fp16-pim-attacc": "navy", "int8-pim": "tab:olive",
              "int4-pim": "tab:green", "kivi2-pim": "lime", "aqpim-2b": "tab:red",
              "aqpim-2b-nomerge": "tab:red", "aqpim-2b-g1": "tab:red",
              "aqpim-2b-d2k16": "tab:pink", "aqpim-1.5b": "tab:purple",
              "aqpim-4b": "tab:orange"}
    # variants of a design share its colour and differ in line style
    styles = {"fp16-pim-naive": ":", "aqpim-2b-nomerge": ":", "aqpim-2b-g1": "--"}

    def series(metric: str, batch: int) -> None:
        fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.2), squeeze=False)
        for j, model in enumerate(models):
            ax, axs = axes[0][j], axes[1][j]
            for s in systems:
                pts = [_get(results, s, model, batch, t) for t in contexts]
                ys = [getattr(p, metric) * 1e3 if p else np.nan for p in pts]
                ax.plot(contexts, ys, styles.get(s, "-"), marker="o", ms=3,
                        color=colors.get(s), label=s)
                base = [_get(results, "fp16-pim", model, batch, t) for t in contexts]
                sp = [getattr(b, metric) / getattr(p, metric) if p and b else np.nan
                      for p, b in zip(pts, base, strict=True)]
                axs.plot(contexts, sp, styles.get(s, "-"), marker="o", ms=3,
                         color=colors.get(s), label=s)
            for a in (ax, axs):
                a.set_xscale("log", base=2)
                a.set_yscale("log")
                a.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
                a.yaxis.set_minor_formatter(ticker.NullFormatter())
                a.grid(True, which="both", alpha=0.3)
            axs.axhline(PAPER_SPEEDUP, color="k", ls=":", lw=1)
            if metric == "attention_seconds":
                axs.axhline(8.0, color="tab:red", ls="--", lw=0.8)
            ax.set_title(f"{model}, batch {batch}", fontsize=9)
            axs.set_xlabel("context (tokens)")
        what = "decode attention" if metric == "attention_seconds" else "whole decode step"
        axes[0][0].set_ylabel(f"{what} (ms)")
        axes[1][0].set_ylabel("speedup over fp16-pim")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        name = ("attention" if metric == "attention_seconds" else "step") + f"_b{batch}.png"
        fig.savefig(out / name, dpi=70)
        plt.close(fig)
        written.append(str(out / name))

    series("attention_seconds", batches[0])
    series("seconds", plot_batch)

    # breakdown: share of each bucket per system and context
    buckets = ["fc", "allreduce", "norm_act", "gpu_attention", "cpu_attention", "pim_stream",
               "pim_row_switch", "pim_refresh", "pim_query_load", "pim_bus", "pim_unit_tail",
               "pim_link", "pim_write", "pcie"]
    bcolors = ["tab:green", "darkgreen", "yellowgreen", "tab:gray", "tab:brown", "tab:blue",
               "tab:cyan", "tab:purple", "darkorange", "tab:olive", "tab:pink", "gold", "black",
               "tab:red"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for j, model in enumerate(models):
        ax = axes[0][j]
        x, labels = 0, []
        # the main systems only: all fourteen would not be readable side by side
        shown = [s for s in systems if s in ("fp16-pim", "fp16-pim-cpu", "int4-pim",
                                             "aqpim-2b")] or systems
        for s in shown:
            for t in contexts:
                r = _get(results, s, model, plot_batch, t)
                if r is None:
                    continue
                bottom = 0.0
                for b, c in zip(buckets, bcolors, strict=True):
                    v = r.breakdown.get(b, 0.0) / r.seconds
                    ax.bar(x, v, bottom=bottom, color=c, width=0.85,
                           label=b if (x == 0) else None)
                    bottom += v
                labels.append(f"{s.replace('-pim', '')} {t // 1024}K")
                x += 1
            x += 1
            labels.append("")
        ax.axhspan(*PAPER_PCIE_SHARE, color="k", alpha=0.12)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=5)
        ax.set_ylim(0, 1)
        ax.set_title(f"{model}, batch {plot_batch} (band: paper 90-98.5 % PCIe)", fontsize=8)
    axes[0][0].set_ylabel("share of decode step")
    axes[0][0].legend(fontsize=5, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / f"breakdown_b{plot_batch}.png", dpi=70)
    plt.close(fig)
    written.append(str(out / f"breakdown_b{plot_batch}.png"))

    # speedup map: whole step, aqpim-2b over fp16-pim, batch x context, 3.4x contour
    if "aqpim-2b" in systems and "fp16-pim" in systems:
        fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 2.9),
                                 squeeze=False)
        for j, model in enumerate(models):
            ax = axes[0][j]
            grid = np.full((len(batches), len(contexts)), np.nan)
            for a, b in enumerate(batches):
                for c, t in enumerate(contexts):
                    fp = _get(results, "fp16-pim", model, b, t)
                    aq = _get(results, "aqpim-2b", model, b, t)
                    if fp and aq:
                        grid[a, c] = fp.seconds / aq.seconds
            im = ax.imshow(np.log10(grid), origin="lower", cmap="viridis", aspect="auto",
                           vmin=0, vmax=3)
            for a in range(len(batches)):
                for c in range(len(contexts)):
                    fp = _get(results, "fp16-pim", model, batches[a], contexts[c])
                    mark = "" if fp is None or fp.fits else "*"
                    ax.text(c, a, f"{grid[a, c]:.3g}{mark}", ha="center", va="center",
                            fontsize=6, color="w")
            if len(batches) > 1 and len(contexts) > 1:
                ax.contour(np.log10(grid), levels=[math.log10(PAPER_SPEEDUP)], colors="r",
                           linewidths=1.2)
            ax.set_xticks(range(len(contexts)))
            ax.set_xticklabels([f"{t // 1024}K" for t in contexts], fontsize=7)
            ax.set_yticks(range(len(batches)))
            ax.set_yticklabels([str(b) for b in batches], fontsize=7)
            ax.set_title(f"{model}: step speedup (red: 3.4x)", fontsize=8)
            ax.set_xlabel("context")
        axes[0][0].set_ylabel("batch")
        fig.colorbar(im, ax=axes[0].tolist(), label="log10 speedup", shrink=0.8)
        fig.savefig(out / "speedup_map.png", dpi=70)
        plt.close(fig)
        written.append(str(out / "speedup_map.png"))
    return written


def main(argv: list[str]) -> int:
    """``aqpim bench perf`` entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="aqpim bench perf", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", metavar="NAME|FILE.json",
                   help=f"model (repeatable): {', '.join(BUILTIN_MODELS)} or a JSON file with "
                        "layers, heads, kv_heads, head_dim, hidden, intermediate, vocab "
                        "(default: the three built-in models)")
    p.add_argument("--hw", metavar="FILE.json",
                   help="HBM3-PIM config (default: sw/configs/hbm3.json)")
    p.add_argument("--gpu", default="h100", metavar="h100|a100|FILE.json")
    p.add_argument("--stacks", type=int, help="HBM3-PIM stacks (overrides the hw config)")
    p.add_argument("--contexts", type=lambda s: _int_list(s, "--contexts"),
                   default=list(DEFAULT_CONTEXTS), help="comma list, 4K style allowed")
    p.add_argument("--batches", type=lambda s: _int_list(s, "--batches"),
                   default=list(DEFAULT_BATCHES))
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument("--plot-batch", type=int, default=16,
                   help="batch of the whole-step and breakdown plots")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (every system, energy, equal-accuracy table) "
                        "to stdout and nothing else")
    p.add_argument("--out", default="out/perf",
                   help="folder for the files: plots and perf.json (default out/perf)")
    p.add_argument("--no-plots", action="store_true", help="write no files")
    p.add_argument("--markdown", metavar="FILE.md",
                   help="also write docs/perf.md's tables of this run (sw/perf/markdown.py)")
    p.add_argument("--markdown-all", action="store_true",
                   help="with --markdown: every (model, batch, context) in regime (b)")
    p.add_argument("--ppl", default=str(PPL_FILE), metavar="FILE.json",
                   help="perplexity sweep for the equal-accuracy table")
    p.add_argument("--eq-contexts", type=lambda s: _int_list(s, "--eq-contexts"),
                   default=[4096, 32768, 131072])
    p.add_argument("--eq-batches", type=lambda s: _int_list(s, "--eq-batches"),
                   default=[1, 16])
    p.add_argument("--trace", metavar="FILE.jsonl",
                   help="cost a recorded driver trace (aqpim.sw.host.trace) per command and stop")
    args = p.parse_args(argv)

    err = sys.stderr
    try:
        hw = HBM3Config.load(args.hw)
        if args.stacks is not None:
            if args.stacks < 1:
                raise ValueError(f"--stacks must be >= 1, got {args.stacks}")
            hw = hw.replace(stacks=args.stacks)
        gpu = GPUConfig.load(args.gpu)
        models = [ModelConfig.load(m) for m in (args.model or list(BUILTIN_MODELS))]
        systems = [s.strip() for s in args.systems.split(",") if s.strip()]
        bad = [s for s in systems if s not in SYSTEMS]
        if bad or not systems:
            raise ValueError(f"unknown systems {bad}: use a comma list of {', '.join(SYSTEMS)}")
        if args.plot_batch not in args.batches:
            args.plot_batch = args.batches[-1] if args.plot_batch > args.batches[-1] else \
                args.batches[0]
    except (ValueError, TypeError) as e:
        print(f"aqpim bench perf: {e}", file=err)
        return 2

    if args.trace:
        try:
            per = trace_report(args.trace, hw)
        except (OSError, ValueError) as e:
            print(f"aqpim bench perf: trace {args.trace!r}: {e}", file=err)
            return 2
        if args.json:
            json.dump({"trace": str(args.trace), "opcodes": per}, sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
        print(f"{'opcode':<13} {'commands':>8} {'unit cyc':>10} {'hbm3 tCK':>10} {'recorded':>10}")
        for op, d in per.items():
            rec = str(d["recorded_cycles"]) if d["recorded_commands"] else "-"
            print(f"{op:<13} {d['commands']:>8} {d['unit_cycles']:>10} {d['dram_cycles']:>10} "
                  f"{rec:>10}")
        return 0

    try:
        ppl = load_ppl(args.ppl)
    except ValueError as e:
        print(f"aqpim bench perf: {e}", file=err)
        return 2
    t0 = time.perf_counter()
    try:  # a user config can lack what a system needs (units.uniform, ...): say which
        results = sweep(models, gpu, hw, args.contexts, args.batches, systems)
        summary = summarise(results) if BASELINE in systems else summarise(results, systems[0])
        summary["paper_3_4x_crossing"] = crossings(models, gpu, hw, args.batches)
        summary["paper_3_4x_crossing_naive"] = crossings(models, gpu, hw, args.batches,
                                                         baseline=NAIVE)
        eq = equal_accuracy_table(ppl, models, gpu, hw, args.eq_contexts, args.eq_batches)
    except (ValueError, TypeError) as e:
        print(f"aqpim bench perf: {e}", file=err)
        return 2
    chosen = {str(level): {f: s["name"] for f, s in choose(ppl, level).items()}
              for level in LEVELS}
    elapsed = time.perf_counter() - t0
    report = {
        "hardware": {"name": hw.name, "stacks": hw.stacks, "banks": hw.banks,
                     "capacity_gb": hw.capacity_bytes / 1e9,
                     "internal_tbs": hw.internal_gbs / 1e3, "external_tbs": hw.external_gbs / 1e3,
                     "link_gbs": hw.link_gbs, "power_limit": hw.power_limit,
                     "refresh": hw.refresh, "source": hw.source, "energy": hw.energy},
        "gpu": gpu.name,
        "models": [m.name for m in models],
        "contexts": args.contexts,
        "batches": args.batches,
        "systems": systems,
        "sweep_seconds": elapsed,
        "validation": validation(hw),
        **summary,
        "equal_accuracy": {"ppl_file": str(args.ppl), "ppl_source": ppl.get("source", ""),
                           "levels": list(LEVELS), "families": list(FAMILIES.values()),
                           "chosen": chosen, "rows": eq},
        "attacc_comparison": attacc_points(gpu, hw),
        "results": [r.to_json() for r in results],
        "note": "analytical GPU baseline: no GPU was lent to this task (docs/perf.md)",
    }
    written = []
    if not args.no_plots:
        written = _plots(results, Path(args.out), args.plot_batch, systems)
        written.append(_plot_equal(eq, Path(args.out)))
        Path(args.out, "perf.json").write_text(json.dumps(report, indent=1) + "\n")
        written.append(str(Path(args.out, "perf.json")))
    if args.markdown:
        # the same report as --json's, so the tables and the JSON come from one run
        try:
            Path(args.markdown).write_text(report_markdown(report, args.markdown_all))
        except OSError as e:
            print(f"aqpim bench perf: --markdown {args.markdown!r}: {e}", file=err)
            return 2
        written.append(str(args.markdown))
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(_table(results, systems))
    for c in summary["paper_3_4x_crossing"]:
        if c["context"] is None:
            print(f"3.4x: {c['model']} batch {c['batch']}: not reached up to 1M tokens")
        else:
            print(f"3.4x: {c['model']} batch {c['batch']}: from {c['context']} tokens "
                  f"(fp16 cache {c['fp16_spilled_share']:.1%} spilled, PCIe "
                  f"{c['fp16_pcie_share']:.1%} of its step)")
    print(_eq_table(eq))
    print(f"{len(results)} points, the 3.4x crossings and the equal-accuracy table in "
          f"{elapsed:.2f} s")
    for path in written:
        print(f"wrote {path}")
    return 0


def _eq_table(rows: list[dict[str, Any]]) -> str:
    """Equal-accuracy table: step ms / attention ms / energy mJ per family."""
    fams = list(dict.fromkeys(r["family"] for r in rows))
    lines = [f"{'ppl<=':>5} {'model':<12} {'batch':>5} {'context':>7} "
             + " ".join(f"{f + ' step/att ms, mJ':>30}" for f in fams)]
    keys = list(dict.fromkeys((r["level"], r["model"], r["batch"], r["context"]) for r in rows))
    for k in keys:
        cells = []
        for f in fams:
            r = next((r for r in rows
                      if (r["level"], r["model"], r["batch"], r["context"]) == k
                      and r["family"] == f), None)
            cells.append(f"{'-':>30}" if r is None else
                         f"{r['setting'][:10]:>10} {r['step_ms']:>8.2f}{' ' if r['fits'] else '*'}"
                         f"{r['attention_ms']:>6.2f} {r['energy_mj']:>5.0f}")
        lines.append(f"{k[0]:>5} {k[1]:<12} {k[2]:>5} {k[3]:>7} " + " ".join(cells))
    return "\n".join(lines)


def _plot_equal(rows: list[dict[str, Any]], out: Path) -> str:
    """The plot a reader looks at first: step time at equal perplexity, per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    out.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r["model"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fams = list(dict.fromkeys(r["family"] for r in rows))
    colors = {"FP16-PIM": "tab:blue", "UQ-PIM": "tab:green", "AQPIM": "tab:red"}
    fig, axes = plt.subplots(len(batches), len(models), figsize=(3.7 * len(models),
                             2.9 * len(batches)), squeeze=False)
    for i, b in enumerate(batches):
        for j, m in enumerate(models):
            ax = axes[i][j]
            for level, ls in zip(LEVELS, ("-", "--"), strict=True):
                for f in fams:
                    pts = sorted((r["context"], r["step_ms"], r["setting"]) for r in rows
                                 if (r["model"], r["batch"], r["family"], r["level"])
                                 == (m, b, f, level))
                    if not pts:
                        continue
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, marker="o", ms=3,
                            color=colors.get(f), label=f"{f} {pts[0][2]} (ppl<={level})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="minor", labelsize=6)
            lo, hi = ax.get_ylim()
            if hi / lo > 20:  # decades apart: the minor labels would overlap
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{m}, batch {b}", fontsize=9)
            ax.set_xlabel("context (tokens)")
        axes[i][0].set_ylabel("decode step (ms)")
    axes[0][0].legend(fontsize=5.5)
    fig.suptitle("Whole decode step at equal perplexity, each family's cheapest setting (solid: "
                 "ppl <= 1.01x, dashed: <= 1.03x; FP16 is the same at both); H100 + 5-stack "
                 "HBM3-PIM per GPU", fontsize=8)
    fig.tight_layout()
    path = out / "equal_accuracy.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)
