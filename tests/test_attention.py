"""Co-simulation of the bank attention path (hw/attention.py) under Verilator through cocotb.

One Verilator build per parameter set (``build/sim/attention/<hash>/``); each run streams many
stimulus cases back to back through one DUT with random idle cycles on every input and random
backpressure on the output, checks every partial bit for bit against
:func:`aqpim.sw.golden.intmodel.bank_partial`, measures the throughput (1 column/cycle in pass 1,
1 token/cycle in pass 2) and, for one synthetic head spread over banks, checks the merged
output against the golden model exactly and reports its error against float attention.

Rerun a failing case with the seed its message prints: ``SEED=... .venv/bin/pytest '<node>'``;
``WAVES=1`` dumps a VCD into the build folder.
"""

from __future__ import annotations

import json

import pytest
from aqpim.hw.verilog import factory
from aqpim.sim.runner import build_and_run

# Hardware parameter sets of the issue: (M, K) with D = 128; T_cap 512 keeps builds small.
SETS = {
    "M64K16": {"head_dim": 128, "subspaces": 64, "centroids": 16, "token_capacity": 512},
    "M32K256": {"head_dim": 128, "subspaces": 32, "centroids": 256, "token_capacity": 512},
    "M16K256": {"head_dim": 128, "subspaces": 16, "centroids": 256, "token_capacity": 512},
    "M16K16": {"head_dim": 128, "subspaces": 16, "centroids": 16, "token_capacity": 512},
    # the value MAC with lanes = D (one bin per cycle); the others use the default 16 lanes
    "M64K16L128": {"head_dim": 128, "subspaces": 64, "centroids": 16, "token_capacity": 512,
                   "mac_lanes": 128},
}

# Every stimulus kind, two token counts (one not a multiple of 2 or 4 tokens per column),
# a full bank (T = capacity: sum and histogram at their widest), zero tokens and one token.
FULL_CASES = [
    ["random", 300], ["random", 257], ["wide", 100], ["one_code", 257], ["alternating", 64],
    ["lut_max", 512], ["lut_min", 33], ["extremes", 101], ["random", 0], ["random", 1],
    ["one_code", 1], ["alternating", 0], ["saturated", 512],
]
QUICK_CASES = [
    ["random", 130], ["random", 67], ["one_code", 67], ["alternating", 32], ["lut_max", 512],
    ["extremes", 33], ["random", 0], ["random", 1], ["saturated", 512],
]
E2E = {"tokens": 512, "banks": 4, "seed": 3}


def _run(name: str, cases: list, e2e: dict | None, tmp_path, *, forwarding: bool = True):
    params = dict(SETS[name])
    if not forwarding:
        params["forwarding"] = False
    report = tmp_path / "report.json"
    build_and_run(
        factory("attention"), unit="attention", params=params,
        test_module="aqpim.sim.test_attention_tb",
        test_params={"cases": cases, "e2e": e2e, "report": str(report)},
    )
    data = json.loads(report.read_text())
    print(f"\n{name}: {json.dumps(data)}")
    return data


@pytest.mark.cosim
@pytest.mark.parametrize(
    "name", ["M64K16", pytest.param("M16K256", marks=pytest.mark.slow),
             pytest.param("M64K16L128", marks=pytest.mark.slow)])
def test_attention_quick(name: str, tmp_path) -> None:
    data = _run(name, QUICK_CASES, E2E if name == "M64K16" else None, tmp_path)
    assert data["columns_per_cycle"] == 1.0 and data["tokens_per_cycle"] == 1.0
    assert data["column_intervals"] > 50 and data["token_intervals"] > 50


@pytest.mark.cosim
@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETS))
def test_attention_full(name: str, tmp_path) -> None:
    data = _run(name, FULL_CASES, E2E, tmp_path)
    assert data["columns_per_cycle"] == 1.0 and data["tokens_per_cycle"] == 1.0
    # The exact check (RTL merge == golden merge) is in the testbench; the error against
    # float attention is reported. Against float PQ with the same codebooks, what is left is
    # the fixed-point and 8-bit quantization error, which must stay small.
    assert data["e2e"]["rtl_vs_float_pq_rel_l2_err"] < 0.1


@pytest.mark.cosim
@pytest.mark.slow
def test_attention_without_forwarding_fails(tmp_path) -> None:
    """The testbench catches a histogram without read-after-write forwarding."""
    with pytest.raises(AssertionError, match="cocotb testcases failed"):
        _run("M64K16", [["one_code", 40]], None, tmp_path, forwarding=False)
    errors = json.loads((tmp_path / "report.json").read_text())["errors"]
    assert len(errors) == 1 and errors[0].startswith("one_code T=40") and "out differs" in errors[0]
