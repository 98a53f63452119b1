# amaranth: UnusedElaboratable=no
"""cocotb testbench of the channel merge unit (hw/merge.py) against the golden model.

Run through pytest (tests/test_merge.py) with :func:`aqpim.sim.runner.build_and_run`. The
hardware parameters are the unit's (``Numerics`` fields, ``banks``, ``lanes``,
``guard_bits``); the test parameters are

``groups``
    rounds over every kind of :data:`aqpim.sim.merge_stimulus.KINDS` (random, empty banks, all
    empty, extreme maxima and sums, far-apart maxima, a single bank), run back to back;
``idle``, ``backpressure``
    probabilities of random idle cycles on both inputs and backpressure on ``o``;
``report``
    path of a JSON file that receives the number of checked beats and the errors.

Every ``o`` beat is compared in order with :func:`aqpim.sw.golden.intmodel.channel_merge`.
"""

from __future__ import annotations

import json
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from amaranth.hdl import unsigned
from aqpim.hw.merge import head_layout, merged_layout, out_in_layout
from aqpim.sim.merge_stimulus import KINDS, expected_beats, group_beats, make_group
from aqpim.sim.testbench import Testbench

from aqpim.numerics import MERGE_GUARD_BITS, Numerics

_NUM_FIELDS = {f.name for f in dc_fields(Numerics) if f.init}


@cocotb.test()
async def merge_groups(dut: Any) -> None:
    """Groups of every kind, back to back, bit-exact against the golden channel merge."""
    tb = Testbench(dut)
    p = tb.params
    num = Numerics(**{k: v for k, v in p.items() if k in _NUM_FIELDS})
    banks, lanes = int(p.get("banks", 64)), int(p.get("lanes", 4))
    guard = int(p.get("guard_bits", MERGE_GUARD_BITS))
    idle = float(tb.test_params.get("idle", 0.3))
    bp = float(tb.test_params.get("backpressure", 0.3))
    l_head, l_in = head_layout(num), out_in_layout(num, lanes)
    l_out = merged_layout(num, banks, lanes, guard)

    tb.start_clock()
    head = tb.source("i_head", unsigned(l_head.size), idle_prob=idle)
    outs = tb.source("i_out", unsigned(l_in.size), idle_prob=idle)
    sink = tb.sink("o", l_out, backpressure_prob=bp)
    await tb.reset()

    rng = np.random.default_rng(tb.seed)
    n = 0
    for _ in range(int(tb.test_params.get("groups", 1))):
        for kind in KINDS:
            parts = make_group(kind, banks, num, rng)
            h, o = group_beats(parts, l_head, l_in, lanes)
            head.send_all(h)
            outs.send_all(o)
            for beat in expected_beats(parts, num, lanes, guard):
                tb.expect(beat)
                n += 1
    await sink.wait_for(n, timeout_cycles=20 * n * banks + 1000)
    tb.check(sink.received)
    report = {"seed": tb.seed, "checked": tb.checked, "errors": tb.errors[:20]}
    if tb.test_params.get("report"):
        Path(tb.test_params["report"]).write_text(json.dumps(report, indent=1) + "\n")
    tb.assert_ok()
