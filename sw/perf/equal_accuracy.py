"""Speed at equal accuracy: per quality level, each PIM family's cheapest setting that meets it.

The perplexity sweep (``sw/data/ppl_smollm2.json``; schema in docs/perf.md) lists KV-cache
settings with their perplexity ratio over the FP16 cache. For a quality level (ratio <= 1.01,
<= 1.03) each family (FP16-PIM, uniform-quantized PIM, AQPIM) takes its cheapest setting that
meets it (fewest bits per element, then the lower ratio); FP16 always meets it. Each chosen
setting becomes a :class:`SystemSpec` and is timed by :func:`evaluate` at every point.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from aqpim.sw.perf.hbm3 import HBM3Config
from aqpim.sw.perf.systems import (
    SYSTEM_SPECS,
    GPUConfig,
    ModelConfig,
    SystemSpec,
    _pq,
    evaluate,
)

__all__ = ["PPL_FILE", "LEVELS", "FAMILIES", "load_ppl", "spec_for", "choose", "table"]

PPL_FILE = Path(__file__).resolve().parent.parent / "data" / "ppl_smollm2.json"
LEVELS = (1.01, 1.03)
FAMILIES = {"fp16": "FP16-PIM", "uniform": "UQ-PIM", "pq": "AQPIM"}


def load_ppl(path: str | Path = PPL_FILE) -> dict[str, Any]:
    """Read and check the perplexity sweep; errors name the file and the bad entry."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"perplexity file {str(p)!r}: {e}") from None
    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, list) or not settings:
        raise ValueError(f"perplexity file {str(p)!r}: 'settings' must be a non-empty list")
    for i, s in enumerate(settings):
        where = f"perplexity file {str(p)!r}: settings[{i}]"
        if not isinstance(s, dict):
            raise ValueError(f"{where} must be an object")
        if s.get("kind") not in FAMILIES:
            raise ValueError(f"{where}: kind must be one of {list(FAMILIES)}, got "
                             f"{s.get('kind')!r}")
        r = s.get("ppl_ratio_float")
        if isinstance(r, bool) or not isinstance(r, int | float) or r <= 0:
            raise ValueError(f"{where}: ppl_ratio_float must be a number > 0, got {r!r}")
        b = s.get("bits_per_element")
        if isinstance(b, bool) or not isinstance(b, int | float) or b <= 0:
            raise ValueError(f"{where}: bits_per_element must be a number > 0, got {b!r}")
    return data


def spec_for(setting: dict[str, Any]) -> SystemSpec:
    """The PIM system that stores the KV cache as ``setting`` says."""
    kind, name = setting["kind"], str(setting.get("name", setting["kind"]))
    if kind == "fp16":
        return replace(SYSTEM_SPECS["fp16-pim"], name=f"fp16-pim[{name}]")
    if kind == "uniform":
        bits = int(setting["key"]["bits"])
        extra = float(setting["bits_per_element"]) - bits
        # scale + zero (32 bits) per group; bits_per_element - bits = 32 / group
        group = max(1, round(32 / extra)) if extra > 0 else 1 << 20
        return SystemSpec(f"uq{bits}-pim[{name}]", "uniform", data_bits=bits, group=group,
                          window=True)
    # keys and values each with their own (d, K), as the bank stores them
    k, v = setting["key"], setting["value"]
    try:
        return _pq(f"aqpim[{name}]", int(k["d"]), int(k["K"]), int(v["d"]), int(v["K"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"perplexity setting {name!r}: key {k!r} / value {v!r} is not a PQ "
                         f"geometry the bank takes ({e})") from None


def ratio(setting: dict[str, Any]) -> float:
    """The setting's perplexity ratio: the integer bank model's where measured (what the RTL
    computes), else float."""
    r = setting.get("ppl_ratio_int")
    return float(setting["ppl_ratio_float"] if r is None else r)


def choose(data: dict[str, Any], level: float) -> dict[str, dict[str, Any]]:
    """Per family, the cheapest setting with :func:`ratio` ``<= level`` (None if none)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, family in FAMILIES.items():
        ok = [s for s in data["settings"] if s["kind"] == kind and ratio(s) <= level]
        if ok:
            out[family] = min(ok, key=lambda s: (s["bits_per_element"], ratio(s)))
    return out


def table(data: dict[str, Any], models: list[ModelConfig], gpu: GPUConfig, hw: HBM3Config,
          contexts: list[int], batches: list[int]) -> list[dict[str, Any]]:
    """One row per (level, model, batch, context, family): step, attention, energy."""
    rows = []
    for level in LEVELS:
        chosen = choose(data, level)
        for m in models:
            for b in batches:
                for t in contexts:
                    for family, setting in chosen.items():
                        r = evaluate(spec_for(setting), m, gpu, hw, t, b)
                        rows.append({
                            "level": level, "family": family, "setting": setting["name"],
                            "bits_per_element": setting["bits_per_element"],
                            "ppl_ratio": ratio(setting), "model": m.name,
                            "batch": b, "context": t, "step_ms": r.seconds * 1e3,
                            "attention_ms": r.attention_seconds * 1e3,
                            "energy_mj": r.energy_total_j * 1e3, "fits": r.fits,
                        })
    return rows
