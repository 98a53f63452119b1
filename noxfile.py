"""Task runner. ``nox`` alone runs lint and the default test subset (what CI runs).

Sessions: lint, tests (unit tests + representative co-simulation), cosim (the full
co-simulation matrix), verilog, synth, bench, demo, accuracy.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
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
    session.run("pytest", "-m", "not slow", *session.posargs)


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
    accurate configuration: about an hour on 2 cores (docs/silicon.md). JSON in build/synth/."""
    _install(session)
    session.run("aqpim", "synth", "--all", "--preset", "both", "--out", "build/synth",
                *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, JSON on stdout: golden model against FAISS, then the performance model."""
    _install(session)
    session.run("aqpim", "bench", "golden", *session.posargs)
    session.run("aqpim", "bench", "perf", "--json", "-")


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
