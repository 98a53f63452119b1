"""Code collector of the bank: WRITE_KV's codes from the encoder into the code storage.

The encoder returns a token's codes in input order, M_k key codes then M_v value codes
(``i_code``, always ready). Each side's codes are one little-endian bit stream (code m of token
t at bit ``(t*M + m) * b``, :class:`aqpim.geometry.CodeSide`); the collector keeps the open
256-bit column of each side in a register, places each code at its slot, and writes the column
(``k_write`` / ``v_write``) in the cycle of the code that fills it or of the side's last code
of a token. So a column holding several tokens is written at each of its tokens, and a token
over several columns writes each as it fills. A token that starts inside a column continues the
stored column: the sequencer has the reader fetch both sides' columns (``i_reload``), and a
token that opens a column starts from zeros (append only, so the rest of a column is always
zero).

Head slot ``s`` owns columns ``s * columns_per_head ..`` of each memory (``ctrl.slot``, held by
the sequencer for the whole command). ``ctrl.start`` (the header check of a WRITE_KV) sets the
first token to ``ctrl.first`` and
clears ``ctrl.written``, the tokens written since (counted at each token's last value code).
Throughput: one code per cycle; latency: a column is written in the cycle of its last code.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2
from aqpim.hw.bank_reader import reload_layout
from aqpim.hw.command import bank_state_layout

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import CodeSide, Geometry

__all__ = ["CodeCollector", "collect_control"]

W = isa.WORD_BITS


def collect_control(geometry: Geometry) -> wiring.Signature:
    """The sequencer's side: start strobe, head slot and its first token out, tokens written
    in."""
    return wiring.Signature({
        "start": Out(1),
        "slot": Out(range(max(2, geometry.heads))),  # 1 bit at H = 1: no zero-width port
        "first": Out(bank_state_layout(geometry)["tokens"].shape),
        "written": In(range(1 << isa.HEADER_FIELDS["count"][1])),
    })


class CodeCollector(wiring.Component):
    """Collects codes into key and value columns (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry`.
    code_layout:
        The encoder's ``o_code`` payload layout (``{sub, code}``).
    """

    def __init__(self, *, geometry: Geometry, code_layout: data.Layout) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        ports = [WritePort.Signature(addr_width=ceil_log2(geometry.heads * side.columns_per_head),
                                     shape=unsigned(W)) for side in (geometry.key, geometry.value)]
        super().__init__({
            "ctrl": In(collect_control(geometry)),
            "i_code": In(stream.Signature(code_layout)),
            "i_reload": In(stream.Signature(reload_layout())),
            "k_write": In(ports[0]),
            "v_write": In(ports[1]),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g = self._g
        Mk, Mv = g.key.subspaces, g.value.subspaces
        cidx = Signal(range(Mk + Mv))  # code of the current token: keys 0..Mk-1, then values
        written = self.ctrl.written
        with m.If(self.ctrl.start):
            m.d.sync += [cidx.eq(0), written.eq(0)]
        m.d.comb += [self.i_code.ready.eq(1), self.i_reload.ready.eq(1)]
        fire = self.i_code.valid
        with m.If(fire):
            m.d.sync += cidx.eq(Mux(cidx == Mk + Mv - 1, 0, cidx + 1))
            with m.If(cidx == Mk + Mv - 1):
                m.d.sync += written.eq(written + 1)
        self._side(m, g.key, self.k_write, self.i_reload.payload.k, fire & (cidx < Mk), cidx,
                   "k")
        self._side(m, g.value, self.v_write, self.i_reload.payload.v, fire & (cidx >= Mk),
                   cidx - Mk, "v")
        return m

    def _side(self, m: Module, side: CodeSide, port, reload, fire, sub, name: str) -> None:
        """One side's open column: place ``fire``'s code at its slot, write when due."""
        b, M = side.code_bits, side.subspaces
        tpc, cpt = side.tokens_per_column, side.columns_per_token
        cpc = isa.WORD_BITS // b  # codes per column
        col = Signal(range(side.columns_per_head + 1), name=f"{name}_col")
        slot = Signal(range(cpc), name=f"{name}_slot")
        reg = Signal(data.ArrayLayout(unsigned(b), cpc), name=f"{name}_reg")
        nxt = Signal.like(reg, name=f"{name}_next")

        # The first token's column and slot; a token opening a column starts from zeros.
        first = self.ctrl.first
        with m.If(self.ctrl.start):
            f_slot = (first[:ceil_log2(tpc)] * M) if tpc > 1 else 0
            m.d.sync += [col.eq((first >> ceil_log2(tpc)) * cpt), slot.eq(f_slot), reg.eq(0)]
        with m.If(self.i_reload.valid):
            m.d.sync += reg.eq(Mux(slot == 0, 0, reload))

        # The column goes to memory with the code already in place, when the code fills it or
        # ends the token's codes of this side; the slot's columns are its region of the memory.
        m.d.comb += [nxt.eq(reg), port.addr.eq(self.ctrl.slot * side.columns_per_head + col),
                     port.data.eq(nxt)]
        full = slot == cpc - 1
        with m.If(fire):
            m.d.comb += [nxt[slot].eq(self.i_code.payload.code[:b]),
                         port.en.eq(full | (sub == M - 1))]
            with m.If(full):
                m.d.sync += [reg.eq(0), slot.eq(0), col.eq(col + 1)]
            with m.Else():
                m.d.sync += [reg.eq(nxt), slot.eq(slot + 1)]
