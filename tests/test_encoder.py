# amaranth: UnusedElaboratable=no
"""PQ encoder (hw/encoder.py): parameter checks, quick Amaranth-simulator tests, and cocotb +
Verilator co-simulation bit-exact against aqpim.sw.golden.intmodel.encode.

Default subset (``-m "not slow"``): parameter checks, the Amaranth-simulator tests, three
representative Verilator parameter sets and the ``aqpim verilog encoder --lint`` test. The full
matrix d in {2, 4} x K in {16, 256} x W in {8, 16} x P in {1, K/4, K} is marked slow
(``nox -s cosim``).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from aqpim.hw.encoder import PQEncoder
from aqpim.sim.runner import build_and_run
from aqpim.sim.streams import pack, unpack
from aqpim.sim.test_encoder_tb import KINDS, episodes, numerics

from aqpim.numerics import Numerics

TB = "aqpim.sim.test_encoder_tb"


# ----------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        ({"centroids": 12}, ValueError, "12"),
        ({"centroids": 512}, ValueError, "512"),
        ({"centroids": 16, "lanes": 3}, ValueError, "3"),
        ({"centroids": 16, "lanes": 32}, ValueError, "32"),
        ({"lanes": 0}, ValueError, "0"),
        ({"elem_bits": 3}, ValueError, "3"),
        ({"elem_bits": 17}, ValueError, "17"),
        ({"sub_dim": 0}, ValueError, "0"),
        ({"subspaces": 0}, ValueError, "0"),
        ({"sub_dim": 2.0}, TypeError, "2.0"),
        ({"lanes": True}, TypeError, "True"),
    ],
)
def test_bad_parameters(kwargs: dict, exc: type, text: str) -> None:
    with pytest.raises(exc, match=text):
        PQEncoder(**kwargs)


def test_positional_parameters_refused() -> None:
    with pytest.raises(TypeError):
        PQEncoder(2, 16)  # type: ignore[misc]


def test_properties_and_widths() -> None:
    enc = PQEncoder(sub_dim=4, centroids=256, subspaces=3, elem_bits=16, lanes=64)
    assert (enc.sub_dim, enc.centroids, enc.subspaces, enc.elem_bits, enc.lanes) == (
        4, 256, 3, 16, 64,
    )
    # P = 64: a 6-level argmin tree, registered after every level but the last (5 cycles)
    assert enc.iterations == 4 and enc.argmin_latency == 5 and enc.code_bits == 8
    # d = 4, W = 16: 64 partial-product rows -> 8 groups of <= 9 -> 16 vectors -> 2 groups:
    # the absolute-difference register and two carry-save stages
    assert enc.distance_latency == 3
    assert enc.latency == 4 + 3 + 3 + 5
    assert PQEncoder(lanes=64, centroids=64, argmin_stage_levels=0,
                     distance_pipelined=False).latency == 1 + 3
    assert PQEncoder(lanes=256, centroids=256, argmin_stage_levels=2).argmin_latency == 3
    # the default: d = 2, W = 8 (16 rows, two groups: one carry-save stage), 2-level tree
    assert PQEncoder(lanes=4).latency == 4 + 3 + 2 + 1
    assert PQEncoder(sub_dim=8, centroids=256, lanes=4).distance_latency == 3
    with pytest.raises(AttributeError):
        enc.lanes = 2  # type: ignore[misc]
    for d, w in ((1, 4), (2, 8), (4, 8), (4, 16), (16, 16)):
        num = Numerics(head_dim=d * 4, subspaces=4, centroids=16, elem_bits=w)
        assert PQEncoder(sub_dim=d, subspaces=4, elem_bits=w).dist_bits == num.dist_bits
        # The width is exact: the largest distance needs every bit.
        largest = d * (2**w - 1) ** 2
        assert largest.bit_length() == num.dist_bits


def test_stimulus_has_ties() -> None:
    """The tie stimuli really contain ties, and the golden model breaks them to the lowest."""
    p = dict(sub_dim=2, centroids=16, subspaces=3, elem_bits=8, lanes=4)
    assert numerics(p).dist_bits == 17
    seen = 0
    cb = np.zeros((3, 16, 2), dtype=np.int64)  # partial reloads keep earlier entries
    for kind, (writes, items) in zip(KINDS, episodes(p, 7, 8), strict=True):
        for s, j, vec in writes:
            cb[s, j] = vec
        if kind not in ("dup_ties", "midpoint_ties", "extremes"):
            continue
        for s, vec, code in items:
            dist = ((cb[s] - np.array(vec)) ** 2).sum(axis=1)
            if (dist == dist.min()).sum() > 1:
                seen += 1
                assert code == int(np.flatnonzero(dist == dist.min())[0])
    assert seen >= 10


# ----------------------------------------------------------------------------------------------
# quick tests on Amaranth's simulator (no build step)
# ----------------------------------------------------------------------------------------------
def _amaranth_run(p: dict[str, int], seed: int, n_vectors: int, kinds: tuple[str, ...], *,
                  idle: float = 0.3, backpressure: float = 0.3) -> np.ndarray:
    dut = PQEncoder(**p)
    rng = random.Random(seed)
    eps = list(episodes(p, seed, n_vectors, kinds))
    expected = [{"sub": s, "code": c} for _, items in eps for s, _, c in items]
    got: list[dict] = []
    accepted: list[int] = []
    state = {"cycle": 0}

    async def drive(ctx) -> None:
        async def put(stream, layout, value) -> None:
            while rng.random() < idle:  # random idle
                await ctx.tick()
            ctx.set(stream.payload.as_value(), pack(layout, value))
            ctx.set(stream.valid, 1)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

        for writes, items in eps:
            for s, j, vec in writes:
                await put(dut.i_cb, dut.cb_layout, {"sub": s, "idx": j, "vec": vec})
            for s, vec, _ in items:
                await put(dut.i_x, dut.x_layout, {"sub": s, "x": vec})
                accepted.append(state["cycle"])

    async def collect(ctx) -> None:
        while len(got) < len(expected):
            # a lost code would wait forever
            assert state["cycle"] < 50_000, f"SEED={seed}: {len(got)} of {len(expected)} codes"
            ready = rng.random() >= backpressure  # random backpressure
            ctx.set(dut.o_code.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(
                dut.o_code.valid, dut.o_code.payload.as_value()
            )
            state["cycle"] += 1
            if valid and ready:
                got.append(unpack(dut.code_layout, payload))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(collect)
    vcd = os.environ.get("WAVES") not in (None, "", "0")
    if vcd:
        with sim.write_vcd(f"encoder_amaranth_{seed}.vcd"):
            sim.run()
    else:
        sim.run()
    assert got == expected, f"SEED={seed}: first mismatch at " + str(
        next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
    )
    gaps = np.diff(accepted)
    assert gaps.size == 0 or gaps.min() >= dut.iterations
    return gaps


@pytest.mark.parametrize(
    "p",
    [
        dict(sub_dim=2, centroids=16, subspaces=3, elem_bits=8, lanes=1),
        dict(sub_dim=2, centroids=16, subspaces=3, elem_bits=8, lanes=4),
        dict(sub_dim=4, centroids=16, subspaces=2, elem_bits=16, lanes=16),
        dict(sub_dim=1, centroids=2, subspaces=1, elem_bits=4, lanes=2),
        # pipelined argmin trees: A = 5 at P = 64, A = 3 with T = 4 passes, A = 1 with two
        # levels per stage at P = 16, and the combinational tree (A = 0) at P = 16
        dict(sub_dim=2, centroids=64, subspaces=2, elem_bits=8, lanes=64),
        dict(sub_dim=2, centroids=64, subspaces=2, elem_bits=8, lanes=16),  # T = 4, A = 3
        dict(sub_dim=2, centroids=16, subspaces=2, elem_bits=8, lanes=16, argmin_stage_levels=2),
        dict(sub_dim=2, centroids=16, subspaces=2, elem_bits=8, lanes=16, argmin_stage_levels=0),
        # distance lanes: d = 8 (three registered stages) and the combinational lane
        dict(sub_dim=8, centroids=16, subspaces=2, elem_bits=8, lanes=4),
        dict(sub_dim=2, centroids=16, subspaces=2, elem_bits=8, lanes=4, distance_pipelined=False),
    ],
    ids=lambda p: "d{sub_dim}-K{centroids}-M{subspaces}-W{elem_bits}-P{lanes}".format(**p)
    + (f"-S{p['argmin_stage_levels']}" if "argmin_stage_levels" in p else "")
    + ("-comb" if p.get("distance_pipelined") is False else ""),
)
def test_amaranth_sim_matches_golden(p: dict[str, int]) -> None:
    seed = int(os.environ.get("SEED", "1234"))
    _amaranth_run(p, seed, n_vectors=4, kinds=KINDS)


@pytest.mark.parametrize("lanes", [16, 4])
def test_skid_under_backpressure(lanes: int) -> None:
    """Sub-vectors offered every cycle against random backpressure 0.9 (T = 1 and T = 4): the
    output FIFO fills and the credit count holds sub-vectors back; every code arrives once,
    in order (a FIFO one entry short of the credit count lost codes here)."""
    p = dict(sub_dim=2, centroids=16, subspaces=3, elem_bits=8, lanes=lanes)
    _amaranth_run(p, 77, n_vectors=12, kinds=("random",), idle=0.0, backpressure=0.9)


@pytest.mark.parametrize("lanes", [16, 4, 1])
def test_one_subvector_per_t_cycles(lanes: int) -> None:
    """No idle, no backpressure: sub-vectors are taken exactly T cycles apart (the output
    FIFO's ceil((latency + 1) / T) entries never hold one back)."""
    p = dict(sub_dim=2, centroids=16, subspaces=3, elem_bits=8, lanes=lanes)
    gaps = _amaranth_run(p, 5, n_vectors=6, kinds=("random",), idle=0.0, backpressure=0.0)
    assert gaps.tolist() == [16 // lanes] * len(gaps)


# ----------------------------------------------------------------------------------------------
# cocotb + Verilator
# ----------------------------------------------------------------------------------------------
def _matrix() -> list:
    cases = []
    # One set per axis: P = K/4 (d=2, K=16), P = K with W = 16 (d=4), K = 256 with P = 1.
    default = {(2, 16, 8, 4), (4, 16, 16, 16), (2, 256, 8, 1)}
    for d in (2, 4):
        for k in (16, 256):
            for w in (8, 16):
                for lanes in (1, k // 4, k):
                    marks = [pytest.mark.cosim]
                    if (d, k, w, lanes) not in default:
                        marks.append(pytest.mark.slow)
                    p = dict(sub_dim=d, centroids=k, subspaces=3, elem_bits=w, lanes=lanes)
                    cases.append(pytest.param(p, marks=marks, id=f"d{d}-K{k}-W{w}-P{lanes}"))
    return cases


@pytest.mark.parametrize("p", _matrix())
def test_cosim_encoder(p: dict[str, int]) -> None:
    t = p["centroids"] // p["lanes"]
    # Fewer vectors where one takes many cycles, so every set stays within seconds.
    n_vectors = 8 if t <= 4 else 4 if t <= 64 else 2
    res = build_and_run(
        PQEncoder, unit="pq_encoder", params=p, test_module=TB,
        test_params={"n_vectors": n_vectors, "n_rate": 4},
    )
    assert res.tests == 2 and res.failed == 0


# ----------------------------------------------------------------------------------------------
# aqpim verilog
# ----------------------------------------------------------------------------------------------
@pytest.mark.cosim
def test_aqpim_verilog_encoder_lint(tmp_path, capsys) -> None:
    from aqpim.cli import main

    cfg = tmp_path / "enc.json"
    cfg.write_text('{"encoder": {"sub_dim": 4, "centroids": 16, "lanes": 16}}')
    rc = main(["verilog", "encoder", "--config", str(cfg), "--param", "elem_bits=16",
               "--out", str(tmp_path), "--lint"])
    assert rc == 0, capsys.readouterr().err
    text = (tmp_path / "encoder.v").read_text()
    assert "// parameters: sub_dim=4, centroids=16, subspaces=64, elem_bits=16, lanes=16" in text
    assert "module encoder(" in text
    assert "lint-only -Wall clean" in capsys.readouterr().out


@pytest.mark.cosim
def test_lint_can_fail(tmp_path) -> None:
    """The lint step reports a warning that is not waived (an undriven output)."""
    from aqpim.hw.verilog import lint

    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input wire a, output wire y, output wire z);\n"
                   "  assign y = a;\nendmodule\n")
    res = lint(bad, "bad")
    assert res.returncode != 0 and "UNDRIVEN" in res.stdout + res.stderr


@pytest.mark.parametrize(
    "argv, text",
    [
        (["encoder", "-p", "lanes=3"], "lanes 3 must divide"),
        (["encoder", "-p", "bogus=1"], "unknown parameter(s) bogus"),
        (["encoder", "-p", "lanes=x"], "'x' is not an integer"),
        (["nosuchunit"], "unknown unit 'nosuchunit'"),
        ([], "give a UNIT or --all"),
    ],
)
def test_aqpim_verilog_bad_input(argv: list[str], text: str, tmp_path, capsys) -> None:
    from aqpim.hw.verilog import main

    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert text in capsys.readouterr().err
