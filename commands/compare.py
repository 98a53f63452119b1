"""``aqpim compare``: the RTL bank array against the golden device, per command and end to end.

Two parts, one co-simulation (:class:`aqpim.sim.rtl_device.RtlDevice`, built once per
configuration):

1. **End to end**: prefill and decode steps through :class:`aqpim.sw.host.driver.Driver` on the RTL
   and on the golden device (synthetic LLM-like data); every step's output must be equal bit
   for bit; the relative error against exact float attention is reported.
2. **Per unit**: constrained-random command streams (:mod:`aqpim.sim.randcmd`, invalid commands
   mixed in, the bank's state read back after each rejected one) on bank 0; responses and
   status codes compared command by command. Each opcode exercises one unit of the bank
   (WRITE_KV the encoder, SCORE the LUT-accumulate, AGGREGATE softmax + histogram + value MAC,
   the reads the storage), so the table is per opcode: commands, mismatches, mean cycles.

Prints a summary (commands, tokens, mismatches, cycles); ``--json`` prints it as JSON. Exit
status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Opcode
from aqpim.numerics import Numerics

if TYPE_CHECKING:
    from aqpim.commands.console import Console

__all__ = ["main", "run_compare"]


LOG = Path("build/logs/compare.log")


def run_compare(args: argparse.Namespace, console: Console | None = None) -> dict[str, object]:
    """Run both comparisons; returns the summary dictionary."""
    from aqpim.sim.randcmd import build_stream
    from aqpim.sim.rtl_device import RtlDevice
    from aqpim.sim.session import PairedDecode
    from aqpim.sw.golden import reference
    from aqpim.sw.golden.synthetic import generate

    per_bank = -(-(args.tokens + args.steps) * args.heads // args.banks)
    cap = args.capacity or per_bank
    num = Numerics(head_dim=args.head_dim, subspaces=args.subspaces, centroids=args.centroids,
                   token_capacity=cap)
    geom = Geometry(num)
    t0 = time.perf_counter()
    summary: dict[str, object] = {"config": {
        "heads": args.heads, "tokens": args.tokens, "steps": args.steps, "banks": args.banks,
        "head_dim": num.head_dim, "subspaces": num.subspaces, "centroids": num.centroids,
        "token_capacity": cap, "bits_per_element": num.bits_per_element,
    }}
    with RtlDevice(geom, args.banks, seed=args.seed,
                   on_stage=console.stage if console else None) as rtl:
        started = time.perf_counter()
        say = console.say if console else (lambda text: None)
        # 1. end to end through the driver
        say(f"end to end: prefill and {args.steps} decode steps on the RTL and golden devices")
        data = generate(heads=args.heads, tokens=args.tokens + args.steps,
                        head_dim=num.head_dim, seed=args.seed)
        q, k, v = data["q"], data["k"], data["v"]
        run = PairedDecode(rtl, kv_heads=args.heads, iters=args.iters, seed=args.seed)
        run.prefill(k[:, :args.tokens], v[:, :args.tokens])
        steps = []
        mismatches = 0
        for s in range(args.steps):
            t = args.tokens + s
            st = run.step(q, k[:, t], v[:, t])
            exact = np.stack([reference.exact_attention(q[h], k[h, :t + 1], v[h, :t + 1])
                              for h in range(args.heads)])
            mismatches += st.mismatched_elements
            steps.append({"tokens": st.tokens, "mismatched_elements": st.mismatched_elements,
                          "rel_err_vs_exact": float(np.linalg.norm(st.out - exact)
                                                    / np.linalg.norm(exact))})
        e2e_cmds = len(rtl.cycles)
        e2e_cycles = sum(max(c) for _, _, c in rtl.cycles)
        summary["end_to_end"] = {"commands": e2e_cmds, "steps": steps,
                                 "mismatched_elements": mismatches, "cycles": e2e_cycles}
        # 2. per unit: random streams on bank 0
        say(f"per unit: {args.random_seeds} random command streams on bank 0")
        table: dict[str, dict[str, float]] = defaultdict(
            lambda: {"commands": 0, "mismatches": 0, "cycles": 0})
        n0 = len(rtl.cycles)
        total = bad = rejected = 0
        for seed in range(args.seed, args.seed + args.random_seeds):
            cmds, expected, rej = build_stream(geom, seed, args.random_commands)
            rejected += rej
            rtl.execute(0, isa.reset())
            for cmd, exp in zip(cmds, expected, strict=True):
                (got,) = rtl.execute(0, cmd)
                name = cmd.opcode.name if isinstance(cmd.opcode, Opcode) else "INVALID"
                row = table[name]
                row["commands"] += 1
                row["cycles"] += rtl.last_cycles[0]
                if got != exp:
                    row["mismatches"] += 1
                    bad += 1
                total += 1
        for row in table.values():
            row["mean_cycles"] = row.pop("cycles") / max(row["commands"], 1)
        summary["per_unit"] = {"commands": total, "rejected_random": rejected,
                               "mismatches": bad, "by_opcode": dict(sorted(table.items()))}
        summary["rtl_commands"] = len(rtl.cycles) - n0 + e2e_cmds
        summary["sim_seconds"] = time.perf_counter() - started
    summary["total_seconds"] = time.perf_counter() - t0
    summary["ok"] = mismatches == 0 and bad == 0
    return summary


def _report(s: dict[str, object]) -> str:
    c = s["config"]
    e = s["end_to_end"]
    u = s["per_unit"]
    lines = [
        f"aqpim compare: {c['heads']} KV heads x {c['tokens']} tokens (+{c['steps']} decode "
        f"steps) over {c['banks']} RTL banks, D={c['head_dim']} M={c['subspaces']} "
        f"K={c['centroids']} ({c['bits_per_element']:g} bits/element)",
        f"end to end: {e['commands']} commands, {e['cycles']} bank cycles, "
        f"{e['mismatched_elements']} mismatched output elements",
    ]
    for st in e["steps"]:
        lines.append(f"  {st['tokens']} tokens: RTL vs golden mismatches "
                     f"{st['mismatched_elements']}, "
                     f"rel. error vs exact {st['rel_err_vs_exact']:.4f}")
    lines.append(f"per unit (random streams): {u['commands']} commands "
                 f"({u['rejected_random']} rejected on purpose), {u['mismatches']} mismatches")
    lines.append(f"  {'opcode':<13}{'commands':>9}{'mismatch':>9}{'mean cycles':>13}")
    for name, row in u["by_opcode"].items():
        lines.append(f"  {name:<13}{row['commands']:>9}{row['mismatches']:>9}"
                     f"{row['mean_cycles']:>13.1f}")
    lines.append(f"{'OK' if s['ok'] else 'MISMATCH'} ({s['total_seconds']:.1f} s incl. build)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aqpim compare", description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--banks", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--subspaces", "-M", type=int, default=16)
    p.add_argument("--centroids", "-K", type=int, default=16)
    p.add_argument("--capacity", type=int, default=64,
                   help="token capacity per bank (0: just enough; 64 shares the test build)")
    p.add_argument("--iters", type=int, default=8, help="k-means iterations")
    p.add_argument("--random-seeds", type=int, default=3)
    p.add_argument("--random-commands", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON document on stdout, nothing else")
    p.add_argument("-v", "--verbose", action="store_true",
                   help=f"show the build and simulator logs instead of writing them to {LOG}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    for name in ("heads", "tokens", "banks", "steps", "random_seeds", "random_commands"):
        if getattr(args, name) < (0 if name in ("steps", "random_seeds") else 1):
            print(f"aqpim compare: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    from aqpim.commands.console import logged

    try:
        # The build's and the simulator's logs go to a file: stdout carries the summary (or
        # the JSON) only.
        with logged("aqpim compare ", None if args.verbose else LOG) as console:
            summary = run_compare(args, console)
    except ValueError as e:
        print(f"aqpim compare: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1) if args.json else _report(summary))
    return 0 if summary["ok"] else 1
