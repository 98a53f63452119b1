"""Host driver and golden device: driver output equals a direct intmodel computation; bad input
fails before the device sees anything; every rejected command leaves the bank unchanged."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random

import numpy as np
import pytest
from aqpim.sim.randcmd import RandomStream
from aqpim.sw.golden import intmodel
from aqpim.sw.host.device import observe
from aqpim.sw.host.driver import Driver, split_round_robin
from aqpim.sw.host.golden_device import GoldenBank, GoldenDevice

from aqpim import isa
from aqpim.geometry import Geometry
from aqpim.isa import Command, Opcode, Status
from aqpim.numerics import Numerics

SMALL = Numerics(head_dim=32, subspaces=16, centroids=16, token_capacity=64)
# separate key and value geometry: keys d = 8, K = 16 (16 bits, 16 tokens per column), values
# d = 4, K = 256 (64 bits, 4 tokens per column)
ASYM = Numerics(head_dim=32, subspaces=4, centroids=16, value_subspaces=8, value_centroids=256,
                token_capacity=256)
# d = 1, K = 256 at D = 64: 512 bits per token, one token over two columns
WIDE = Numerics(head_dim=64, subspaces=64, centroids=256, token_capacity=256)


class CountingDevice:
    """Wraps a device and counts the commands that reach it."""

    def __init__(self, inner: GoldenDevice) -> None:
        self.inner = inner
        self.sent = 0

    geometry = property(lambda self: self.inner.geometry)
    num_banks = property(lambda self: self.inner.num_banks)

    def execute(self, bank, cmd):
        self.sent += 1
        return self.inner.execute(bank, cmd)

    def execute_batch(self, items):
        return [self.execute(b, c) for b, c in items]


def _data(heads: int, tokens: int, d: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, d))
    k = centers[rng.integers(0, 8, size=(heads, tokens))]
    k = k + 0.3 * rng.normal(size=(heads, tokens, d))
    v = rng.normal(size=(heads, tokens, d))
    q = 2.0 * centers[rng.integers(0, 8, size=heads)] + 0.1 * rng.normal(size=(heads, d))
    return q, k, v


def _direct(drv: Driver, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The same computation straight from intmodel, with the driver's codebooks and scales."""
    num = drv.num
    out = []
    for h, hs in enumerate(drv.heads):
        kq = intmodel.quantize(k[h], hs.key_scales, num.keys)
        vq = intmodel.quantize(v[h], hs.value_scales, num.values)
        kc = intmodel.encode(kq, hs.key_codebook, num.keys)
        vc = intmodel.encode(vq, hs.value_codebook, num.values)
        lut = intmodel.build_lut(q[h], hs.key_codebook, hs.key_scales, num)
        g = len(hs.places)
        parts = [
            intmodel.bank_partial(lut, kp, vp, hs.value_codebook, num)
            for kp, vp in zip(split_round_robin(kc, g), split_round_robin(vc, g), strict=True)
        ]
        out.append(intmodel.host_merge(parts, hs.value_scales, num))
    return np.stack(out)


def _exact(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = np.einsum("hd,htd->ht", q, k) / math.sqrt(q.shape[-1])
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.einsum("ht,htd->hd", p, v)


@pytest.mark.parametrize(("kv_heads", "banks", "slots"), [(2, 4, 1), (2, 4, 2), (1, 3, 1)])
def test_driver_equals_direct_intmodel(kv_heads: int, banks: int, slots: int) -> None:
    dev = GoldenDevice(Geometry(SMALL, heads=slots), banks)
    drv = Driver(dev, kv_heads=kv_heads, iters=5)
    q, k, v = _data(kv_heads, 50, SMALL.head_dim, seed=banks + slots)
    drv.prefill(k[:, :40], v[:, :40])
    out = drv.step(q, None, None)
    np.testing.assert_array_equal(out, _direct(drv, q, k[:, :40], v[:, :40]))
    for t in range(40, 50):  # decode steps: append then attend
        qt = q + 0.05 * t
        out = drv.step(qt, k[:, t], v[:, t])
        np.testing.assert_array_equal(out, _direct(drv, qt, k[:, :t + 1], v[:, :t + 1]))
    err = np.linalg.norm(out - _exact(qt, k, v)) / np.linalg.norm(_exact(qt, k, v))
    print(f"relative error vs exact attention: {err:.4f}")
    assert err < 0.5  # PQ at 16 centroids on toy data; a gross bug gives ~1


@pytest.mark.parametrize("num", [ASYM, WIDE], ids=["asym", "wide"])
def test_driver_equals_direct_intmodel_key_value_geometry(num: Numerics) -> None:
    """Separate key / value (M, K) and a token over two columns: the driver on the golden
    device computes what intmodel computes side by side, and READ_CODES returns each side's
    columns in its own layout."""
    dev = GoldenDevice(Geometry(num), 2)
    drv = Driver(dev, kv_heads=1, iters=4)
    q, k, v = _data(1, 300, num.head_dim, seed=7)
    drv.prefill(k[:, :290], v[:, :290])
    for t in range(290, 293):
        out = drv.step(q, k[:, t], v[:, t])
        np.testing.assert_array_equal(out, _direct(drv, q, k[:, :t + 1], v[:, :t + 1]))
    hs = drv.heads[0]
    seen = observe(dev, 0)
    for kv, (side, cb, sc) in enumerate(((num.keys, hs.key_codebook, hs.key_scales),
                                         (num.values, hs.value_codebook, hs.value_scales))):
        x = (k, v)[kv][0, :293:2]  # bank 0 holds tokens 0, 2, 4, ...
        codes = intmodel.encode(intmodel.quantize(x, sc, side), cb, side)
        assert seen[f"codes/0/{kv}"] == intmodel.pack_columns(codes, side)
    err = np.linalg.norm(out - _exact(q, k[:, :293], v[:, :293])) / np.linalg.norm(
        _exact(q, k[:, :293], v[:, :293]))
    assert err < 0.5, err


@pytest.mark.parametrize("num", [
    dataclasses.replace(ASYM, value_centroids=16, token_capacity=24),  # 16 and 8 per column
    Numerics(head_dim=128, subspaces=128, centroids=16, token_capacity=8),  # 2 columns/token
], ids=["asym", "wide"])
def test_random_streams_key_value_geometry(num: Numerics) -> None:
    """Random command streams on the new layouts: rejected commands change nothing."""
    seen = _random_stream_statuses(Geometry(num, heads=2), range(3), 200)
    assert Status.OK in seen and Status.ADDR_RANGE in seen


def test_mapping_and_broadcast() -> None:
    dev = GoldenDevice(Geometry(SMALL, heads=2), 4)
    drv = Driver(dev, kv_heads=2, banks_per_channel=2)
    m = drv.mapping()
    assert [p["bank"] for p in m[0]["places"]] == [0, 1, 2, 3]
    assert {p["slot"] for p in m[1]["places"]} == {1}
    assert [p["channel"] for p in m[0]["places"]] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="divide"):
        Driver(dev, kv_heads=3)


def test_tokens_spread_round_robin() -> None:
    dev = GoldenDevice(Geometry(SMALL), 4)
    drv = Driver(dev, kv_heads=2, iters=2)
    q, k, v = _data(2, 23, SMALL.head_dim, seed=3)
    drv.prefill(k[:, :21], v[:, :21])
    drv.step(q, k[:, 21], v[:, 21])
    drv.step(q, k[:, 22], v[:, 22])
    counts = [b.heads[0].tokens for b in dev.banks]
    assert counts == [12, 11, 12, 11]  # head 0 on banks 0-1, head 1 on banks 2-3


@pytest.mark.parametrize(
    ("what", "exc", "match"),
    [
        ("k_shape", ValueError, "shape"),
        ("k_int", TypeError, "floating"),
        ("k_nan", ValueError, "non-finite"),
        ("few_tokens", ValueError, "at least K"),
        ("capacity", ValueError, "capacity"),
        ("k_list", TypeError, "numpy"),
    ],
)
def test_bad_prefill_reaches_no_device(what: str, exc: type, match: str) -> None:
    dev = CountingDevice(GoldenDevice(Geometry(SMALL), 2))
    drv = Driver(dev, kv_heads=2)
    _, k, v = _data(2, 70, SMALL.head_dim, seed=0)
    k, v = k[:, :30].copy(), v[:, :30].copy()
    if what == "k_shape":
        k = k[:, :, :16]
    elif what == "k_int":
        k = k.astype(np.int32)
    elif what == "k_nan":
        k[1, 3, 5] = np.nan
    elif what == "few_tokens":
        k, v = k[:, :8], v[:, :8]
    elif what == "capacity":
        _, k, v = _data(2, 70, SMALL.head_dim, seed=0)  # 70 > 1 bank x 64 tokens
    elif what == "k_list":
        k = k.tolist()
    with pytest.raises(exc, match=match):
        drv.prefill(k, v)
    assert dev.sent == 0


def test_bad_step_reaches_no_device() -> None:
    dev = CountingDevice(GoldenDevice(Geometry(SMALL), 2))
    drv = Driver(dev, kv_heads=2, iters=2)
    q, k, v = _data(2, 64, SMALL.head_dim, seed=0)
    with pytest.raises(RuntimeError, match="prefill"):
        drv.step(q)
    drv.prefill(k, v)
    sent = dev.sent
    for args, exc, match in [
        ((q[:1],), ValueError, "shape"),
        ((q.astype(np.float32) * np.inf,), ValueError, "non-finite"),
        ((q, k[:, 0]), ValueError, "both"),
        ((q, k[:, 0], v[:, 0]), ValueError, "capacity"),  # 64 tokens fill the bank already
    ]:
        with pytest.raises(exc, match=match):
            drv.step(*args)
        assert dev.sent == sent
    with pytest.raises(TypeError, match="kv_heads"):
        Driver(dev, kv_heads=2.0)
    with pytest.raises(ValueError, match="num_banks"):
        GoldenDevice(Geometry(SMALL), 0)


# ----------------------------------------------------------------------------------------------
# full-precision sinks and recent window on the host
# ----------------------------------------------------------------------------------------------
def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float64)


def _direct_window(drv: Driver, q: np.ndarray, k: np.ndarray, v: np.ndarray, prompt: int,
                   sinks: int, recent: int) -> np.ndarray:
    """What the driver must return after ``k.shape[1]`` tokens of which ``prompt`` came at
    prefill: device tokens ``[min(S, T), max(min(S, T), T - R))`` through intmodel (those that
    left the window after prefill were stored, hence written, as FP16), the others as FP16
    through ``float_partial``, merged by ``host_merge``."""
    num = drv.num
    t = k.shape[1]
    first = min(sinks, t)
    last = max(first, t - recent)
    last0 = max(min(sinks, prompt), prompt - recent)  # device tokens after prefill end here
    dev = np.arange(first, last)
    host = np.r_[0:first, last:t]
    out = []
    for h, hs in enumerate(drv.heads):
        kd, vd = k[h, dev].copy(), v[h, dev].copy()
        late = (dev >= last0) & (recent > 0)
        kd[late], vd[late] = _f16(kd[late]), _f16(vd[late])
        parts = []
        if dev.size:
            kc = intmodel.encode(intmodel.quantize(kd, hs.key_scales, num), hs.key_codebook, num)
            vc = intmodel.encode(intmodel.quantize(vd, hs.value_scales, num), hs.value_codebook,
                                 num)
            lut = intmodel.build_lut(q[h], hs.key_codebook, hs.key_scales, num)
            g = len(hs.places)
            parts = [
                intmodel.bank_partial(lut, kp, vp, hs.value_codebook, num)
                for kp, vp in zip(split_round_robin(kc, g), split_round_robin(vc, g),
                                  strict=True)
            ]
        extra = intmodel.float_partial(q[h], _f16(k[h, host]), _f16(v[h, host]))
        out.append(intmodel.host_merge(parts, hs.value_scales, num, extra))
    return np.stack(out)


def _device_tokens(dev: GoldenDevice) -> list[list[int]]:
    """Tokens per (bank, slot) as the banks report them (READ_STATUS)."""
    return [[hs.tokens for hs in observe(dev, b)["status"]] for b in range(dev.num_banks)]


@pytest.mark.parametrize(
    ("kv_heads", "banks", "slots", "sinks", "recent"),
    [(2, 4, 1, 4, 8), (2, 4, 2, 3, 5), (1, 3, 1, 0, 6), (1, 2, 1, 5, 0), (2, 4, 1, 30, 30)],
)
def test_sinks_and_window_equal_direct(
    kv_heads: int, banks: int, slots: int, sinks: int, recent: int
) -> None:
    dev = GoldenDevice(Geometry(SMALL, heads=slots), banks)
    drv = Driver(dev, kv_heads=kv_heads, iters=5, sinks=sinks, recent=recent)
    q, k, v = _data(kv_heads, 52, SMALL.head_dim, seed=banks + sinks)
    prompt = 40
    drv.prefill(k[:, :prompt], v[:, :prompt])
    places = drv.mapping()
    for t in range(prompt, 53):  # t tokens present after this step; the window slides
        qt = q + 0.05 * t
        if t == prompt:
            out = drv.step(qt)
        else:
            out = drv.step(qt, k[:, t - 1], v[:, t - 1])
        np.testing.assert_array_equal(
            out, _direct_window(drv, qt, k[:, :t], v[:, :t], prompt, sinks, recent),
            err_msg=f"after {t} tokens")
        # READ_STATUS: the banks hold exactly the tokens outside the sinks and the window
        on_dev = max(0, t - min(sinks, t) - recent)
        counts = _device_tokens(dev)
        for h in range(kv_heads):
            got = [counts[p["bank"]][p["slot"]] for p in places[h]["places"]]
            g = len(got)
            assert got == [on_dev // g + (p < on_dev % g) for p in range(g)], (t, h, got)
            assert drv.heads[h].host_tokens == t - on_dev


def test_all_tokens_on_host_is_exact_fp16_attention() -> None:
    """sinks + recent >= T: nothing is written or scored; the output is exact attention on the
    FP16-rounded tokens (an independent formula)."""
    dev = CountingDevice(GoldenDevice(Geometry(SMALL), 2))
    drv = Driver(dev, kv_heads=2, iters=2, sinks=20, recent=30)
    q, k, v = _data(2, 45, SMALL.head_dim, seed=4)
    drv.prefill(k[:, :40], v[:, :40])
    loaded = dev.sent  # codebooks only
    assert all(b.heads[0].tokens == 0 for b in dev.inner.banks)
    for t in range(40, 45):
        out = drv.step(q, k[:, t], v[:, t])
        np.testing.assert_allclose(out, _exact(q, _f16(k[:, :t + 1]), _f16(v[:, :t + 1])),
                                   rtol=1e-12, atol=1e-14)
    assert dev.sent == loaded


def test_window_relieves_capacity_and_bad_window_input() -> None:
    q, k, v = _data(2, 80, SMALL.head_dim, seed=1)
    dev = CountingDevice(GoldenDevice(Geometry(SMALL), 2))  # 1 bank x 64 tokens per head
    for kwargs, exc, match in [
        ({"sinks": -1}, ValueError, "sinks"), ({"recent": -3}, ValueError, "recent"),
        ({"sinks": 1.5}, TypeError, "sinks"), ({"recent": True}, TypeError, "recent"),
        ({"recent": "4"}, TypeError, "recent"),
    ]:
        with pytest.raises(exc, match=match):
            Driver(dev, kv_heads=2, **kwargs)
    drv = Driver(dev, kv_heads=2, iters=2, sinks=2, recent=8)
    big = k[:, :70].copy()
    big[1, 69, 3] = 1e5  # in the window: beyond FP16
    with pytest.raises(ValueError, match="FP16"):
        drv.prefill(big, v[:, :70])
    assert dev.sent == 0
    drv.prefill(k[:, :70], v[:, :70])  # 60 tokens on the device, 10 on the host
    sent = dev.sent
    with pytest.raises(ValueError, match="FP16"):
        drv.step(q, k[:, 70] * 1e6, v[:, 70])
    assert dev.sent == sent
    for t in range(70, 74):  # 4 more tokens fill the banks' 64 ...
        drv.step(q, k[:, t], v[:, t])
    sent = dev.sent
    with pytest.raises(ValueError, match="capacity"):  # ... the next one would overflow them
        drv.step(q, k[:, 74], v[:, 74])
    assert dev.sent == sent
    assert [b.heads[0].tokens for b in dev.inner.banks] == [64, 64]


# ----------------------------------------------------------------------------------------------
# golden bank: every status reachable; rejected commands change nothing
# ----------------------------------------------------------------------------------------------
TINY = Geometry(Numerics(head_dim=16, subspaces=8, centroids=4, token_capacity=8), heads=2)


def _loaded_bank() -> GoldenBank:
    bank = GoldenBank(TINY)
    rng = random.Random(0)
    n = TINY.num
    for h in range(2):
        for kv in (0, 1):
            for m in range(n.subspaces):
                cb = [rng.randint(-128, 127) for _ in range(n.centroids * n.sub_dim)]
                assert bank.execute(isa.load_cb(TINY, head=h, kv=kv, subspace=m,
                                                centroids=cb)).ok
    keys = [[rng.randint(-128, 127) for _ in range(16)] for _ in range(3)]
    assert bank.execute(isa.write_kv(TINY, head=0, token=0, keys=keys, values=keys)).ok
    return bank


CASES = [  # (command, expected status) on _loaded_bank(): head 0 holds 3 tokens
    (Command(12), Status.BAD_OPCODE),
    (Command(15, data=(1, 2)), Status.BAD_OPCODE),
    (isa.score(head=2), Status.ADDR_RANGE),
    (isa.read_cb(head=0, kv=0, subspace=8), Status.ADDR_RANGE),
    (isa.read_codes(head=0, kv=1, column=0, count=2), Status.ADDR_RANGE),  # 3 tokens: 1 col
    (isa.write_kv(TINY, head=0, token=4, keys=[[0] * 16], values=[[0] * 16]), Status.ADDR_RANGE),
    (Command(Opcode.LOAD_CB, head=0, kv=0, subspace=0, data=(0, 0)), Status.BAD_LENGTH),
    (Command(Opcode.SCORE, head=0, data=(0,)), Status.BAD_LENGTH),
    (Command(Opcode.WRITE_KV, head=0, addr=3, count=2, data=(0,) * 3), Status.BAD_LENGTH),
    (Command(Opcode.WRITE_KV, head=0, addr=3, count=0), Status.BAD_LENGTH),
    (Command(Opcode.RESET, data=(0,)), Status.BAD_LENGTH),
    (isa.write_kv(TINY, head=0, token=3, keys=[[0] * 16] * 6, values=[[0] * 16] * 6),
     Status.CAPACITY),
    (isa.aggregate(head=0), Status.NO_SCORES),
    (isa.score(head=0), Status.NO_LUT),
    (isa.read_lut(head=1), Status.NO_LUT),
    (isa.read_partial(head=0), Status.NO_PARTIAL),
]


@pytest.mark.parametrize(("cmd", "status"), CASES, ids=[str(c[0]) for c in CASES])
def test_each_error_and_state_unchanged(cmd: Command, status: Status) -> None:
    bank = _loaded_bank()
    before = copy.deepcopy(bank.state())
    resp = bank.execute(cmd)
    assert resp.status == status and resp.data == ()
    assert bank.state() == before


def test_no_codebook_errors() -> None:
    bank = GoldenBank(TINY)
    assert bank.execute(isa.read_cb(head=1, kv=1, subspace=0)).status == Status.NO_CODEBOOK
    w = isa.write_kv(TINY, head=0, token=0, keys=[[0] * 16], values=[[0] * 16])
    assert bank.execute(w).status == Status.NO_CODEBOOK
    bank = _loaded_bank()
    lut = isa.load_lut(TINY, head=1, lut=[0] * 32)
    assert bank.execute(lut).ok and bank.execute(isa.score(head=1)).ok
    assert bank.execute(isa.reset()).ok
    assert bank.execute(isa.aggregate(head=1)).status == Status.NO_CODEBOOK


def test_golden_bank_matches_intmodel_and_observe() -> None:
    dev = GoldenDevice(TINY, 1)
    bank = dev.banks[0]
    rng = np.random.default_rng(5)
    n = TINY.num
    cbs = rng.integers(-128, 128, size=(2, n.subspaces, n.centroids, n.sub_dim))
    for kv in (0, 1):
        for m in range(n.subspaces):
            dev.execute(0, isa.load_cb(TINY, head=1, kv=kv, subspace=m,
                                       centroids=cbs[kv, m].reshape(-1).tolist()))
    x = rng.integers(-128, 128, size=(2, 7, n.head_dim))
    assert dev.execute(0, isa.write_kv(TINY, head=1, token=0, keys=x[0].tolist(),
                                       values=x[1].tolist()))[0].ok
    lut = rng.integers(n.lut_min, n.lut_max + 1, size=(n.subspaces, n.centroids))
    for cmd in (isa.load_lut(TINY, head=1, lut=lut.reshape(-1).tolist()), isa.score(head=1),
                isa.aggregate(head=1)):
        assert dev.execute(0, cmd)[0].ok
    (r,) = dev.execute(0, isa.read_partial(head=1))
    kc = intmodel.encode(x[0].reshape(7, n.subspaces, n.sub_dim), cbs[0], n)
    vc = intmodel.encode(x[1].reshape(7, n.subspaces, n.sub_dim), cbs[1], n)
    ref = intmodel.bank_partial(lut, kc, vc, cbs[1], n)
    assert isa.decode_partial(TINY, r) == (ref.max, ref.sum, ref.out.tolist())
    seen = observe(dev, 0)
    assert seen["codes/1/0"] == intmodel.pack_columns(kc, n)
    assert seen["status"][1].tokens == 7 and seen["status"][0].tokens == 0
    assert seen["partial"][0] == 1 and "lut" in seen
    assert bank.state()["partial_head"] == 1


def _random_stream_statuses(g: Geometry, seeds: range, commands: int) -> set[Status]:
    """Random command streams on a golden bank; asserts that every rejected command left the
    bank's state as it was and returns the statuses the streams reached."""
    seen: set[Status] = set()
    for seed in seeds:
        stream = RandomStream(g, seed)
        bank = GoldenBank(g)
        for _ in range(commands):
            cmd = stream.next()
            before = copy.deepcopy(bank.state())
            resp = bank.execute(cmd)
            stream.feedback(cmd, resp)
            seen.add(resp.status)
            if not resp.ok:
                assert bank.state() == before, f"seed {seed}: {cmd!r} changed state"
    return seen


def test_random_streams_rejected_commands_change_nothing() -> None:
    """Random mixes of valid and invalid commands: state changes only on OK."""
    seen = _random_stream_statuses(TINY, range(6), 300)
    assert len(seen) >= 8, f"the streams reached only {sorted(seen)}"


def test_trace_record_and_replay(tmp_path) -> None:
    from aqpim.sw.host.trace import TraceRecorder, read_trace, replay

    path = tmp_path / "step.jsonl"
    q, k, v = _data(2, 40, SMALL.head_dim, seed=9)
    with TraceRecorder(GoldenDevice(Geometry(SMALL), 4), path) as rec:
        drv = Driver(rec, kv_heads=2, iters=3)
        drv.prefill(k[:, :39], v[:, :39])
        out = drv.step(q, k[:, 39], v[:, 39])
        rec.execute(0, Command(13))  # a rejected command is recorded with its status
    geometry, banks, entries = read_trace(path)
    entries = list(entries)
    assert banks == 4 and geometry == Geometry(SMALL)
    assert len(entries) == rec.commands
    assert entries[-1].status == (int(Status.BAD_OPCODE),)
    assert sum(e.bank is None for e in entries) == 0  # each head owns half the banks
    # every response of the replay equals the recorded run's (statuses and data beats)
    resps = replay(path, GoldenDevice(Geometry(SMALL), 4))
    assert any(e.cmd.opcode == Opcode.READ_PARTIAL for e in entries)
    assert [tuple(tuple(r.data) for r in rs) for rs in resps] == [e.data for e in entries]
    assert np.isfinite(out).all()
    # one recorded partial word changed: the replay no longer matches the recorded run
    lines = path.read_text().splitlines()
    at = next(i for i, e in enumerate(entries, start=1) if e.cmd.opcode == Opcode.READ_PARTIAL)
    rec_line = json.loads(lines[at])
    rec_line["data"][0][3] = format(int(rec_line["data"][0][3], 16) ^ 1, "x")
    lines[at] = json.dumps(rec_line)
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(lines) + "\n")
    with pytest.raises(AssertionError, match="beat 3 differs from the recorded run"):
        replay(changed, GoldenDevice(Geometry(SMALL), 4))
    with pytest.raises(ValueError, match="banks"):
        replay(path, GoldenDevice(Geometry(SMALL), 2))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "other"}\n')
    with pytest.raises(ValueError, match="not an aqpim-trace"):
        read_trace(bad)


def test_paired_decode_counts_mismatches_and_cycles() -> None:
    """The RTL-vs-golden session: bit-exact on a second golden device, and a device that
    corrupts one partial word is caught as a mismatch."""
    from aqpim.sim.session import PairedDecode

    class Corrupting(GoldenDevice):
        def execute(self, bank, cmd):
            resps = super().execute(bank, cmd)
            if cmd.opcode == Opcode.READ_PARTIAL and bank == 1:
                r = resps[0]
                data = list(r.data)
                data[2] ^= 1 << 40  # one bit of an output word
                resps = [dataclasses.replace(r, data=tuple(data))]
            return resps

    q, k, v = _data(2, 40, SMALL.head_dim, seed=4)
    for dev, exact in ((GoldenDevice(Geometry(SMALL), 4), True),
                       (Corrupting(Geometry(SMALL), 4), False)):
        run = PairedDecode(dev, kv_heads=2, iters=3)
        run.prefill(k[:, :39], v[:, :39])
        st = run.step(q, k[:, 39], v[:, 39])
        assert st.tokens == 40 and st.commands > 0
        assert st.bank_cycles == [0, 0, 0, 0]  # the golden model counts no cycles
        assert st.bit_exact is exact, st.mismatched_elements


# ----------------------------------------------------------------------------------------------
# GQA: G query-head LUTs per SCORE pass
# ----------------------------------------------------------------------------------------------
def test_gqa_pass_equals_single_query_passes() -> None:
    """One pass with G = 3 LUTs gives each query head the partial a G = 1 pass gives it."""
    g3 = Geometry(SMALL, queries=3)
    g1 = Geometry(SMALL)
    rng = np.random.default_rng(11)
    n = SMALL
    cbs = rng.integers(-128, 128, size=(2, n.subspaces, n.centroids, n.sub_dim))
    x = rng.integers(-128, 128, size=(2, 20, n.head_dim))
    luts = rng.integers(n.lut_min, n.lut_max + 1, size=(3, n.subspaces * n.centroids))
    setup = [isa.load_cb(g1, head=0, kv=kv, subspace=m, centroids=cbs[kv, m].reshape(-1).tolist())
             for kv in (0, 1) for m in range(n.subspaces)]
    setup.append(isa.write_kv(g1, head=0, token=0, keys=x[0].tolist(), values=x[1].tolist()))
    gqa = GoldenBank(g3)
    for cmd in setup:
        assert gqa.execute(cmd).ok
    for q in range(3):
        assert gqa.execute(isa.load_lut(g3, head=0, lut=luts[q].tolist(), query=q)).ok
    (st,) = isa.decode_status(g3, gqa.execute(isa.read_status()))
    assert st.queries == 3
    assert gqa.execute(isa.score(head=0)).ok and gqa.execute(isa.aggregate(head=0)).ok
    for q in range(3):
        one = GoldenBank(g1)
        for cmd in [*setup, isa.load_lut(g1, head=0, lut=luts[q].tolist()), isa.score(head=0),
                    isa.aggregate(head=0)]:
            assert one.execute(cmd).ok
        assert gqa.execute(isa.read_partial(head=0, query=q)) == one.execute(
            isa.read_partial(head=0))
        assert gqa.execute(isa.read_lut(head=0, query=q)).data == one.execute(
            isa.read_lut(head=0)).data


def test_gqa_query_index_errors() -> None:
    g = Geometry(SMALL, heads=2, queries=3)
    bank = GoldenBank(g)
    lut = [0] * (SMALL.subspaces * SMALL.centroids)
    S = Status
    steps = [
        (isa.load_lut(g, head=0, lut=lut, query=3), S.ADDR_RANGE),  # q >= G
        (isa.load_lut(g, head=0, lut=lut, query=1), S.ADDR_RANGE),  # not in order (no set)
        (isa.load_lut(g, head=0, lut=lut, query=0), S.OK),
        (isa.load_lut(g, head=0, lut=lut, query=2), S.ADDR_RANGE),  # skips q = 1
        (isa.load_lut(g, head=1, lut=lut, query=1), S.ADDR_RANGE),  # another head's set
        (isa.load_lut(g, head=0, lut=lut, query=1), S.OK),
        (isa.read_lut(head=0, query=2), S.NO_LUT),  # two loaded
        (isa.read_lut(head=0, query=1), S.OK),
        (isa.score(head=0), S.OK), (isa.aggregate(head=0), S.NO_CODEBOOK),
        (isa.read_partial(head=0, query=0), S.NO_PARTIAL),
    ]
    for cmd, status in steps:
        before = copy.deepcopy(bank.state())
        got = bank.execute(cmd).status
        assert got == status, (cmd, got)
        if status != S.OK:
            assert bank.state() == before


@pytest.mark.parametrize("per_pass", [1, 2, 3, 4])
def test_driver_gqa_passes(per_pass: int) -> None:
    """SmolLM2's shape (3 KV heads, 3 query heads each): the driver scores G query heads per
    pass (ceil(3 / G) passes) and every query head's output is the same, bit for bit, as one
    query head per pass; each key column is streamed ceil(3 / G) times per KV head."""
    outs = {}
    for g in sorted({1, per_pass}):
        dev = GoldenDevice(Geometry(SMALL, queries=g), 3)
        counting = CountingDevice(dev)
        scores = []
        orig = counting.execute

        def execute(bank, cmd, orig=orig, scores=scores):
            if cmd.opcode == Opcode.SCORE:
                scores.append(bank)
            return orig(bank, cmd)

        counting.execute = execute
        drv = Driver(counting, kv_heads=3, iters=4)
        q, k, v = _data(3, 41, SMALL.head_dim, seed=3)
        qs = np.stack([q + 0.3 * i * np.roll(q, i, axis=1) for i in range(3)], axis=1)
        drv.prefill(k[:, :40], v[:, :40])
        outs[g] = drv.step(qs, k[:, 40], v[:, 40])
        assert outs[g].shape == (3, 3, SMALL.head_dim)
        assert len(scores) == 3 * -(-3 // g)  # one bank per KV head, ceil(Q / G) passes
        ref = Driver(GoldenDevice(Geometry(SMALL), 3), kv_heads=3, iters=4)
        ref.prefill(k[:, :40], v[:, :40])
        single = [ref.step(qs[:, i], k[:, 40] if i == 0 else None,
                           v[:, 40] if i == 0 else None) for i in range(3)]
        np.testing.assert_array_equal(outs[g], np.stack(single, axis=1))
    np.testing.assert_array_equal(outs[per_pass], outs[1])


def test_random_streams_gqa() -> None:
    g = Geometry(dataclasses.replace(SMALL, token_capacity=16), heads=2, queries=3)
    seen = _random_stream_statuses(g, range(3), 200)
    assert {Status.OK, Status.ADDR_RANGE, Status.NO_PARTIAL} <= seen
