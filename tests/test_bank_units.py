# amaranth: UnusedElaboratable=no
"""The bank controller's parts, one short amaranth.sim test each (hw/bank_*.py, hw/command.py).

The whole bank against the golden device is tests/test_bank.py; these pin each part's contract:
headers and statuses through the layouts of hw/command.py, the reader's latency and column
formatting, the unpacker's payloads, the collector's column writes, the response beats.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator
from aqpim.hw.bank_collect import CodeCollector
from aqpim.hw.bank_decode import CommandDecoder, counts, counts_layout
from aqpim.hw.bank_reader import ColumnReader, Sink, Source, memory_depths
from aqpim.hw.bank_response import ResponseMux, Select
from aqpim.hw.bank_unpack import BeatUnpacker
from aqpim.hw.command import (
    Command,
    Opcode,
    ResponseHeader,
    Status,
    bank_state_layout,
)
from aqpim.hw.encoder import PQEncoder
from aqpim.sim.amaranth_streams import Sink as StreamSink
from aqpim.sim.amaranth_streams import Source as StreamSource
from aqpim.sim.amaranth_streams import run_phases
from aqpim.sw.host.golden_device import GoldenBank, check_command

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.numerics import Numerics

TINY = Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=12)  # tpc = 16
SMALL = Numerics(head_dim=32, subspaces=16, centroids=16, token_capacity=64)  # tpc = 4


def _run(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _header(cmd: isa.Command):
    """The hw layout's view of the header word the driver sends (reserved bits zero)."""
    return Command.from_bits(isa.encode_header(cmd))


# ----------------------------------------------------------------------------------------------
# hw/command.py: the layouts agree with the isa's encoder
# ----------------------------------------------------------------------------------------------
def test_command_layout_packs_like_the_isa() -> None:
    rng = random.Random(1)
    for op in isa.Opcode:
        for _ in range(20):
            vals = {name: rng.randrange(1 << isa.HEADER_FIELDS[name][1])
                    for name in isa.OPCODE_FIELDS[op]}
            length = rng.randrange(4)
            word = Command.const({"opcode": Opcode[op.name],
                                  "params": {op.name.lower(): vals},
                                  "length": length}).as_bits()
            assert word == isa.encode_header(isa.Command(op, data=(0,) * length, **vals))
            back = Command.from_bits(word)
            assert back.opcode == Opcode[op.name] and back.length == length
            assert {k: getattr(getattr(back.params, op.name.lower()), k) for k in vals} == vals
    r = isa.Response(isa.Status.NO_LUT, int(isa.Opcode.SCORE), (1, 2))
    head = ResponseHeader.from_bits(isa.encode_response(r)[0])
    assert (head.status, head.opcode, head.length) == (Status.NO_LUT, Opcode.SCORE, 2)


# ----------------------------------------------------------------------------------------------
# CommandDecoder: the same status as the golden device's checks, for random headers and states
# ----------------------------------------------------------------------------------------------
def test_decoder_status_matches_golden_checks() -> None:
    g = Geometry(TINY)
    n = TINY
    rng = random.Random(2)
    cases = []
    for _ in range(400):
        op = rng.choice([*isa.Opcode, 12, 15])
        count = rng.choice([0, 1, 2, rng.randrange(4096)])
        length = rng.choice([0, g.cb_beats, g.lut_beats, count * g.token_beats % 4096,
                             rng.randrange(8)])
        cmd = isa.Command(op, head=rng.choice([0, 0, 0, 1, 7]), kv=rng.randrange(2),
                          subspace=rng.choice([rng.randrange(n.subspaces), n.subspaces, 255]),
                          addr=rng.choice([0, rng.randrange(16), 1 << 20]), count=count,
                          data=(0,) * length)
        state = {"tokens": rng.randrange(n.token_capacity + 1),
                 "k_mask": rng.choice([0, 255, rng.randrange(256)]),
                 "v_mask": rng.choice([0, 255, rng.randrange(256)]),
                 "lut": rng.randrange(2), "scores": rng.randrange(2),
                 "partial": rng.randrange(2)}
        bank = GoldenBank(g)
        hd = bank.heads[0]
        hd.tokens = state["tokens"]
        hd.mask[0][:] = [(state["k_mask"] >> m) & 1 for m in range(n.subspaces)]
        hd.mask[1][:] = [(state["v_mask"] >> m) & 1 for m in range(n.values.subspaces)]
        bank.lut_head = 0 if state["lut"] else None
        bank.scores_head = 0 if state["scores"] else None
        bank.partial_head = 0 if state["partial"] else None
        cases.append((cmd, state, check_command(bank, cmd)))

    _decode_cases(g, cases)


# one token over two columns (d = 1, 128 codes of 4 bits): more used columns than tokens
WIDE = Numerics(head_dim=128, subspaces=128, centroids=16, token_capacity=6)


@pytest.mark.parametrize("n", [SMALL, WIDE], ids=["small", "wide"])
def test_decoder_range_checks_at_their_edges(n: Numerics) -> None:
    """WRITE_KV's CAPACITY and READ_CODES' ADDR_RANGE exactly at the end and one past it, at
    every token count (both compare registered per-slot figures, not the token count); SMALL
    has 4 tokens per column (used columns round up), WIDE 2 columns per token."""
    g = Geometry(n)
    full = {"k_mask": (1 << n.subspaces) - 1, "v_mask": (1 << n.values.subspaces) - 1,
            "lut": 0, "scores": 0, "partial": 0}
    cases = []
    for tokens in range(n.token_capacity + 1):
        bank = GoldenBank(g)
        hd = bank.heads[0]
        hd.tokens = tokens
        hd.mask[0][:] = [1] * n.subspaces
        hd.mask[1][:] = [1] * n.values.subspaces
        state = {"tokens": tokens, **full}
        cmds = []
        for extra in (0, 1):
            count = n.token_capacity - tokens + extra
            if count:
                cmds.append(isa.Command(isa.Opcode.WRITE_KV, addr=tokens, count=count,
                                        data=(0,) * (count * g.token_beats)))
            for kv, side in ((0, g.key), (1, g.value)):
                used = -(-tokens // side.tokens_per_column) * side.columns_per_token
                for addr in {0, used // 2, used}:
                    if used - addr + extra:
                        cmds.append(isa.Command(isa.Opcode.READ_CODES, kv=kv, addr=addr,
                                                count=used - addr + extra))
        cases += [(cmd, state, check_command(bank, cmd)) for cmd in cmds]
    got = {e.name for _, _, e in cases}
    assert got == {"OK", "CAPACITY", "ADDR_RANGE"}, got  # both edges reached
    _decode_cases(g, cases)


def _decode_cases(g: Geometry, cases: list) -> None:
    """Run (command, state, expected status) cases through a decoder: status and ok."""
    dut = CommandDecoder(geometry=g)

    async def bench(ctx) -> None:
        for cmd, state, expected in cases:
            ctx.set(dut.bus.header, _header(cmd))
            ctx.set(dut.bus.state, bank_state_layout(g).const(state))
            # the sequencer's registered per-slot figures, here from the same token count
            ctx.set(dut.bus.counts, counts_layout(g).const(counts(state["tokens"], g)))
            # stage 1 registers the checks with en; stage 2 picks the status from them
            ctx.set(dut.bus.en, 1)
            await ctx.tick()
            ctx.set(dut.bus.en, 0)
            got = ctx.get(dut.bus.status)
            assert got.name == expected.name, (
                f"{cmd!r} in state {state}: {got.name} != {expected.name}")
            assert ctx.get(dut.bus.ok) == (expected == isa.Status.OK), (cmd, state)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ----------------------------------------------------------------------------------------------
# ColumnReader: first beat 2 cycles after the request, then one per cycle under back-pressure
# ----------------------------------------------------------------------------------------------
class _ReaderBench(wiring.Component):
    """The reader with the bank's two code memories, filled with known beats."""

    def __init__(self, g: Geometry, contents: dict[Source, list[int]]) -> None:
        enc = PQEncoder(sub_dim=g.num.sub_dim, centroids=g.num.centroids,
                        subspaces=2 * g.num.subspaces, elem_bits=g.num.elem_bits, lanes=4)
        self.reader = ColumnReader(geometry=g, cb_read=enc.read_signature)
        self._g, self._contents = g, contents
        super().__init__({})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.reader = r = self.reader
        for src, depth in memory_depths(self._g).items():
            mem = Memory(shape=256, depth=depth, init=self._contents[src])
            m.submodules[src.name] = mem
            wiring.connect(m, getattr(r, f"{src.name.lower()}_mem"), mem.read_port())
        return m


def test_reader_streams_beats_and_columns() -> None:
    g = Geometry(SMALL)  # 16 columns of 4 tokens
    rng = random.Random(3)
    contents = {src: [rng.getrandbits(256) for _ in range(depth)]
                for src, depth in memory_depths(g).items()}
    top = _ReaderBench(g, contents)
    r = top.reader
    req = r.ctrl.request

    async def request(ctx, src, sink, base, count) -> None:
        ctx.set(req.src, src)
        ctx.set(req.sink, sink)
        ctx.set(req.base, base)
        ctx.set(req.count, count)
        ctx.set(r.ctrl.start, 1)
        await ctx.tick()
        ctx.set(r.ctrl.start, 0)

    async def bench(ctx) -> None:
        # READ_CODES-style: beats 5..9 of the value codes, 30 % back-pressure.
        await request(ctx, Source.VALUES, Sink.RESPONSE, 5, 5)
        got, cycle, first = [], 0, None
        while ctx.get(r.ctrl.busy):
            ready = rng.random() >= 0.3
            ctx.set(r.o_data.ready, ready)
            if ctx.get(r.o_data.valid):
                first = cycle if first is None else first
                if ready:
                    got.append(ctx.get(r.o_data.payload))
            await ctx.tick()
            cycle += 1
        assert got == contents[Source.VALUES][5:10]
        assert first == 1  # offered on the second cycle after the start strobe's edge
        # SCORE-style: 10 tokens = 3 columns, the last one holding 2 tokens.
        ctx.set(r.ctrl.tokens, 10)
        await request(ctx, Source.KEYS, Sink.KEY, 0, 3)
        cols = []
        ctx.set(r.o_key.ready, 1)
        while ctx.get(r.ctrl.busy):
            if ctx.get(r.o_key.valid):
                c = ctx.get(r.o_key.payload)
                cols.append((c.codes.as_value().value, c.ntok, c.last))
            await ctx.tick()
        assert cols == [(contents[Source.KEYS][0], 4, 0), (contents[Source.KEYS][1], 4, 0),
                        (contents[Source.KEYS][2], 2, 1)]

    _run(top, bench)


# READ_CB / READ_LUT: the reader packs the units' elements (stand-ins answering a cycle after
# the read, like the encoder's store and the LUT-accumulate unit) into LOAD_CB / LOAD_LUT beats
# ----------------------------------------------------------------------------------------------
class _ElementBench(wiring.Component):
    def __init__(self, g: Geometry, lanes: int) -> None:
        n = g.num
        self.enc = PQEncoder(sub_dim=max(n.sub_dim, n.values.sub_dim), centroids=n.centroids,
                             subspaces=g.heads * (n.subspaces + n.values.subspaces),
                             elem_bits=n.elem_bits, lanes=lanes)
        self.reader = ColumnReader(geometry=g, cb_read=self.enc.read_signature)
        super().__init__({})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.reader = self.reader
        for src, depth in memory_depths(self.reader._g).items():  # unused code memories
            m.submodules[src.name] = mem = Memory(shape=256, depth=depth, init=[])
            wiring.connect(m, getattr(self.reader, f"{src.name.lower()}_mem"), mem.read_port())
        return m


# SMALL with d_v = 1 < d_k = 2 (the store's padding must not show), G = 2; and d x 16 bits =
# 256: one centroid per beat (the reader waits for the element in flight)
_ASYM_SMALL = Numerics(head_dim=32, subspaces=16, centroids=16, value_subspaces=32,
                       value_centroids=16, token_capacity=64)
_ONE_PER_BEAT = Numerics(head_dim=32, subspaces=2, centroids=4, elem_bits=16, token_capacity=8)


@pytest.mark.parametrize(("num", "lanes"), [(_ASYM_SMALL, 4), (_ONE_PER_BEAT, 2)],
                         ids=["asym", "one-per-beat"])
def test_reader_packs_codebooks_and_luts(num: Numerics, lanes: int) -> None:
    """Every element read once, in order, at one cycle after its read; beats equal the golden
    packing (isa.pack_values at elem_width / lut_width) under 40 % back-pressure."""
    g = Geometry(num, heads=2, queries=2)
    top = _ElementBench(g, lanes)
    r, n = top.reader, g.num
    rng = np.random.default_rng(5)
    dmax = max(n.sub_dim, n.values.sub_dim)
    wb = n.elem_bits
    cbs = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1),
                       size=(g.heads * (n.subspaces + n.values.subspaces), n.centroids, dmax))
    luts = rng.integers(n.lut_min, n.lut_max + 1, size=(2, n.subspaces, n.centroids))
    prng = random.Random(5)
    reqs = []
    for slot in range(2):
        base = slot * (n.subspaces + n.values.subspaces)
        reqs += [(Source.CB_KEYS, base + 1, n.sub_dim, g.key.cb_beats),
                 (Source.CB_VALUES, base + n.subspaces + n.values.subspaces - 1,
                  n.values.sub_dim, g.value.cb_beats)]
    reqs += [(Source.LUT, 1, None, g.lut_beats), (Source.LUT, 0, None, g.lut_beats)]
    req = r.ctrl.request

    async def bench(ctx) -> None:
        for src, base, d, beats in reqs:
            if src == Source.LUT:
                want = isa.pack_values(luts[base].reshape(-1).tolist(), g.lut_width)
            else:
                want = isa.pack_values(cbs[base][:, :d].reshape(-1).tolist(), g.elem_width)
            assert len(want) == beats
            ctx.set(req.src, src)
            ctx.set(req.sink, Sink.RESPONSE)
            ctx.set(req.base, base)
            ctx.set(req.count, beats)
            ctx.set(r.ctrl.start, 1)
            await ctx.tick()
            ctx.set(r.ctrl.start, 0)
            got, reads = [], []
            for _ in range(20_000):
                if not ctx.get(r.ctrl.busy):
                    break
                ready = prng.random() >= 0.4
                ctx.set(r.o_data.ready, ready)
                valid, payload = ctx.get(r.o_data.valid), ctx.get(r.o_data.payload)
                cb = (ctx.get(r.cb_read.en), ctx.get(r.cb_read.sub), ctx.get(r.cb_read.iter))
                lt = (ctx.get(r.lut_read.en), ctx.get(r.lut_read.query),
                      ctx.get(r.lut_read.sub), ctx.get(r.lut_read.idx))
                await ctx.tick()
                if valid and ready:
                    got.append(payload)
                # the units answer one cycle after the read (a synchronous memory / register)
                if cb[0]:
                    reads.append(("cb", cb[1], cb[2]))
                    for p in range(lanes):
                        ctx.set(r.cb_read.vecs[p], cbs[cb[1]][cb[2] * lanes + p].tolist())
                if lt[0]:
                    reads.append(("lut", lt[1], lt[2], lt[3]))
                    ctx.set(r.lut_read.data, int(luts[lt[1]][lt[2]][lt[3]]))
            assert got == want, f"{src.name} base {base}"
            if src == Source.LUT:
                assert reads == [("lut", base, s, j) for s in range(n.subspaces)
                                 for j in range(n.centroids)]
            else:  # one read per centroid: the P-centroid row of centroid j
                assert reads == [("cb", base, j // lanes) for j in range(n.centroids)]

    _run(top, bench)


# ----------------------------------------------------------------------------------------------
# BeatUnpacker: centroids, sub-vectors and LUT rows as the units' payloads
# ----------------------------------------------------------------------------------------------
def _unpacker(num: Numerics) -> tuple[BeatUnpacker, PQEncoder, Geometry]:
    enc = PQEncoder(sub_dim=num.sub_dim, centroids=num.centroids, subspaces=2 * num.subspaces,
                    elem_bits=num.elem_bits, lanes=num.centroids)
    g = Geometry(num)
    return (BeatUnpacker(geometry=g, cb_layout=enc.cb_layout, x_layout=enc.x_layout), enc, g)


def _start(dut: BeatUnpacker, cmd: isa.Command):
    async def setup(ctx) -> None:
        ctx.set(dut.ctrl.header, _header(cmd))
        ctx.set(dut.ctrl.start, 1)
        await ctx.tick()
        ctx.set(dut.ctrl.start, 0)
    return setup


def test_unpacker_load_cb_hands_out_centroids() -> None:
    num = TINY
    dut, enc, g = _unpacker(num)
    rng = np.random.default_rng(4)
    cents = rng.integers(-128, 128, size=(num.centroids, num.sub_dim))
    cmd = isa.load_cb(g, head=0, kv=1, subspace=5, centroids=cents.reshape(-1).tolist())
    src = StreamSource(dut.i_data, cmd.data)
    cb = StreamSink(dut.o_cb, num.centroids)
    vcb = StreamSink(dut.o_vcb, num.centroids, backpressure=0.0)
    run_phases(dut, [([src], [cb, vcb])], seed=4, setup=_start(dut, cmd))
    for j, bits in enumerate(cb.beats):
        p = enc.cb_layout.from_bits(bits)
        assert (p.sub, p.idx) == (num.subspaces + 5, j)  # values are subspaces M..2M-1
        assert [p.vec[i] for i in range(num.sub_dim)] == cents[j].tolist()


def test_unpacker_write_kv_hands_out_sub_vectors() -> None:
    num = TINY
    dut, enc, g = _unpacker(num)
    rng = np.random.default_rng(5)
    k, v = rng.integers(-128, 128, size=(2, 2, num.head_dim))
    cmd = isa.write_kv(g, head=0, token=0, keys=k.tolist(), values=v.tolist())
    src = StreamSource(dut.i_data, cmd.data)
    x = StreamSink(dut.o_x, 4 * num.subspaces)
    run_phases(dut, [([src], [x])], seed=5, setup=_start(dut, cmd))
    expect = [(kv * num.subspaces + m, vec[m * num.sub_dim:(m + 1) * num.sub_dim].tolist())
              for t in range(2) for kv, vec in ((0, k[t]), (1, v[t]))
              for m in range(num.subspaces)]
    got = [(p.sub, [p.x[i] for i in range(num.sub_dim)])
           for p in (enc.x_layout.from_bits(b) for b in x.beats)]
    assert got == expect


def test_unpacker_load_lut_one_beat_per_row() -> None:
    num = SMALL
    dut, _, g = _unpacker(num)
    rng = np.random.default_rng(6)
    lut = rng.integers(num.lut_min, num.lut_max + 1, size=num.subspaces * num.centroids)
    cmd = isa.load_lut(g, head=0, lut=lut.tolist())
    src = StreamSource(dut.i_data, cmd.data)
    rows = StreamSink(dut.o_lut, g.lut_beats)
    run_phases(dut, [([src], [rows])], seed=6, setup=_start(dut, cmd))
    layout = dut.o_lut.payload.shape()
    per = 256 // g.lut_width
    for r, bits in enumerate(rows.beats):
        p = layout.from_bits(bits)
        assert p.row == r
        assert [p.values[i] for i in range(per)] == lut[r * per:(r + 1) * per].tolist()


# ----------------------------------------------------------------------------------------------
# CodeCollector: a token continuing a stored column, then one opening the next column
# ----------------------------------------------------------------------------------------------
def test_collector_writes_columns() -> None:
    num = SMALL  # M = 16, b = 4: 4 tokens per column
    g = Geometry(num)
    enc = PQEncoder(sub_dim=num.sub_dim, centroids=num.centroids, subspaces=2 * num.subspaces,
                    elem_bits=num.elem_bits, lanes=num.centroids)
    dut = CodeCollector(geometry=g, code_layout=enc.code_layout)
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 16, size=(2, 4, num.subspaces))  # tokens 0..2 valid, 3 empty
    stored[:, 3] = 0
    codes = rng.integers(0, 16, size=(2, 2, num.subspaces))  # tokens 3 and 4: kv, token, m
    col = isa.pack_values
    old = [col(stored[kv].reshape(-1).tolist(), 4, signed=False)[0] for kv in (0, 1)]

    async def bench(ctx) -> None:
        ctx.set(dut.ctrl.first, 3)
        ctx.set(dut.ctrl.start, 1)
        await ctx.tick()
        ctx.set(dut.ctrl.start, 0)
        ctx.set(dut.i_reload.payload, {"k": old[0], "v": old[1]})
        ctx.set(dut.i_reload.valid, 1)
        await ctx.tick()
        ctx.set(dut.i_reload.valid, 0)
        writes: list[list[tuple[int, int]]] = [[], []]  # per side: (column, data)
        for t in range(2):
            for kv in (0, 1):
                for m in range(num.subspaces):
                    ctx.set(dut.i_code.payload, {"sub": kv * num.subspaces + m,
                                                 "code": int(codes[kv, t, m])})
                    ctx.set(dut.i_code.valid, 1)
                    for side, port in enumerate((dut.k_write, dut.v_write)):
                        if ctx.get(port.en):  # at the side's last code of the token
                            assert m == num.subspaces - 1 and side == kv
                            writes[side].append((ctx.get(port.addr), ctx.get(port.data)))
                    await ctx.tick()
        ctx.set(dut.i_code.valid, 0)
        assert ctx.get(dut.ctrl.written) == 2
        full = stored.copy()
        full[:, 3] = codes[:, 0]
        second = np.zeros((2, 4, num.subspaces), dtype=np.int64)
        second[:, 0] = codes[:, 1]
        expect = [[(a, col(x[kv].reshape(-1).tolist(), 4, signed=False)[0])
                   for a, x in ((0, full), (1, second))] for kv in (0, 1)]
        assert writes == expect

    _run(dut, bench)


# ----------------------------------------------------------------------------------------------
# ResponseMux: header, READ_STATUS and READ_PARTIAL beats, decoded by the isa's decoders
# ----------------------------------------------------------------------------------------------
def test_response_mux_beats_decode_with_the_isa() -> None:
    num = TINY
    g = Geometry(num, heads=2)  # READ_STATUS: 3 beats per slot; shared flags of their owner
    dut = ResponseMux(geometry=g)
    ctrl = dut.ctrl
    outs = [5, 7, *range(-8, 8)]

    async def read(ctx, select, length) -> list[int]:
        ctx.set(ctrl.select, Select.HEADER)
        ctx.set(ctrl.header, {"status": Status.OK, "opcode": Opcode.READ_STATUS,
                              "length": length})
        ctx.set(dut.o_rsp.ready, 1)
        words = [ctx.get(dut.o_rsp.payload)]
        await ctx.tick()
        ctx.set(ctrl.select, select)
        while True:
            words.append(ctx.get(dut.o_rsp.payload))
            last = ctx.get(ctrl.last)
            await ctx.tick()
            if last:
                return words

    async def bench(ctx) -> None:
        ctx.set(ctrl.state, {"tokens": [9, 4], "k_mask": [255, 3], "v_mask": [0b1010, 255],
                             "lut": 1, "lut_head": 0, "luts": 1, "scores": 1,
                             "scores_head": 1, "partial": 1, "partial_head": 0})
        ctx.set(ctrl.partial, {"max": outs[0], "sum": outs[1],
                               "out": outs[2:2 + num.head_dim]})
        resp = isa.decode_response(await read(ctx, Select.STATUS, g.status_beats))
        hs, hs1 = isa.decode_status(g, resp)
        assert (hs.tokens, hs.k_mask, hs.v_mask, hs.queries) == (9, 255, 0b1010, 1)
        assert hs.flags == isa.Flag.K_CODEBOOK | isa.Flag.LUT | isa.Flag.PARTIAL
        assert (hs1.tokens, hs1.k_mask, hs1.v_mask, hs1.queries) == (4, 3, 255, 0)
        assert hs1.flags == isa.Flag.V_CODEBOOK | isa.Flag.SCORES
        resp = isa.decode_response(await read(ctx, Select.PARTIAL, g.partial_beats))
        mx, sm, out = isa.decode_partial(g, resp)
        assert [mx, sm, *out] == outs[:2 + num.head_dim]

    _run(dut, bench)
