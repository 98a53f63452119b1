"""Code collector of the bank: WRITE_KV's codes from the encoder into the code storage.

The encoder returns a token's codes in input order, M key codes then M value codes (``i_code``,
always ready). The collector places each in the key or value column register at the token's
slot (``tpc`` tokens per 256-bit column), and at the token's last code writes both columns
(``k_write``, ``v_write``) in that cycle. A token that starts inside a column continues the
stored column: the sequencer has the reader fetch it (``i_reload``), and a token that opens a
column starts from zeros (append only, so the rest of a column is always zero).

``ctrl.start`` (the header check of a WRITE_KV) sets the first token to ``ctrl.first`` and
clears ``ctrl.written``, the tokens written since. Throughput: one code per cycle; latency:
the columns are written in the cycle of the token's last code.
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
from aqpim.geometry import Geometry

__all__ = ["CodeCollector", "collect_control"]

W = isa.WORD_BITS


def collect_control(geometry: Geometry) -> wiring.Signature:
    """The sequencer's side: start strobe and first token out, tokens written in."""
    return wiring.Signature({
        "start": Out(1),
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
        port = WritePort.Signature(addr_width=ceil_log2(geometry.columns_per_head),
                                   shape=unsigned(W))
        super().__init__({
            "ctrl": In(collect_control(geometry)),
            "i_code": In(stream.Signature(code_layout)),
            "i_reload": In(stream.Signature(reload_layout())),
            "k_write": In(port),
            "v_write": In(port),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g = self._g
        n = g.num
        M, tpc = n.subspaces, g.tokens_per_column
        log_tpc, log_m = ceil_log2(tpc), ceil_log2(M)
        column = data.ArrayLayout(unsigned(n.code_bits), tpc * M)  # token-major: t * M + m

        kcol = Signal(column)
        vcol = Signal(column)
        cidx = Signal(range(2 * M))  # code of the current token: keys 0..M-1, values M..2M-1
        cur = Signal.like(self.ctrl.first)  # token being collected
        written = self.ctrl.written
        tslot = cur[:log_tpc]
        code = self.i_code.payload.code
        pos = (tslot << log_m) | cidx[:log_m]

        # A token starting inside a column continues the stored one; at a column start, zeros.
        with m.If(self.ctrl.start):
            m.d.sync += [cur.eq(self.ctrl.first), cidx.eq(0), written.eq(0)]
        m.d.comb += self.i_reload.ready.eq(1)
        with m.If(self.i_reload.valid):
            m.d.sync += [kcol.eq(Mux(tslot == 0, 0, self.i_reload.payload.k)),
                         vcol.eq(Mux(tslot == 0, 0, self.i_reload.payload.v))]

        # The value column goes to memory with the token's last code already in place.
        v_next = Signal(column)
        m.d.comb += v_next.eq(vcol)
        with m.If(self.i_code.valid & (cidx >= M)):
            m.d.comb += v_next[pos].eq(code)
        for port, col in ((self.k_write, kcol), (self.v_write, v_next)):
            m.d.comb += [port.addr.eq(cur >> log_tpc), port.data.eq(col)]

        # Place each code; at the token's last code write both columns and move on, starting
        # fresh columns when the next token opens one.
        m.d.comb += self.i_code.ready.eq(1)
        with m.If(self.i_code.valid):
            m.d.sync += [cidx.eq(Mux(cidx == 2 * M - 1, 0, cidx + 1)), vcol.eq(v_next)]
            with m.If(cidx < M):
                m.d.sync += kcol[pos].eq(code)
            with m.If(cidx == 2 * M - 1):
                m.d.comb += [self.k_write.en.eq(1), self.v_write.en.eq(1)]
                m.d.sync += [cur.eq(cur + 1), written.eq(written + 1)]
                with m.If(((cur + 1) & (tpc - 1)) == 0):
                    m.d.sync += [kcol.eq(0), vcol.eq(0)]
        return m
