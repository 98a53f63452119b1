"""`aqpim verilog --lint` on every registered unit at its default parameters.

The encoder's lint test covers flags and config files; this one makes sure no unit's generated
Verilog raises a `verilator -Wall` warning that hw/verilog.py does not waive with a reason (the
bank controller's FSMs once did).
"""

from __future__ import annotations

import pytest
from aqpim.hw.verilog import UNITS


@pytest.mark.cosim
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_every_unit_lints_clean(unit: str, tmp_path, capsys) -> None:
    from aqpim.cli import main

    rc = main(["verilog", unit, "--out", str(tmp_path), "--lint"])
    out = capsys.readouterr()
    assert rc == 0, out.out[-3000:] + out.err[-3000:]
    assert (tmp_path / f"{unit}.v").stat().st_size > 0
    assert "lint-only -Wall clean" in out.out
