# amaranth: UnusedElaboratable=no
"""``aqpim synth``: the Yosys flow on a unit whose flip-flops and memory are known exactly.

The softmax unit registers ``s1_valid``, ``s1_n`` (``range(P + 2)``) and its credit count
(``range(4)``); its output FIFO (Amaranth's ``SyncFIFO``, 3 entries of the ``P + 1``-bit weight)
adds a level and two pointers (``range(4)``, ``range(3)``, ``range(3)``: 2 bits each) and a
``3 x (P + 1)`` storage memory; it holds a ``2^F x (P + 1)`` exp2 ROM; nothing else. The full
``--all`` run (minutes to an hour on 2 cores) is the ``slow`` test at the end.
"""

from __future__ import annotations

import json

import pytest
from aqpim.hw.synth import LEVEL_BUDGET, NAND2_WEIGHTS, nand2_area, synth_unit


@pytest.mark.parametrize("p", [15, 7])
def test_softmax_flops_and_rom_exact(p: int, tmp_path) -> None:
    res = synth_unit("softmax", {"exp_bits": p}, workdir=tmp_path)
    n_bits = (p + 1).bit_length()  # range(P + 2)
    assert res.flipflops == 1 + n_bits + 2 + 3 * 2
    assert [(m.name, m.width, m.depth) for m in res.memories] == [
        ("exp2_rom", p + 1, 256), ("skid.storage", p + 1, 3)]
    assert res.memory_bits == (p + 1) * (256 + 3)
    assert 0 < res.levels <= 2 * LEVEL_BUDGET
    assert res.nand2_ff > 5 * res.flipflops  # every flop weighs at least a DFF
    assert res.nand2_logic > 0 and res.nand2_logic_delay > 0
    assert (tmp_path / "yosys.log").exists()


def test_nand2_area_weights() -> None:
    logic, ffs = nand2_area({"$_NAND_": 3, "$_XOR_": 2, "$_DFF_P_": 1, "$_SDFFE_PP0P_": 2,
                             "$mem_v2": 1})
    assert logic == pytest.approx(3 * 1.0 + 2 * NAND2_WEIGHTS["$_XOR_"])
    # DFF 5.667; a flop with sync reset and enable adds a MUX2 (2.333) and an AND2 (1.333)
    assert ffs == pytest.approx(5.667 + 2 * (5.667 + 2.333 + 1.333))
    with pytest.raises(ValueError, match=r"\$_LUT4_"):
        nand2_area({"$_LUT4_": 1})


def test_cli_json_is_one_document(capsys) -> None:
    from aqpim.cli import main

    assert main(["synth", "softmax", "--param", "exp_bits=7", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    (unit,) = doc["units"]
    assert unit["unit"] == "softmax" and unit["flipflops"] == 1 + 4 + 2 + 6
    assert unit["level_margin"] == LEVEL_BUDGET - unit["levels"]


def test_cli_bad_input(capsys) -> None:
    from aqpim.cli import main

    assert main(["synth", "nosuchunit"]) == 2
    assert "nosuchunit" in capsys.readouterr().err
    assert main(["synth", "softmax", "--param", "exp_bits=x"]) == 2
    assert "'x'" in capsys.readouterr().err
    assert main(["synth", "softmax", "--param", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_synth_all_units(tmp_path) -> None:
    """Every registered unit at its defaults (bank excluded: about an hour on 2 cores)."""
    from aqpim.cli import main

    assert main(["synth", "--all", "--skip", "bank", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "synth.json").read_text())
    assert {u["unit"] for u in doc["units"]} >= {"softmax", "merge", "encoder"}
