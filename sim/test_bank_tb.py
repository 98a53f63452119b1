"""cocotb testbench of the bank array (hw/bank.py ``BankArray``): a command server.

The test ``serve`` connects to the Unix socket named in the test parameters
(``{"socket": path, "banks": B, "idle": p, "backpressure": p, "watchdog": cycles}``) and
executes the requests it reads, one JSON line each::

    {"bank": b | null, "words": ["<hex>", ...]}      -> {"resps": [[hex, ...], ...],
                                                        "cycles": [c, ...]}
    {"batch": [{"bank": b | null, "words": [...]}, ...]}
                                                     -> {"results": [{"resps": ..., "cycles":
                                                        ...}, ...]} in request order
    {"quit": true}                                   -> the test ends (passes)

``bank`` null drives every bank with the same words at once (the all-bank broadcast). Words go
in through :class:`aqpim.sim.streams.StreamSource` (random idle cycles) and responses come out
through :class:`aqpim.sim.streams.StreamSink` (random back-pressure, stream rules checked);
``cycles`` is, per bank, the clock cycles from the first rising edge at which the command's
words are offered to the one at which its last response word is taken (the words are queued
between edges, so the count does not depend on the order cocotb resumes coroutines in).
In a batch, the commands of different banks run at the same time (each bank's in order, with
no gap), as the banks of a channel do; a broadcast waits for every bank to finish what came
before it. A command's cycles are counted from its own start either way.
A command that takes longer than ``watchdog`` cycles fails the test (a hang), and so does a
stream-rule violation. :class:`aqpim.sim.rtl_device.RtlDevice` is the client.
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
from cocotb.triggers import FallingEdge, RisingEdge
from cocotb.utils import get_sim_time

from aqpim import isa

WORD = unsigned(256)


async def _run_command(
    dut: Any, srcs: list[StreamSource], sinks: list[StreamSink], targets: list[int],
    words: list[int], watchdog: int,
) -> tuple[list[list[int]], list[int]]:
    # Queue the words between two rising edges, so the sources see them at the next edge
    # whatever order cocotb resumes its coroutines in; the command's first cycle is that edge.
    await FallingEdge(dut.clk)
    start = int(get_sim_time(unit="ns") // srcs[0].period_ns) + 1
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
            if got and len(got) >= 1 + isa.response_length(got[0].raw):
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


async def _run_batch(
    dut: Any, srcs: list[StreamSource], sinks: list[StreamSink], banks: int,
    items: list[tuple[int | None, list[int]]], watchdog: int,
) -> list[tuple[list[list[int]], list[int]]]:
    """Run (bank, words) items; per-bank runs between broadcasts proceed bank-parallel."""
    out: list[tuple[list[list[int]], list[int]] | None] = [None] * len(items)

    async def bank_queue(b: int, idx: list[int]) -> None:
        for i in idx:
            out[i] = await _run_command(dut, srcs, sinks, [b], items[i][1], watchdog)

    i = 0
    while i < len(items):
        if items[i][0] is None:
            out[i] = await _run_command(dut, srcs, sinks, list(range(banks)), items[i][1],
                                        watchdog)
            i += 1
            continue
        per: dict[int, list[int]] = {}
        while i < len(items) and items[i][0] is not None:
            per.setdefault(int(items[i][0]), []).append(i)
            i += 1
        tasks = [cocotb.start_soon(bank_queue(b, idx)) for b, idx in per.items()]
        for t in tasks:
            await t
    return [r for r in out if r is not None]


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
            batch = req["batch"] if "batch" in req else [req]
            items = [(None if it["bank"] is None else int(it["bank"]),
                      [int(w, 16) for w in it["words"]]) for it in batch]
            done = await _run_batch(dut, srcs, sinks, banks, items, watchdog)
            errors = [e for s in sinks for e in s.errors]
            if errors:
                raise AssertionError("stream rule violations: " + "; ".join(errors[:5]))
            results = [{"resps": [[format(w, "x") for w in r] for r in resps],
                        "cycles": cycles} for resps, cycles in done]
            f.write(json.dumps({"results": results} if "batch" in req else results[0]) + "\n")
            f.flush()
    finally:
        f.close()
        sock.close()
