"""docs/perf.md's tables, written from one ``aqpim bench perf --json`` document.

``aqpim bench perf --markdown FILE`` writes :func:`report_markdown` of the run it makes, so
the tables in docs/perf.md come from code and one run, not from hand copies of the JSON.
Every function here reads only the report dictionary (the JSON document), so a saved
``perf.json`` can be rendered again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["report_markdown", "regime_a_table", "regime_b_table", "crossings_table",
           "link_table", "energy_table", "equal_accuracy_table", "attacc_table",
           "LIMIT_NAMES"]

# what each AQPIM overhead bucket is, for the "limited by" column
LIMIT_NAMES = {
    "pim_link": "link (`pim_link`)",
    "pim_query_load": "LUT load (`pim_query_load`)",
    "pim_bus": "partial read-out (`pim_bus`)",
    "pim_unit_tail": "value MAC pass (`pim_unit_tail`)",
    "pim_row_switch": "row switches (`pim_row_switch`)",
    "pim_refresh": "refresh (`pim_refresh`)",
    "pim_write": "code writes (`pim_write`)",
}

# regime (b) columns: system name -> header
REGIME_B_SYSTEMS = (
    ("gpu", "GPU"), ("fp16-pim-naive", "FP16 naive"), ("fp16-pim", "**FP16 fair**"),
    ("fp16-pim-cpu", "FP16 + CPU attn"), ("int8-pim", "INT8"), ("int4-pim", "INT4"),
    ("kivi2-pim", "KIVI-2"), ("aqpim-2b", "**AQPIM 2b**"), ("aqpim-2b-nomerge", "2b no merge"),
    ("aqpim-2b-g1", "2b G=1"), ("aqpim-2b-d2k16", "2b d2K16"), ("aqpim-1.5b", "AQPIM 1.5b"),
    ("aqpim-4b", "AQPIM 4b"),
)
# the (model, batch, context) rows docs/perf.md shows of the 72 (all of them: --markdown-all)
REGIME_B_ROWS = (
    ("Llama-2-7B", 1, 4096), ("Llama-2-7B", 1, 131072), ("Llama-2-7B", 16, 4096),
    ("Llama-2-7B", 16, 16384), ("Llama-2-7B", 16, 32768), ("Llama-2-7B", 16, 131072),
    ("Llama-3-8B", 1, 131072), ("Llama-3-8B", 16, 32768), ("Llama-3-8B", 16, 65536),
    ("Llama-3-8B", 16, 131072), ("Llama-2-70B", 1, 131072), ("Llama-2-70B", 16, 16384),
    ("Llama-2-70B", 16, 32768), ("Llama-2-70B", 16, 65536),
)
LINK_ROWS = (
    ("Llama-2-7B", 1, 4096), ("Llama-2-7B", 1, 131072), ("Llama-2-7B", 16, 4096),
    ("Llama-3-8B", 1, 131072), ("Llama-3-8B", 16, 131072), ("Llama-2-70B", 1, 131072),
    ("Llama-2-70B", 16, 131072),
)
ENERGY_ROWS = (
    ("Llama-2-7B", 1, 4096), ("Llama-2-7B", 1, 131072), ("Llama-2-7B", 16, 32768),
    ("Llama-3-8B", 16, 32768), ("Llama-3-8B", 16, 131072), ("Llama-2-70B", 16, 32768),
)


def _sig(x: float, digits: int = 3) -> str:
    """``digits`` significant digits, but whole numbers from 1000 up (no exponent)."""
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _ctx(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def _index(report: dict[str, Any]) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    """Results by (system, model, batch, context)."""
    try:
        return {(r["system"], r["model"], r["batch"], r["context"]): r
                for r in report["results"]}
    except (KeyError, TypeError) as e:
        raise ValueError(f"perf report: 'results' rows need system, model, batch, context "
                         f"({e!r})") from None


def _need(report: dict[str, Any], key: str) -> Any:
    if key not in report:
        raise ValueError(f"perf report: no {key!r} (is it an `aqpim bench perf --json` "
                         f"document?)")
    return report[key]


def _rows(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def regime_a_table(report: dict[str, Any], batch: int = 1) -> str:
    """Attention alone at ``batch``: AQPIM-2b over the fair FP16 baseline, the byte-ratio bound,
    the share of it reached, the limiting bucket, and the G = 1 and d2 K16 variants."""
    res = _index(report)
    base = report.get("baseline", "fp16-pim")
    # the report's model order (regime_a is sorted by name: 70B before 7B)
    order = {m: i for i, m in enumerate(report.get("models", []))}
    rows = []
    for a in sorted(_need(report, "regime_a"),
                    key=lambda a: (order.get(a["model"], len(order)), a["model"], a["context"])):
        if a["batch"] != batch:
            continue
        key = (a["model"], a["batch"], a["context"])
        aq, fp = res.get(("aqpim-2b", *key)), res.get((base, *key))
        if aq is None or fp is None or "byte_ratio_bound" not in a:
            continue
        cells = [a["model"], _ctx(a["context"]), f"{aq['attention_seconds'] * 1e3:.3f}",
                 f"{fp['attention_seconds'] * 1e3:.3f}", f"{a['attention_speedup']:.2f}x",
                 f"{a['byte_ratio_bound']:.2f}x", f"{a['share_of_bound']:.0%}",
                 LIMIT_NAMES.get(a["limited_by"], a["limited_by"])]
        for variant in ("aqpim-2b-g1", "aqpim-2b-d2k16"):
            v = res.get((variant, *key))
            if v is None or not v["streamed_bytes"] or not v["attention_seconds"]:
                cells.append("-")
                continue
            sp = fp["attention_seconds"] / v["attention_seconds"]
            bound = fp["streamed_bytes"] / v["streamed_bytes"]
            cells.append(f"{sp:.2f}x / {sp / bound:.0%}")
        rows.append(cells)
    return _rows(["model", "context", "AQPIM-2b attention (ms)", "FP16-PIM (ms)", "speedup",
                  "bound", "share", "limited by", "G = 1: speedup / share",
                  "d2 K16: speedup / share"], rows)


def regime_b_table(report: dict[str, Any],
                   keys: tuple[tuple[str, int, int], ...] | None = REGIME_B_ROWS) -> str:
    """Whole step (ms) per system; ``*`` where the KV cache does not fit. ``keys`` None: all."""
    res = _index(report)
    if keys is None:
        keys = tuple(dict.fromkeys((r["model"], r["batch"], r["context"])
                                   for r in report["results"]))
    rows = []
    for model, batch, ctx in keys:
        cells = [model, str(batch), _ctx(ctx)]
        for s, _ in REGIME_B_SYSTEMS:
            r = res.get((s, model, batch, ctx))
            cells.append("-" if r is None else
                         _sig(r["seconds"] * 1e3) + ("" if r["fits"] else "*"))
        aq = res.get(("aqpim-2b", model, batch, ctx))
        for s in ("fp16-pim", "fp16-pim-naive"):
            r = res.get((s, model, batch, ctx))
            cells.append("-" if r is None or aq is None else _sig(r["seconds"] / aq["seconds"]))
        if any(c != "-" for c in cells[3:]):
            rows.append(cells)
    return _rows(["model", "batch", "context"] + [h for _, h in REGIME_B_SYSTEMS]
                 + ["x fair", "x naive"], rows)


def crossings_table(report: dict[str, Any]) -> str:
    """The shortest context where AQPIM-2b's step is 3.4x the fair / naive FP16 baseline's."""
    def cell(c: dict[str, Any]) -> str:
        if c.get("context") is None:
            return "not reached by 1M tokens"
        return (f"{_ctx(c['context'])} ({c['fp16_spilled_share']:.0%} outside PIM, PCIe "
                f"{c['fp16_pcie_share']:.0%})")

    naive = {(c["model"], c["batch"]): c for c in report.get("paper_3_4x_crossing_naive", [])}
    rows = []
    for c in _need(report, "paper_3_4x_crossing"):
        n = naive.get((c["model"], c["batch"]))
        rows.append([c["model"], str(c["batch"]), cell(c), "-" if n is None else cell(n)])
    return _rows(["model", "batch", "fair `fp16-pim`", "naive `fp16-pim-naive` (old model)"],
                 rows)


def link_table(report: dict[str, Any], keys: tuple[tuple[str, int, int], ...] = LINK_ROWS
               ) -> str:
    """GPU-PIM link bytes and time, AQPIM-2b with and without the merge unit, FP16's bytes."""
    res = _index(report)
    rows = []
    for model, batch, ctx in keys:
        fp = res.get(("fp16-pim", model, batch, ctx))
        m = res.get(("aqpim-2b", model, batch, ctx))
        n = res.get(("aqpim-2b-nomerge", model, batch, ctx))
        if fp is None or m is None or n is None:
            continue
        rows.append([model, str(batch), _ctx(ctx), _sig(fp["link_bytes"] / 1e6, 4),
                     _sig(m["link_bytes"] / 1e6, 4), _sig(n["link_bytes"] / 1e6, 4),
                     f"{m['breakdown'].get('pim_link', 0.0) * 1e3:.3f}",
                     f"{n['breakdown'].get('pim_link', 0.0) * 1e3:.3f}",
                     f"{m['attention_seconds'] * 1e3:.3f}", f"{n['attention_seconds'] * 1e3:.3f}"])
    return _rows(["model", "batch", "context", "FP16 PIM MB", "AQPIM MB (merge)",
                  "AQPIM MB (no merge)", "link ms (merge)", "link ms (no merge)",
                  "attention ms (merge)", "attention ms (no merge)"], rows)


def energy_table(report: dict[str, Any], keys: tuple[tuple[str, int, int], ...] = ENERGY_ROWS
                 ) -> str:
    """Millijoules per decode step per system."""
    res = _index(report)
    systems = [s for s, _ in REGIME_B_SYSTEMS]
    rows = []
    for model, batch, ctx in keys:
        cells = [model, str(batch), _ctx(ctx)]
        for s in systems:
            r = res.get((s, model, batch, ctx))
            cells.append("-" if r is None else _sig(r["energy_total_j"] * 1e3, 4))
        rows.append(cells)
    return _rows(["model", "batch", "context"]
                 + [h.strip("*") for _, h in REGIME_B_SYSTEMS], rows)


def equal_accuracy_table(report: dict[str, Any]) -> str:
    """Step ms / attention ms / energy mJ per family at each perplexity level, and the FP16 and
    uniform step over AQPIM's."""
    eq = _need(report, "equal_accuracy")
    rows_in = eq["rows"]
    keys = list(dict.fromkeys((r["level"], r["model"], r["batch"], r["context"])
                              for r in rows_in))
    by = {(r["level"], r["model"], r["batch"], r["context"], r["family"]): r for r in rows_in}
    rows = []
    for k in keys:
        cells = [f"{k[0]:g}", k[1], str(k[2]), _ctx(k[3])]
        got = {f: by.get((*k, f)) for f in ("FP16-PIM", "UQ-PIM", "AQPIM")}
        for r in got.values():
            cells.append("-" if r is None else
                         f"{_sig(r['step_ms'], 4)}{'' if r['fits'] else '*'} / "
                         f"{_sig(r['attention_ms'], 4)} / {_sig(r['energy_mj'], 4)}")
        aq = got["AQPIM"]
        for f in ("FP16-PIM", "UQ-PIM"):
            r = got[f]
            cells.append("-" if r is None or aq is None else _sig(r["step_ms"] / aq["step_ms"]))
        rows.append(cells)
    return _rows(["ppl", "model", "batch", "context", "FP16-PIM", "UQ-PIM", "AQPIM",
                  "FP16 / AQ", "UQ / AQ"], rows)


def attacc_table(report: dict[str, Any]) -> str:
    """FP16 attention in the AttAcc mapping next to the bracket from AttAcc's trace generator."""
    rows = []
    for p in _need(report, "attacc_comparison"):
        rows.append([p["model"], str(p["batch"]), _ctx(p["context"]), str(p["devices"]),
                     str(p["heads_per_stack"]), str(p["rounds"]), f"{p['attacc_stream_ms']:.3f}",
                     f"**{p['model_pim_ms_without_link']:.3f}**", f"{p['attacc_serial_ms']:.3f}",
                     f"{p['model_attention_ms']:.3f}"])
    return _rows(["model", "batch", "context", "devices", "heads / stack", "rounds",
                  "AttAcc stream (ms)", "**our model, AttAcc mapping, PIM only (ms)**",
                  "AttAcc serial (ms)", "ours + link (ms)"], rows)


def report_markdown(report: dict[str, Any], all_rows: bool = False) -> str:
    """Every table of docs/perf.md that the model produces, under ``###`` headings."""
    rb_keys = None if all_rows else REGIME_B_ROWS
    parts = [
        "<!-- written by `aqpim bench perf --markdown` (sw/perf/markdown.py); "
        f"sweep {report.get('sweep_seconds', 0.0):.1f} s -->",
        "### AttAcc mapping: side-by-side", attacc_table(report),
        "### Regime (a): attention alone, batch 1", regime_a_table(report),
        "### Regime (b): whole decode step (ms)", regime_b_table(report, rb_keys),
        "### The 3.4x crossings", crossings_table(report),
        "### GPU-PIM link and the merge unit", link_table(report),
        "### Energy per decode step (mJ)", energy_table(report),
        "### Speed at equal accuracy (step ms / attention ms / energy mJ)",
        equal_accuracy_table(report),
    ]
    return "\n\n".join(parts) + "\n"
