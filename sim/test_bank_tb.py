"""cocotb testbench of the bank array (hw/bank.py ``BankArray``): a command server.

The test ``serve`` connects to the Unix socket named in the test parameters
(``{"socket": path, "banks": B, "idle": p, "backpressure": p, "watchdog": cycles}``) and
executes the requests it reads, one JSON line each::

    {"bank": b | null, "words": ["<hex>", ...]}      -> {"resps": [[hex, ...], ...],
                                                        "cycles": [c, ...]}
    {"quit": true}                                   -> the test ends (passes)

``bank`` null drives every bank with the same words at once (the all-bank broadcast). Words go
in through :class:`aqpim.sim.streams.StreamSource` (random idle cycles) and responses come out
through :class:`aqpim.sim.streams.StreamSink` (random back-pressure, stream rules checked);
``cycles`` is, per bank, the clock cycles from the command's start to its last response word.
A command that takes longer than ``watchdog`` cycles fails the test (a hang), and so does a
stream-rule violation. :class:`aqpim.sw.rtl_device.RtlDevice` is the client.
"""

from __future__ import annotations

import json
import random
import socket
from typing import Any

import cocotb
from amaranth.hdl import unsigned
from aqpim.sim import runner
from aqpim.sim.streams import StreamSink, StreamSource
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

WORD = unsigned(256)


async def _run_command(
    dut: Any, srcs: list[StreamSource], sinks: list[StreamSink], targets: list[int],
    words: list[int], watchdog: int,
) -> tuple[list[list[int]], list[int]]:
    start = srcs[0].cycle()
    base = {b: len(sinks[b].received) for b in targets}
    for b in targets:
        srcs[b].send_all(words)
    done: dict[int, int] = {}
    while len(done) < len(targets):
        await RisingEdge(dut.clk)
        for b in targets:
            if b in done:
                continue
            got = sinks[b].received[base[b]:]
            if got and len(got) >= 1 + ((got[0].raw >> 8) & 0xFFFF):
                done[b] = got[-1].cycle - start
        if srcs[0].cycle() - start > watchdog:
            pending = [b for b in targets if b not in done]
            raise AssertionError(
                f"watchdog: banks {pending} gave no complete response to header "
                f"{words[0]:#x} within {watchdog} cycles"
            )
    resps = []
    for b in targets:
        got = sinks[b].received[base[b]:]
        assert not srcs[b].queue, f"bank {b} answered before taking all command words"
        resps.append([t.raw for t in got])
    return resps, [done[b] for b in targets]


@cocotb.test()
async def serve(dut: Any) -> None:
    tp = runner.test_params()
    banks = int(tp["banks"])
    rng = random.Random(runner.seed())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    srcs = [StreamSource(dut, f"i_cmd{b}", dut.clk, WORD, rng, idle_prob=tp.get("idle", 0.2))
            for b in range(banks)]
    sinks = [StreamSink(dut, f"o_rsp{b}", dut.clk, WORD, rng,
                        backpressure_prob=tp.get("backpressure", 0.2)) for b in range(banks)]
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    for s in (*srcs, *sinks):
        s.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(tp["socket"])
    f = sock.makefile("rw", encoding="ascii")
    watchdog = int(tp.get("watchdog", 200_000))
    try:
        for line in f:
            req = json.loads(line)
            if req.get("quit"):
                break
            targets = list(range(banks)) if req["bank"] is None else [int(req["bank"])]
            words = [int(w, 16) for w in req["words"]]
            resps, cycles = await _run_command(dut, srcs, sinks, targets, words, watchdog)
            errors = [e for s in sinks for e in s.errors]
            if errors:
                raise AssertionError("stream rule violations: " + "; ".join(errors[:5]))
            f.write(json.dumps({"resps": [[format(w, "x") for w in r] for r in resps],
                                "cycles": cycles}) + "\n")
            f.flush()
    finally:
        f.close()
        sock.close()
