"""Command sequencer of the bank: the FSM that runs one command at a time.

It takes the header word from ``i_cmd``, has the :class:`~aqpim.hw.bank_decode.CommandDecoder`
check it (the decoder's two stages: ``DECODE`` registers the checks, ``CHECK`` takes the
status, two cycles after the header), and then drives the other bank parts
through their control ports: data beats to the :class:`~aqpim.hw.bank_unpack.BeatUnpacker`
(``DATA``), column reads of the :class:`~aqpim.hw.bank_reader.ColumnReader` (``PASS`` for
SCORE / AGGREGATE, ``RSP_MEM`` for reads, ``WKV_LOAD`` for the column WRITE_KV continues), the
:class:`~aqpim.hw.bank_collect.CodeCollector` (``WKV_WAIT`` until every token is written), the
attention unit's partial (``AGG_WAIT``) and the :class:`~aqpim.hw.bank_response.ResponseMux`
(``RSP_HDR``, ``RSP_REG``, ``RSP_MEM``). It owns the bank state of docs/isa.md (token count,
loaded masks per head slot; the shared LUT / scores / partial flags with the slot owning each)
and the partial registers; the decoder sees the addressed slot's view of it.

A rejected command's ``length`` data beats are drained (``DRAIN``) and only a response header
goes out, so no command can hang the bank or change its state. Cycles per command are
docs/bank.md's table (header to decision 2 cycles).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from amaranth.hdl import C, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from aqpim.hw.attention import partial_layout
from aqpim.hw.bank_collect import collect_control
from aqpim.hw.bank_decode import counts, decode_bus, header_head, slot_index, sub_index
from aqpim.hw.bank_reader import read_control
from aqpim.hw.bank_response import Select, response_control
from aqpim.hw.bank_unpack import unpack_control
from aqpim.hw.command import (
    Command,
    CommandWord,
    Opcode,
    Status,
    bank_slots_layout,
    bank_state_layout,
)

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import Geometry

__all__ = ["BankSequencer"]

W = isa.WORD_BITS


# The sequencer's states, the first the reset state.
_STATES = ("IDLE", "DECODE", "CHECK", "DRAIN", "DATA", "WKV_LOAD", "WKV_LOAD2", "WKV_WAIT",
           "PASS", "AGG_WAIT", "RSP_HDR", "RSP_REG", "RSP_MEM")


class _OneHot:
    """A one-hot state machine: one flip-flop per state.

    ``state(name)`` is an ``m.If`` on the state's flip-flop (states are separate ``If``s, one of
    them true); ``go(name)`` inside it moves to ``name`` at the next edge. Each state's next
    value is an OR of the conditions of the edges into it (and its own bit while no edge out
    fires): no binary state decode and no priority mux over every state in front of the
    flip-flops, which an ``m.FSM`` (binary-encoded, left so by Yosys as it has a reset value)
    puts on the bank's control path (docs/silicon.md, "The final bank").
    """

    def __init__(self, m: Module, names: tuple[str, ...]) -> None:
        self._m = m
        self.bit = {n: Signal(name=f"st_{n.lower()}", init=int(i == 0))
                    for i, n in enumerate(names)}
        self._enter = {n: Signal(name=f"enter_{n.lower()}") for n in names}
        self._leave = {n: Signal(name=f"leave_{n.lower()}") for n in names}
        self._cur: str | None = None

    @contextmanager
    def state(self, name: str) -> Iterator[None]:
        if self._cur is not None:
            raise RuntimeError(f"state {name!r} inside state {self._cur!r}")
        self._cur = name
        with self._m.If(self.bit[name]):
            yield
        self._cur = None

    def go(self, name: str) -> None:
        if self._cur is None or self._cur == name:
            raise RuntimeError(f"go({name!r}) outside a state or to its own state")
        self._m.d.comb += [self._enter[name].eq(1), self._leave[self._cur].eq(1)]

    def entering(self, name: str) -> Signal:
        """High in the cycle before ``name``'s flip-flop is set by an edge into it."""
        return self._enter[name]

    def close(self) -> None:
        """The state flip-flops' next values (after every state's ``go``)."""
        self._m.d.sync += [b.eq(self._enter[n] | (b & ~self._leave[n]))
                           for n, b in self.bit.items()]


class BankSequencer(wiring.Component):
    """Runs commands (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry`.
    """

    def __init__(self, *, geometry: Geometry) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        super().__init__({
            "i_cmd": In(stream.Signature(unsigned(W))),
            "o_data": Out(stream.Signature(unsigned(W))),
            "decode": Out(decode_bus(geometry)),
            "read": Out(read_control(geometry)),
            "unpack": Out(unpack_control()),
            "collect": Out(collect_control(geometry)),
            "respond": Out(response_control(geometry)),
            "i_partial": In(stream.Signature(partial_layout(geometry.num, geometry.queries))),
            "unit_rst": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g = self._g
        Mk, Mv = g.key.subspaces, g.value.subspaces
        cmd, rsp = self.i_cmd, self.respond

        # The latched header, the status decided for it, the data beats still to come.
        hdr = Signal(Command)
        op = hdr.opcode
        status = Signal(Status)
        left = Signal(range(1 << 16))
        rsp_len = Signal(unsigned(isa.RESPONSE_FIELDS["length"][1]))
        state = Signal(bank_slots_layout(g))  # every slot's; the shared parts tagged
        head = header_head(hdr)
        slot = slot_index(head, g.heads)
        # the command's slot as the checks see it: the shared LUT, scores and partials count
        # only where this slot owns them (golden device: lut_head == head, ...)
        view = Signal(bank_state_layout(g))
        m.d.comb += [
            view.tokens.eq(state.tokens[slot]),
            view.k_mask.eq(state.k_mask[slot]),
            view.v_mask.eq(state.v_mask[slot]),
            view.luts.eq(state.luts),
            view.partials.eq(state.partials),
            view.lut.eq(state.lut & (state.lut_head == head)),
            view.scores.eq(state.scores & (state.scores_head == head)),
            view.partial.eq(state.partial & (state.partial_head == head)),
        ]
        # Per slot, the decoder's token-count figures (used columns, free room), registered: a
        # token count changes only on the way into RSP_HDR (WRITE_KV, RESET), and the next
        # DECODE is at least two cycles later (RSP_HDR, IDLE), so the copy one cycle behind is
        # always current there. Keeps their adders out of the decoder's first stage.
        slot_counts = []
        for s in range(g.heads):
            reg = Signal(self.decode.counts.shape(), name=f"counts{s}",
                         init=counts(0, g))  # the state's reset: no tokens
            m.d.sync += [reg[k].eq(v) for k, v in counts(state.tokens[s], g).items()]
            slot_counts.append(reg)
        if g.heads == 1:
            m.d.comb += self.decode.counts.eq(slot_counts[0])
        else:
            with m.Switch(slot):
                for s in range(g.heads):
                    with m.Case(s):
                        m.d.comb += self.decode.counts.eq(slot_counts[s])
        nq = g.queries
        # the partial registers: one (max, sum, out[D]) per query head (GQA)
        partials = [Signal(partial_layout(g.num), name=f"partial{q}" if q else "partial")
                    for q in range(nq)]
        partial = partials[0]
        cb = hdr.params.load_cb
        m.d.comb += [
            self.decode.header.eq(hdr), self.decode.state.eq(view),
            self.read.request.eq(self.decode.read), self.read.tokens.eq(view.tokens),
            self.unpack.header.eq(hdr), self.collect.first.eq(view.tokens),
            self.collect.slot.eq(slot),
            rsp.header.status.eq(status), rsp.header.opcode.eq(op), rsp.header.length.eq(rsp_len),
            rsp.state.eq(state),
            self.o_data.payload.eq(cmd.payload),
        ]

        # READ_PARTIAL q answers from query head q's registers
        if nq == 1:
            m.d.comb += rsp.partial.eq(partial)
        else:
            with m.Switch(hdr.params.read_partial.subspace):
                for q in range(nq):
                    with m.Case(q):
                        m.d.comb += rsp.partial.eq(partials[q])

        fsm = _OneHot(m, _STATES)
        go = fsm.go
        # Latch a header word; decide next cycle (keeps the checks off the input path).
        with fsm.state("IDLE"):
            m.d.comb += cmd.ready.eq(1)
            with m.If(cmd.valid):
                header = CommandWord(cmd.payload).header
                m.d.sync += [hdr.eq(header), left.eq(header.length)]
                go("DECODE")

        # The decoder registers its checks and the read request (two stages, docs/bank.md).
        with fsm.state("DECODE"):
            m.d.comb += self.decode.en.eq(1)
            go("CHECK")

        with fsm.state("CHECK"):
            ok = self.decode.ok
            m.d.sync += [status.eq(self.decode.status),
                         rsp_len.eq(Mux(ok, self.decode.rsp_length, 0))]
            m.d.comb += self.unpack.start.eq(1)
            with m.If(~ok):
                go("DRAIN")
            with m.Else():
                with m.Switch(op):
                    with m.Case(Opcode.RESET):
                        m.d.comb += self.unit_rst.eq(1)
                        m.d.sync += state.eq(0)
                        go("RSP_HDR")
                    with m.Case(Opcode.LOAD_CB, Opcode.LOAD_LUT):
                        go("DATA")
                    with m.Case(Opcode.WRITE_KV):
                        # new tokens: this slot's scores no longer cover every token
                        m.d.comb += [self.collect.start.eq(1), self.read.start.eq(1)]
                        with m.If(state.scores_head == head):
                            m.d.sync += state.scores.eq(0)
                        go("WKV_LOAD")
                    with m.Case(Opcode.SCORE, Opcode.AGGREGATE):
                        # SCORE restarts the attention path: a head may be rescored
                        m.d.comb += [self.unit_rst.eq(op == Opcode.SCORE),
                                     self.read.start.eq(1)]
                        go("PASS")
                    with m.Default():
                        go("RSP_HDR")

        # A rejected command: swallow its data beats, then answer with the status alone.
        with fsm.state("DRAIN"):
            m.d.comb += cmd.ready.eq(left != 0)
            with m.If(left == 0):
                go("RSP_HDR")
            with m.Elif(cmd.valid):
                m.d.sync += left.eq(left - 1)

        # LOAD_CB / LOAD_LUT / WRITE_KV data beats go to the unpacker.
        with fsm.state("DATA"):
            m.d.comb += [self.o_data.valid.eq(cmd.valid), cmd.ready.eq(self.o_data.ready)]
            with m.If(cmd.valid & self.o_data.ready):
                m.d.sync += left.eq(left - 1)
            with m.If(self.unpack.last):
                with m.Switch(op):
                    with m.Case(Opcode.LOAD_CB):  # the K-th centroid
                        with m.If(cb.kv):
                            m.d.sync += state.v_mask[slot].eq(
                                view.v_mask | (C(1, Mv) << sub_index(cb.subspace, Mv)))
                        with m.Else():
                            m.d.sync += state.k_mask[slot].eq(
                                view.k_mask | (C(1, Mk) << sub_index(cb.subspace, Mk)))
                        go("DRAIN")
                    with m.Case(Opcode.LOAD_LUT):
                        with m.If(left == 1):
                            # q = 0 starts a set, q appends: q + 1 LUTs loaded
                            m.d.sync += [state.lut.eq(1), state.lut_head.eq(head),
                                         state.scores.eq(0),
                                         state.luts.eq(hdr.params.load_lut.subspace + 1)]
                            go("DRAIN")
                    with m.Case(Opcode.WRITE_KV):  # a vector done; the last one?
                        with m.If(left == 0):
                            go("WKV_WAIT")

        # WRITE_KV: the reader issues the column read, the memory answers a cycle later.
        with fsm.state("WKV_LOAD"):
            go("WKV_LOAD2")
        with fsm.state("WKV_LOAD2"):
            go("DATA")
        with fsm.state("WKV_WAIT"):
            with m.If(self.collect.written == hdr.params.write_kv.count):
                m.d.sync += state.tokens[slot].eq(view.tokens + hdr.params.write_kv.count)
                go("RSP_HDR")

        # SCORE / AGGREGATE: code columns stream from the reader into the attention path.
        with fsm.state("PASS"):
            with m.If(~self.read.busy):
                with m.If(op == Opcode.SCORE):
                    m.d.sync += [state.scores.eq(1), state.scores_head.eq(head)]
                    go("RSP_HDR")
                with m.Else():
                    go("AGG_WAIT")
        with fsm.state("AGG_WAIT"):
            m.d.comb += self.i_partial.ready.eq(1)
            got = self.i_partial.payload
            with m.If(self.i_partial.valid):
                if nq == 1:
                    m.d.sync += partial.eq(got)
                    done = 1
                else:  # G partials in query order; the pass ends with the last
                    with m.Switch(got.query):
                        for q in range(nq):
                            with m.Case(q):
                                m.d.sync += [partials[q][f].eq(got[f]) for f in
                                             ("max", "sum", "tokens", "overflow", "out")]
                    done = got.query == nq - 1
                with m.If(done):
                    m.d.sync += [state.partial.eq(1), state.partial_head.eq(head),
                                 state.scores.eq(0), state.partials.eq(state.luts)]
                    go("RSP_HDR")

        # Responses: the header word, then the data beats of read commands.
        self._respond(m, fsm, op, rsp_len)
        fsm.close()
        # The response select, registered: set as a response state is entered, so the
        # response mux's valid (and the ``taken`` the next-state logic reads) starts at a
        # flip-flop.
        sel = Signal(Select)
        m.d.comb += rsp.select.eq(sel)
        with m.If(fsm.entering("RSP_HDR")):
            m.d.sync += sel.eq(Select.HEADER)
        with m.Elif(fsm.entering("RSP_REG")):
            m.d.sync += sel.eq(Mux(op == Opcode.READ_STATUS, Select.STATUS, Select.PARTIAL))
        with m.Elif(fsm.entering("RSP_MEM")):
            m.d.sync += sel.eq(Select.MEMORY)
        with m.Elif(fsm.entering("IDLE")):
            m.d.sync += sel.eq(Select.NONE)
        return m

    def _respond(self, m: Module, fsm: _OneHot, op, rsp_len) -> None:
        """The response states: the header word, then read commands' beats."""
        rsp, go = self.respond, fsm.go
        with fsm.state("RSP_HDR"):
            with m.If(rsp.taken):
                with m.If(rsp_len == 0):
                    go("IDLE")
                with m.Elif(op.as_value().matches(Opcode.READ_CODES, Opcode.READ_CB,
                                                  Opcode.READ_LUT)):
                    m.d.comb += self.read.start.eq(1)
                    go("RSP_MEM")
                with m.Else():
                    go("RSP_REG")
        with fsm.state("RSP_REG"):
            with m.If(rsp.taken & rsp.last):
                go("IDLE")
        with fsm.state("RSP_MEM"):
            with m.If(~self.read.busy):
                go("IDLE")
