"""A decode session on two devices: the driver's command stream on a device under test and on
the golden device, step by step, outputs compared bit for bit.

The demo, ``aqpim compare`` and the tests all run RTL-vs-golden through :class:`PairedDecode`,
so prefill, decode steps, the per-step cycle accounting and the comparison are written once.
The device under test is any :class:`aqpim.sw.host.device.Device` (the RTL bank array, a trace
recorder around it, or another golden device); cycles come from the Device protocol's
``last_cycles`` / ``last_batch_cycles``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from aqpim.sw.host.device import Device, DeviceWrapper
from aqpim.sw.host.driver import Driver
from aqpim.sw.host.golden_device import GoldenDevice

from aqpim.isa import Command, Response

__all__ = ["CycleLog", "PairedDecode", "StepResult"]


class CycleLog(DeviceWrapper):
    """A Device that passes commands through and keeps every command's per-bank cycles.

    ``records`` is a list of ``(bank, opcode, cycles)``; ``cycles`` is None for a device that
    counts none.
    """

    def __init__(self, inner: Device) -> None:
        super().__init__(inner)
        self.records: list[tuple[int | None, int, list[int] | None]] = []

    def execute(self, bank: int | None, cmd: Command) -> list[Response]:
        resps = self._inner.execute(bank, cmd)
        self.records.append((bank, int(cmd.opcode), self._inner.last_cycles))
        return resps

    def execute_batch(self, items: Sequence[tuple[int | None, Command]]) -> list[list[Response]]:
        items = list(items)
        results = self._inner.execute_batch(items)
        per = self._inner.last_batch_cycles or [None] * len(items)
        self.records += [(b, int(c.opcode), cyc) for (b, c), cyc in zip(items, per, strict=True)]
        return results

    def bank_cycles(self, start: int = 0, stop: int | None = None) -> list[int]:
        """Cycles each bank was busy over ``records[start:stop]`` (0 where none counted)."""
        tot = [0] * self.num_banks
        for bank, _op, cyc in self.records[start:stop]:
            if cyc is None:
                continue
            for b, c in zip(range(self.num_banks) if bank is None else [bank], cyc, strict=True):
                tot[b] += c
        return tot


@dataclass(frozen=True)
class StepResult:
    """One decode step on both devices.

    Attributes
    ----------
    tokens:
        Tokens per head after the step.
    query:
        The (H, D) queries of the step.
    out, golden:
        (H, D) outputs of the device under test and of the golden device.
    mismatched_elements:
        Elements where they differ (0: bit-exact).
    commands:
        Commands the step sent to the device under test.
    bank_cycles:
        Cycles each bank of the device under test spent on them.
    """

    tokens: int
    query: np.ndarray
    out: np.ndarray
    golden: np.ndarray
    mismatched_elements: int
    commands: int
    bank_cycles: list[int]

    @property
    def bit_exact(self) -> bool:
        return self.mismatched_elements == 0


class PairedDecode:
    """The same driver on ``device`` and on a fresh golden device of the same geometry.

    Parameters
    ----------
    device:
        The device under test.
    kv_heads, iters, seed, sinks, recent:
        The driver's parameters (:class:`aqpim.sw.host.driver.Driver`), the same for both.
    """

    def __init__(self, device: Device, *, kv_heads: int, iters: int = 8, seed: int = 0,
                 sinks: int = 0, recent: int = 0) -> None:
        self.log = CycleLog(device)
        win = {"kv_heads": kv_heads, "iters": iters, "seed": seed, "sinks": sinks,
               "recent": recent}
        self.driver = Driver(self.log, **win)
        self.golden = Driver(GoldenDevice(device.geometry, device.num_banks), **win)
        self.tokens = 0

    def prefill(self, k: np.ndarray, v: np.ndarray) -> None:
        """Prefill both devices with the (H, T, D) keys and values."""
        for drv in (self.golden, self.driver):
            drv.prefill(k, v)
        self.tokens = int(np.shape(k)[1])

    def step(self, q: np.ndarray, k_new: np.ndarray, v_new: np.ndarray) -> StepResult:
        """Append one token per head and attend with ``q`` on both devices."""
        mark = len(self.log.records)
        golden = self.golden.step(q, k_new, v_new)
        out = self.driver.step(q, k_new, v_new)
        self.tokens += 1
        return StepResult(
            tokens=self.tokens, query=np.asarray(q), out=out, golden=golden,
            mismatched_elements=int(np.count_nonzero(out != golden)),
            commands=len(self.log.records) - mark,
            bank_cycles=self.log.bank_cycles(mark),
        )
