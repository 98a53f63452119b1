"""Code/column read streamer of the bank: one memory beat per cycle to the sink asked for.

A request ``{src, sink, base, count}`` on ``ctrl`` (a one-cycle ``start`` strobe) makes the
reader stream beats ``base .. base + count - 1`` of one of the bank's four memories (key codes,
value codes, codebook copy, LUT copy) to one sink:

- ``KEY`` / ``VALUE``: code columns for the attention unit's ``i_key`` / ``i_val``, as
  :func:`aqpim.hw.lut_accumulate.column_layout` (``ntok`` of the last used column is what
  remains of ``ctrl.tokens``; zero tokens give one ``ntok = 0, last = 1`` beat);
- ``RESPONSE``: raw beats for the response mux (READ_CODES / READ_CB / READ_LUT);
- ``RELOAD``: the stored key and value column side by side, for WRITE_KV to continue a column.

Latency: the first beat is offered 2 cycles after the ``start`` strobe (one cycle to issue the
read, one for the synchronous memory). Throughput: one beat per cycle (the next read is issued
while the current beat is taken: read-ahead, II = 1); back-pressure stalls the read port.
``ctrl.busy`` is low once the last beat has been taken.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2
from aqpim.hw.command import bank_state_layout
from aqpim.hw.lut_accumulate import column_layout

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import CodeSide, Geometry

__all__ = ["ColumnReader", "read_control", "Sink", "Source", "memory_depths",
           "read_request_layout", "reload_layout"]

W = isa.WORD_BITS


class Source(enum.Enum, shape=2):
    """The memory a request reads."""

    KEYS = 0
    VALUES = 1
    CODEBOOK = 2
    LUT = 3


class Sink(enum.Enum, shape=3):
    """Where the beats of a request go."""

    NONE = 0
    KEY = 1
    VALUE = 2
    RESPONSE = 3
    RELOAD = 4


def memory_depths(geometry: Geometry) -> dict[Source, int]:
    """Beats in each memory: per head slot (slot-major) the key and value code columns and the
    M_k + M_v codebooks; the G LUTs once (shared by the slots)."""
    g, h = geometry, geometry.heads
    cb = g.key.subspaces * g.key.cb_beats + g.value.subspaces * g.value.cb_beats
    return {Source.KEYS: h * g.key.columns_per_head, Source.VALUES: h * g.value.columns_per_head,
            Source.CODEBOOK: h * cb, Source.LUT: g.queries * g.lut_beats}


def read_request_layout(geometry: Geometry) -> data.StructLayout:
    """``base`` of ``src``; ``vbase`` the value column of a RELOAD (keys read at ``base``)."""
    depth = max(memory_depths(geometry).values())
    return data.StructLayout({"src": Source, "sink": Sink, "base": range(depth + 1),
                              "count": range(depth + 2),
                              "vbase": range(memory_depths(geometry)[Source.VALUES] + 1)})


def reload_layout() -> data.StructLayout:
    return data.StructLayout({"k": unsigned(W), "v": unsigned(W)})


def read_control(geometry: Geometry) -> wiring.Signature:
    """The sequencer's side: a request with its ``start`` strobe, the token count, busy."""
    return wiring.Signature({
        "start": Out(1),
        "request": Out(read_request_layout(geometry)),
        "tokens": Out(bank_state_layout(geometry)["tokens"].shape),
        "busy": In(1),
    })


class ColumnReader(wiring.Component):
    """Streams memory beats to the sink of the current request (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry`; sizes the four read ports and the columns.
    """

    def __init__(self, *, geometry: Geometry) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        ports = {
            f"{src.name.lower()}_mem": In(ReadPort.Signature(addr_width=ceil_log2(depth),
                                                              shape=unsigned(W)))
            for src, depth in memory_depths(geometry).items()
        }
        super().__init__({
            "ctrl": In(read_control(geometry)),
            **ports,
            "o_key": Out(stream.Signature(column_layout(geometry.num.keys))),
            "o_val": Out(stream.Signature(column_layout(geometry.num.values))),
            "o_data": Out(stream.Signature(unsigned(W))),
            "o_reload": Out(stream.Signature(reload_layout())),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g, req = self._g, self.ctrl.request
        mems = {Source.KEYS: self.keys_mem, Source.VALUES: self.values_mem,
                Source.CODEBOOK: self.codebook_mem, Source.LUT: self.lut_mem}

        # Read-ahead: a beat is read whenever the presented one is taken (or none is presented).
        src = Signal(Source)
        sink = Signal(Sink)
        base = Signal.like(req.base)
        vbase = Signal.like(req.vbase)
        nxt = Signal.like(req.base)
        left = Signal.like(req.count)
        valid = Signal()
        idx = Signal.like(req.base)  # offset of the beat now presented
        ready = Signal()
        beat = Signal(W)
        adv = ~valid | ready
        for s, port in mems.items():
            # a RELOAD reads the value column at its own address (the sides' layouts differ)
            first = Mux(sink == Sink.RELOAD, vbase, base) if s == Source.VALUES else base
            m.d.comb += [port.addr.eq(first + nxt), port.en.eq(adv)]
        with m.Switch(src):
            for s, port in mems.items():
                with m.Case(s):
                    m.d.comb += beat.eq(port.data)
        with m.If(adv):
            with m.If(left != 0):
                m.d.sync += [valid.eq(1), nxt.eq(nxt + 1), left.eq(left - 1), idx.eq(nxt)]
            with m.Else():
                m.d.sync += valid.eq(0)
        # A new request replaces an idle one (the sequencer only starts one when not busy).
        with m.If(self.ctrl.start):
            m.d.sync += [src.eq(req.src), sink.eq(req.sink), base.eq(req.base), nxt.eq(0),
                         left.eq(req.count), vbase.eq(req.vbase)]
        m.d.comb += self.ctrl.busy.eq(valid | (left != 0))

        # Code columns of each side, gathered into groups of columns_per_token beats.
        key_ready = self._group(m, self.o_key, g.key, beat, idx, valid, sink == Sink.KEY, "key")
        val_ready = self._group(m, self.o_val, g.value, beat, idx, valid, sink == Sink.VALUE,
                                "val")
        m.d.comb += [
            self.o_data.payload.eq(beat),
            self.o_reload.payload.k.eq(self.keys_mem.data),
            self.o_reload.payload.v.eq(self.values_mem.data),
        ]

        # Route the presented beat to the request's sink and take that sink's ready.
        outs = {Sink.RESPONSE: self.o_data, Sink.RELOAD: self.o_reload}
        with m.Switch(sink):
            with m.Case(Sink.KEY):
                m.d.comb += ready.eq(key_ready)
            with m.Case(Sink.VALUE):
                m.d.comb += ready.eq(val_ready)
            for s, port in outs.items():
                with m.Case(s):
                    m.d.comb += [port.valid.eq(valid), ready.eq(port.ready)]
        return m

    def _group(self, m: Module, out, side: CodeSide, beat, idx, valid, selected,  # noqa: PLR0913
               name: str):
        """Drive ``out`` with a side's groups; returns the ready for a presented beat.

        A group is ``cpt`` consecutive columns (one token over several columns) or one column
        of ``tpc`` tokens; the first ``cpt - 1`` beats of a group are kept here (ready at once)
        and the last goes out with them. The last group's ``ntok`` is what remains of the
        token count; zero tokens give one ``ntok = 0, last = 1`` group of the one beat read.
        """
        tokens = self.ctrl.tokens
        tpc, cpt = side.tokens_per_column, side.columns_per_token
        log_tpc, log_cpt = tpc.bit_length() - 1, cpt.bit_length() - 1
        gidx = idx >> log_cpt  # group of the presented beat
        used = (tokens + (tpc - 1)) >> log_tpc
        last = gidx == Mux(used == 0, 0, used - 1)
        col = out.payload
        m.d.comb += [
            col.last.eq(last),
            col.ntok.eq(Mux(tokens == 0, 0, Mux(last, tokens - (gidx << log_tpc), tpc))),
        ]
        if cpt == 1:
            m.d.comb += [col.codes.eq(beat), out.valid.eq(valid & selected)]
            return out.ready
        # the earlier columns of the group, in order (the code stream is little-endian)
        held = Signal(data.ArrayLayout(unsigned(W), cpt - 1), name=f"{name}_held")
        phase = idx[:log_cpt]
        whole = (phase == cpt - 1) | (tokens == 0)
        m.d.comb += [col.codes.eq(Cat(held.as_value(), beat)),
                     out.valid.eq(valid & selected & whole)]
        with m.If(valid & selected & ~whole):
            m.d.sync += held[phase].eq(beat)
        return Mux(whole, out.ready, 1)
