"""Testbench base class for cocotb tests of stream-based units.

In the style of cocotb's examples/matrix_multiplier: one object owns the clock, the reset, the
stream drivers and monitors, the golden model's expectations and an in-order checker; each test
is short (build the testbench, start it, reset, drive, check). Randomness comes from one seeded
``random.Random`` (the run's ``SEED``), printed at start so a failure can be rerun.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from aqpim.sim import runner
from aqpim.sim.streams import StreamSink, StreamSource, Transfer

__all__ = ["Testbench"]


class Testbench:
    """Clock, reset, stream drivers and an in-order checker around one DUT.

    Parameters
    ----------
    dut:
        cocotb toplevel handle (an Amaranth component with ``clk`` and ``rst``).
    period_ns:
        Clock period.
    seed:
        Seed of the run; default :func:`aqpim.sim.runner.seed` (the ``SEED`` env var).
    """

    def __init__(self, dut: Any, *, period_ns: float = 10.0, seed: int | None = None) -> None:
        self.dut = dut
        self.period_ns = float(period_ns)
        self.seed = runner.seed() if seed is None else int(seed)
        self.rng = random.Random(self.seed)
        self.params = runner.params()
        self.test_params = runner.test_params()
        self.expected: deque[Any] = deque()
        self.errors: list[str] = []
        self.checked = 0
        self.sinks: list[StreamSink] = []
        dut._log.info(f"SEED={self.seed} params={self.params} test_params={self.test_params}")

    # --- building blocks ----------------------------------------------------------------------
    def source(self, name: str, shape: Any, *, idle_prob: float = 0.3) -> StreamSource:
        """A started :class:`StreamSource` on stream ``name`` drawing from the shared rng."""
        return StreamSource(
            self.dut, name, self.dut.clk, shape, self.rng, idle_prob=idle_prob,
            period_ns=self.period_ns,
        ).start()

    def sink(self, name: str, shape: Any, *, backpressure_prob: float = 0.3) -> StreamSink:
        """A started :class:`StreamSink` on stream ``name``; its protocol errors are checked."""
        s = StreamSink(
            self.dut, name, self.dut.clk, shape, self.rng, backpressure_prob=backpressure_prob,
            period_ns=self.period_ns,
        ).start()
        self.sinks.append(s)
        return s

    def start_clock(self) -> None:
        import cocotb
        from cocotb.clock import Clock

        cocotb.start_soon(Clock(self.dut.clk, self.period_ns, unit="ns").start())

    async def reset(self, cycles: int = 2) -> None:
        from cocotb.triggers import RisingEdge

        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def cycles(self, n: int) -> None:
        from cocotb.triggers import ClockCycles

        await ClockCycles(self.dut.clk, n)

    # --- checking -----------------------------------------------------------------------------
    def expect(self, value: Any) -> None:
        """Queue the golden model's next expected output (in order)."""
        self.expected.append(value)

    def check(self, got: list[Transfer]) -> None:
        """Compare transfers, in order, with the queued expectations; record mismatches."""
        for t in got:
            if not self.expected:
                self.errors.append(f"unexpected output {t.value} @cycle {t.cycle}")
                continue
            want = self.expected.popleft()
            if t.value != want:
                self.errors.append(
                    f"output #{self.checked}: got {t.value}, expected {want} @cycle {t.cycle}"
                )
            self.checked += 1

    def assert_ok(self) -> None:
        """Raise AssertionError listing (the first 20) mismatches and protocol errors."""
        errors = list(self.errors)
        for s in self.sinks:
            errors += s.errors
        if self.expected:
            errors.append(f"{len(self.expected)} expected outputs never arrived")
        if errors:
            head = "\n  ".join(errors[:20])
            more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise AssertionError(
                f"{len(errors)} errors (SEED={self.seed}):\n  {head}{more}"
            )
