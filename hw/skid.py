"""Output skid buffer in credit form, shared by the pipelined units (docs/silicon.md
"Skid buffers instead of a global stall").

A unit's pipeline advances every cycle (no stall enable) and its last stage writes an output
FIFO where its last register was. :class:`CreditSkid` builds that FIFO as the unit's ``skid``
submodule, drives the unit's output stream from it, and keeps the credit count ``pending``:
items taken by the unit that will make an output beat and have not been delivered. The unit
takes such an item only while :attr:`CreditSkid.room`, so no write ever finds the FIFO full
and the input's ready is a register compare, not a path from the output's ready.

Latency: none added. ``SyncFIFO`` reads asynchronously (an entry written in cycle t is on the
output in cycle t + 1, as the replaced register's was); at one entry ``SyncFIFOBuffered`` is a
plain register with the same timing (``SyncFIFO``'s one-word memory would have zero-width
addresses, which Verilator's lint rejects).
"""

from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal, Value
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered

__all__ = ["CreditSkid"]


class CreditSkid:
    """The output FIFO of ``depth`` entries and its credit count, built into module ``m``.

    ``out`` is the unit's output stream (``valid``, ``payload``, ``ready``); the unit writes
    with :meth:`write` and counts each item that will make an output beat with :meth:`take`.
    """

    def __init__(self, m: Module, out: object, depth: int) -> None:
        fifo_cls = SyncFIFOBuffered if depth == 1 else SyncFIFO
        width = Shape.cast(out.payload.shape()).width
        m.submodules.skid = self.fifo = fifo_cls(width=width, depth=depth)
        self._m = m
        self.depth = depth
        self.pending = Signal(range(depth + 1))
        self._give = out.valid & out.ready
        m.d.comb += [
            out.valid.eq(self.fifo.r_rdy),
            out.payload.eq(self.fifo.r_data),
            self.fifo.r_en.eq(out.ready),
        ]

    @property
    def room(self) -> Value:
        """The FIFO has room for one more item besides every item in flight."""
        return self.pending != self.depth

    @property
    def empty(self) -> Value:
        """Nothing taken is still in flight or waiting in the FIFO."""
        return self.pending == 0

    def take(self, fire: Value) -> None:
        """Count ``fire``, the input handshake of an item that will make an output beat."""
        m = self._m
        with m.If(fire & ~self._give):
            m.d.sync += self.pending.eq(self.pending + 1)
        with m.Elif(self._give & ~fire):
            m.d.sync += self.pending.eq(self.pending - 1)

    def write(self, data: Value, en: Value) -> None:
        """The pipeline's last stage: ``data`` enters the FIFO in cycles where ``en``."""
        self._m.d.comb += [self.fifo.w_data.eq(data), self.fifo.w_en.eq(en)]
