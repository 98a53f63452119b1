"""Response mux of the bank: the response header, then register or memory beats, on ``o_rsp``.

The sequencer selects what ``o_rsp`` carries (``ctrl.select``, a :class:`Select`):

- ``HEADER``: the :class:`aqpim.hw.command.ResponseHeader` (status, opcode, length);
- ``STATUS``: READ_STATUS's beats from the bank state (:func:`aqpim.hw.command.head_status_layout`);
- ``PARTIAL``: READ_PARTIAL's beats from the partial registers
  (:func:`aqpim.hw.command.partial_beats_layout`);
- ``MEMORY``: the reader's beats (``i_mem``) passed through, ready for ready.

Register beats are counted from 0 (reset while the header is offered); ``ctrl.last`` says the
beat now offered is the response's last, ``ctrl.taken`` that ``o_rsp`` handshakes this cycle.
Latency 0 (combinational), one word per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from aqpim.hw.attention import partial_layout
from aqpim.hw.command import (
    ResponseHeader,
    bank_slots_layout,
    head_status_layout,
    partial_beats_layout,
)

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import Geometry

__all__ = ["ResponseMux", "Select", "response_control"]

W = isa.WORD_BITS


class Select(enum.Enum, shape=3):
    """What ``o_rsp`` carries this cycle."""

    NONE = 0
    HEADER = 1
    STATUS = 2
    PARTIAL = 3
    MEMORY = 4


def response_control(geometry: Geometry) -> wiring.Signature:
    """The sequencer's side: selection, header, state and partial out; taken and last in."""
    return wiring.Signature({
        "select": Out(Select),
        "header": Out(ResponseHeader),
        "state": Out(bank_slots_layout(geometry)),
        "partial": Out(partial_layout(geometry.num)),
        "taken": In(1),
        "last": In(1),
    })


class ResponseMux(wiring.Component):
    """Drives ``o_rsp`` from the selected source (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry`.
    """

    def __init__(self, *, geometry: Geometry) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        super().__init__({
            "ctrl": In(response_control(geometry)),
            "i_mem": In(stream.Signature(unsigned(W))),
            "o_rsp": Out(stream.Signature(unsigned(W))),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g, ctrl = self._g, self.ctrl
        n = g.num
        M, Mv = n.subspaces, n.values.subspaces
        st, pt = ctrl.state, ctrl.partial

        # READ_STATUS: per head slot its tokens and flags, then its K and V masks; the shared
        # LUT, scores and partial flag the slot that owns them.
        status = Signal(data.ArrayLayout(head_status_layout(M, Mv), g.heads))
        for h in range(g.heads):
            info, flags = status[h].info, status[h].info.flags
            lut = st.lut & (st.lut_head == h)
            m.d.comb += [
                info.tokens.eq(st.tokens[h]),
                info.queries.eq(Mux(lut, st.luts, 0)),
                flags.k_codebook.eq(st.k_mask[h] == (1 << M) - 1),
                flags.v_codebook.eq(st.v_mask[h] == (1 << Mv) - 1),
                flags.lut.eq(lut),
                flags.scores.eq(st.scores & (st.scores_head == h)),
                flags.partial.eq(st.partial & (st.partial_head == h)),
                status[h].k_mask.bits.eq(st.k_mask[h]),
                status[h].v_mask.bits.eq(st.v_mask[h]),
            ]
        status_beats = data.View(data.ArrayLayout(unsigned(W), g.status_beats), status)

        # READ_PARTIAL: max, sum, out[0..D) as 64-bit words, zero-padded to whole beats.
        partial = Signal(partial_beats_layout(g))
        per = W // isa.PARTIAL_WORD_BITS
        for i, v in enumerate([pt.max, pt.sum, *[pt.out[j] for j in range(n.head_dim)]]):
            m.d.comb += partial[i // per][i % per].eq(v)

        # Register beats by index; out-of-range indices give zero, as no such beat is sent.
        idx = Signal(range(max(g.partial_beats, g.status_beats) + 1))
        beat = Signal(W)
        for sel, beats in ((Select.STATUS, status_beats), (Select.PARTIAL, partial)):
            with m.If(ctrl.select == sel):
                with m.Switch(idx):
                    for i in range(len(beats)):
                        with m.Case(i):
                            m.d.comb += beat.eq(beats[i])

        rsp = self.o_rsp
        with m.Switch(ctrl.select):
            with m.Case(Select.HEADER):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(ctrl.header)]
            with m.Case(Select.STATUS, Select.PARTIAL):
                m.d.comb += [rsp.valid.eq(1), rsp.payload.eq(beat)]
            with m.Case(Select.MEMORY):
                m.d.comb += [rsp.valid.eq(self.i_mem.valid), rsp.payload.eq(self.i_mem.payload),
                             self.i_mem.ready.eq(rsp.ready)]
        # ``last`` from a down-counter of the beats still to send (a compare with a constant;
        # an ``idx == length - 1`` subtract-and-compare sat on the sequencer's next-state path)
        left = Signal.like(ctrl.header.length)
        m.d.comb += [ctrl.taken.eq(rsp.valid & rsp.ready), ctrl.last.eq(left == 1)]
        with m.If(ctrl.select == Select.HEADER):
            m.d.sync += [idx.eq(0), left.eq(ctrl.header.length)]
        with m.Elif(ctrl.taken):
            m.d.sync += [idx.eq(idx + 1), left.eq(left - 1)]
        return m
