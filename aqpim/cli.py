"""``aqpim``: the command-line entry point.

Each sub-command lives in the module that owns its work and exposes ``main(argv) -> int``; this
file only dispatches, so adding a command never touches another unit's code, and ``aqpim demo``
does not import Amaranth or cocotb unless the command needs them.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Two-word commands ("bench perf") are looked up first.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("aqpim.commands.demo", "run one PQ-attention decode step (the main job)"),
    "verilog": ("aqpim.hw.verilog", "write the Verilog of a unit for a parameter set"),
    "synth": ("aqpim.hw.synth", "synthesize a unit to generic gates: area, flops, levels"),
    "compare": ("aqpim.commands.compare", "RTL-vs-golden comparison, per unit and end to end"),
    "bench golden": ("aqpim.commands.bench", "golden-model throughput against FAISS (JSON)"),
    "bench perf": ("aqpim.sw.perf.cli", "HBM3-PIM performance model against GPU and FP16 PIM"),
    "eval accuracy": ("aqpim.sw.eval.accuracy", "accuracy of PQ attention on activations"),
    "eval ppl": ("aqpim.sw.eval.ppl", "LLM perplexity with the KV cache compressed in the loop"),
}


def _usage() -> str:
    lines = ["usage: aqpim COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<15} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "aqpim COMMAND --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in COMMANDS:
            module = importlib.import_module(COMMANDS[name][0])
            return int(module.main(argv[words:]) or 0)
    print(f"aqpim: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
