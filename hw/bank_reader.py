"""Read streamer of the bank: code columns from the code storage, read-back beats from the units.

A request ``{src, sink, base, count}`` on ``ctrl`` (a one-cycle ``start`` strobe) makes the
reader stream beats to one sink. Two kinds of source:

- Code storage (``KEYS``, ``VALUES``: the bank's DRAM rows): beats ``base .. base + count - 1``
  of the memory, to

  - ``KEY`` / ``VALUE``: code columns for the attention unit's ``i_key`` / ``i_val``, as
    :func:`aqpim.hw.lut_accumulate.column_layout` (``ntok`` of the last used column is what
    remains of ``ctrl.tokens``; zero tokens give one ``ntok = 0, last = 1`` beat);
  - ``RESPONSE``: raw beats for the response mux (READ_CODES);
  - ``RELOAD``: the stored key and value column side by side, for WRITE_KV to continue a
    column.

  Latency: the first beat is offered 2 cycles after the ``start`` strobe (one cycle to issue
  the read, one for the synchronous memory). Throughput: one beat per cycle (the next read is
  issued while the current beat is taken: read-ahead, II = 1); back-pressure stalls the read
  port.
- Working storage, for READ_CB / READ_LUT (sink ``RESPONSE``; there is no read-back copy):
  ``CB_KEYS`` / ``CB_VALUES`` read the K centroids of encoder subspace ``base`` from the
  encoder's codebook store (``cb_read``: slot s's keys at s (M_k + M_v) + m, its values after
  them; the store holds max(d_k, d_v) elements, the side's first d are sent), ``LUT`` the
  M_k x K entries of query head ``base`` from the LUT-accumulate unit (``lut_read``). One
  element (a centroid or a LUT entry) per cycle, packed as LOAD_CB / LOAD_LUT packs them
  (each element sign-extended to its ``elem_width`` / ``lut_width`` slot, unused slots of a
  last beat zero): a beat of E elements is offered E + 1 cycles after its first element's
  read (the unit's one-cycle read, then the packing register), and the next beat's elements
  are read meanwhile, so the last beat is offered N + 2 cycles after ``start`` (N elements: K
  for READ_CB, M_k K for READ_LUT; one beat per E cycles, 16 per beat at L = 16, against
  one beat per cycle from a memory copy). Where a beat holds one element (d x elem_width =
  256) each element waits for the one in flight: 2 cycles per beat. Back-pressure stops the
  element reads.
  The units answer these reads through their pipelines' own read ports, so they must be idle:
  the sequencer runs one command at a time.

``ctrl.busy`` is low once the last beat has been taken.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2
from aqpim.hw.command import bank_state_layout
from aqpim.hw.lut_accumulate import column_layout, lut_read_signature

from aqpim import isa
from aqpim.checks import check_instance
from aqpim.geometry import CodeSide, Geometry

__all__ = ["ColumnReader", "read_control", "Sink", "Source", "encoder_subspaces", "memory_depths",
           "read_request_layout", "reload_layout"]

W = isa.WORD_BITS


class Source(enum.Enum, shape=3):
    """What a request reads: code storage (KEYS, VALUES) or a unit's working storage."""

    KEYS = 0
    VALUES = 1
    CB_KEYS = 2  # a key codebook in the encoder's store (READ_CB kv = 0)
    CB_VALUES = 3  # a value codebook in the encoder's store (READ_CB kv = 1)
    LUT = 4  # a query head's LUT in the LUT-accumulate unit (READ_LUT)


class Sink(enum.Enum, shape=3):
    """Where the beats of a request go."""

    NONE = 0
    KEY = 1
    VALUE = 2
    RESPONSE = 3
    RELOAD = 4


def memory_depths(geometry: Geometry) -> dict[Source, int]:
    """Beats in each code memory: per head slot (slot-major) the key and value code columns.
    (Codebooks and LUTs are read from the units that hold them: no memory here.)"""
    g, h = geometry, geometry.heads
    return {Source.KEYS: h * g.key.columns_per_head, Source.VALUES: h * g.value.columns_per_head}


def encoder_subspaces(geometry: Geometry) -> int:
    """Codebooks in the bank's encoder: H x (M_k + M_v), slot-major."""
    return geometry.heads * (geometry.key.subspaces + geometry.value.subspaces)


def read_request_layout(geometry: Geometry) -> data.StructLayout:
    """``base``: the first beat of a code memory, the encoder subspace of a codebook or the
    query head of a LUT; ``vbase`` the value column of a RELOAD (keys read at ``base``)."""
    depth = max(*memory_depths(geometry).values(), encoder_subspaces(geometry),
                geometry.queries)
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
    """Streams beats to the sink of the current request (see the module docstring).

    Parameters (keyword-only)
    -------------------------
    geometry:
        The bank's :class:`aqpim.geometry.Geometry`; sizes the code read ports, the columns and
        the LUT read port.
    cb_read:
        The encoder's codebook read port, as the reader sees it
        (:attr:`aqpim.hw.codebook.PQGeometry.read_signature` of the bank's encoder: P centroids
        of max(d_k, d_v) elements per read).
    """

    def __init__(self, *, geometry: Geometry, cb_read: wiring.Signature) -> None:
        self._g = check_instance("geometry", geometry, Geometry)
        self._cb_sig = check_instance("cb_read", cb_read, wiring.Signature)
        vecs = cb_read.members["vecs"].shape
        if vecs.elem_shape.length < max(geometry.num.sub_dim, geometry.num.values.sub_dim):
            raise ValueError(f"cb_read's centroids of {vecs.elem_shape.length} elements are "
                             "shorter than the bank's sub-vectors")
        ports = {
            f"{src.name.lower()}_mem": In(ReadPort.Signature(addr_width=ceil_log2(depth),
                                                              shape=unsigned(W)))
            for src, depth in memory_depths(geometry).items()
        }
        super().__init__({
            "ctrl": In(read_control(geometry)),
            **ports,
            "cb_read": Out(cb_read),
            "lut_read": Out(lut_read_signature(geometry.num.keys, geometry.queries)),
            "o_key": Out(stream.Signature(column_layout(geometry.num.keys))),
            "o_val": Out(stream.Signature(column_layout(geometry.num.values))),
            "o_data": Out(stream.Signature(unsigned(W))),
            "o_reload": Out(stream.Signature(reload_layout())),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        g, req = self._g, self.ctrl.request
        mems = {Source.KEYS: self.keys_mem, Source.VALUES: self.values_mem}

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
        m.d.comb += beat.eq(Mux(src == Source.VALUES, self.values_mem.data, self.keys_mem.data))
        with m.If(adv):
            with m.If(left != 0):
                m.d.sync += [valid.eq(1), nxt.eq(nxt + 1), left.eq(left - 1), idx.eq(nxt)]
            with m.Else():
                m.d.sync += valid.eq(0)
        # A new request replaces an idle one (the sequencer only starts one when not busy);
        # codebook and LUT requests go to the element reader below instead.
        code_src = (req.src == Source.KEYS) | (req.src == Source.VALUES)
        with m.If(self.ctrl.start):
            m.d.sync += [src.eq(req.src), sink.eq(req.sink), base.eq(req.base), nxt.eq(0),
                         left.eq(Mux(code_src, req.count, 0)), vbase.eq(req.vbase)]
        g_beat, g_valid, g_busy = self._elements(m, req, src)
        m.d.comb += self.ctrl.busy.eq(valid | (left != 0) | g_busy)

        # Code columns of each side, gathered into groups of columns_per_token beats.
        key_ready = self._group(m, self.o_key, g.key, beat, idx, valid, sink == Sink.KEY, "key")
        val_ready = self._group(m, self.o_val, g.value, beat, idx, valid, sink == Sink.VALUE,
                                "val")
        m.d.comb += [
            self.o_data.payload.eq(Mux(g_valid, g_beat, beat)),
            self.o_reload.payload.k.eq(self.keys_mem.data),
            self.o_reload.payload.v.eq(self.values_mem.data),
        ]

        # Route the presented beat to the request's sink and take that sink's ready.
        with m.Switch(sink):
            with m.Case(Sink.KEY):
                m.d.comb += ready.eq(key_ready)
            with m.Case(Sink.VALUE):
                m.d.comb += ready.eq(val_ready)
            with m.Case(Sink.RESPONSE):
                m.d.comb += [self.o_data.valid.eq(valid | g_valid), ready.eq(self.o_data.ready)]
            with m.Case(Sink.RELOAD):
                m.d.comb += [self.o_reload.valid.eq(valid), ready.eq(self.o_reload.ready)]
        return m

    def _elements(self, m: Module, req, src) -> tuple[Signal, Signal, Value]:
        """READ_CB / READ_LUT: one element per cycle from the unit's read port, packed into
        beats; returns the beat offered, its valid and whether any element is still to come.

        Pipeline: in cycle t the element is read (its address to the unit); at t + 1 the unit
        answers and the element is packed into its slot of ``asm``; the element that ends a
        beat moves the beat (with itself) to the output register ``out`` instead. Reads go on
        while the output is free or being taken; with one element per beat (``d * elem_width
        = 256``) the read also waits for the element in flight, so a beat never meets a full
        output register.
        """
        g = self._g
        n = g.num
        kc = n.centroids
        ew, lw = g.elem_width, g.lut_width
        vec_sh = self._cb_sig.members["vecs"].shape
        lanes = vec_sh.length
        log_p = lanes.bit_length() - 1
        # (elements per beat, slot width, elements in all) per source
        modes = {Source.CB_KEYS: (W // (n.sub_dim * ew), n.sub_dim * ew, kc),
                 Source.CB_VALUES: (W // (n.values.sub_dim * ew), n.values.sub_dim * ew, kc),
                 Source.LUT: (g.lut_entries_per_beat, lw, n.subspaces * kc)}
        one_per_beat = any(per == 1 for per, _, _ in modes.values())
        total = max(t for _, _, t in modes.values())

        start = self.ctrl.start
        sub = Signal.like(req.base, name="el_sub")  # encoder subspace, or query head
        todo = Signal(range(total + 1), name="el_todo")  # elements still to read
        j = Signal(range(kc), name="el_j")  # centroid, or LUT entry within its subspace
        s = Signal(range(max(2, n.subspaces)), name="el_s")  # LUT subspace
        slot = Signal(range(max(per for per, _, _ in modes.values())), name="el_slot")
        # the element in flight (read last cycle)
        f_valid = Signal(name="el_f_valid")
        f_slot = Signal.like(slot, name="el_f_slot")
        f_end = Signal(name="el_f_end")
        f_lane = Signal(max(1, log_p), name="el_f_lane")
        asm = Signal(W, name="el_asm")
        out = Signal(W, name="el_out")
        out_valid = Signal(name="el_out_valid")
        taken = out_valid & self.o_data.ready

        with m.If(start):
            m.d.sync += [sub.eq(req.base), j.eq(0), s.eq(0), slot.eq(0), asm.eq(0)]
            with m.Switch(req.src):
                for mode, (_, _, count) in modes.items():
                    with m.Case(mode):
                        m.d.sync += todo.eq(count)
                with m.Default():
                    m.d.sync += todo.eq(0)

        # Read an element when the output can take a beat that the reads may complete.
        read = Signal(name="el_read")
        blocked = out_valid & ~self.o_data.ready
        if one_per_beat:
            blocked = blocked | (f_valid & f_end)
        m.d.comb += read.eq((todo != 0) & ~blocked)
        per = Signal.like(slot, name="el_per_m1")  # elements per beat of this source, minus 1
        with m.Switch(src):
            for mode, (p, _, _) in modes.items():
                with m.Case(mode):
                    m.d.comb += per.eq(p - 1)
        end = (slot == per) | (todo == 1)
        cb, lut = self.cb_read, self.lut_read
        is_cb = (src == Source.CB_KEYS) | (src == Source.CB_VALUES)
        m.d.comb += [
            cb.en.eq(read & is_cb), cb.sub.eq(sub), cb.iter.eq(j >> log_p),
            lut.en.eq(read & (src == Source.LUT)), lut.query.eq(sub), lut.sub.eq(s),
            lut.idx.eq(j),
        ]
        m.d.sync += f_valid.eq(read)
        with m.If(read):
            m.d.sync += [todo.eq(todo - 1), j.eq(j + 1), f_slot.eq(slot), f_end.eq(end),
                         slot.eq(Mux(end, 0, slot + 1))]
            if log_p:
                m.d.sync += f_lane.eq(j[:log_p])
            with m.If(j == kc - 1):
                m.d.sync += s.eq(s + 1)

        # The element the unit answers, sign-extended into its slot(s): centroids of the side's
        # d elements (the store's extra elements are the other side's zero padding).
        vec = Signal(vec_sh.elem_shape, name="el_vec")
        m.d.comb += vec.eq(cb.vecs[f_lane] if log_p else cb.vecs[0])
        packed = Signal(W, name="el_packed")  # asm with the element in its slot
        m.d.comb += packed.eq(asm)
        with m.Switch(src):
            for mode, (_, width, _) in modes.items():
                with m.Case(mode):
                    if mode == Source.LUT:
                        elem = [lut.data]
                        bits = lw
                    else:
                        d = width // ew
                        elem = [vec[i] for i in range(d)]
                        bits = ew
                    parts = []
                    for i, e in enumerate(elem):
                        x = Signal(signed(bits), name=f"el_{mode.name.lower()}{i}")
                        m.d.comb += x.eq(e)
                        parts.append(x)
                    m.d.comb += packed.word_select(f_slot[:max(1, ceil_log2(W // width))]
                                                   if W > width else 0, width).eq(Cat(*parts))
        with m.If(taken):
            m.d.sync += out_valid.eq(0)
        with m.If(f_valid):
            with m.If(f_end):
                m.d.sync += [out.eq(packed), out_valid.eq(1), asm.eq(0)]
            with m.Else():
                m.d.sync += asm.eq(packed)
        return out, out_valid, (todo != 0) | f_valid | out_valid

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
