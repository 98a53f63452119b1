"""Float references, the integer pipeline end to end, the synthetic generator and the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from aqpim.commands import demo
from aqpim.sw.golden import api, pq, reference, synthetic


def _softmax_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = [float(q @ kt) / np.sqrt(q.size) for kt in k]
    p = np.exp(np.array(s) - max(s))
    return (p / p.sum()) @ v


@pytest.fixture(scope="module")
def head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = synthetic.generate(heads=1, tokens=512, seed=3)
    return g["q"][0], g["k"][0], g["v"][0]


def test_exact_attention(head: tuple) -> None:
    q, k, v = head
    np.testing.assert_allclose(reference.exact_attention(q, k, v), _softmax_attention(q, k, v),
                               rtol=1e-12)


@pytest.mark.parametrize(("sinks", "recent"), [(0, 0), (4, 32), (0, 16), (3, 0)])
def test_pq_attention_equals_attention_on_decoded_vectors(head: tuple, sinks: int,
                                                          recent: int) -> None:
    # The histogram path must equal plain attention over decoded K/V (tokens outside the
    # sinks and recent window replaced by their reconstructions).
    q, k, v = head
    kcb = pq.train_codebooks(k, subspaces=32, centroids=16, iters=5)
    vcb = pq.train_codebooks(v, subspaces=32, centroids=16, iters=5, seed=1)
    _, comp = reference.split_tokens(k.shape[0], sinks, recent)
    kd, vd = k.copy(), v.copy()
    kd[comp] = pq.decode(pq.encode(k[comp], kcb), kcb)
    vd[comp] = pq.decode(pq.encode(v[comp], vcb), vcb)
    got = reference.pq_attention(q, k, v, kcb, vcb, sinks=sinks, recent=recent)
    np.testing.assert_allclose(got, _softmax_attention(q, kd, vd), rtol=1e-9, atol=1e-12)


def test_full_precision_window_covering_everything_is_exact(head: tuple) -> None:
    q, k, v = head
    exact = reference.exact_attention(q, k, v)
    cb = np.zeros((64, 16, 2))
    np.testing.assert_allclose(reference.pq_attention(q, k, v, cb, cb, sinks=300, recent=300),
                               exact, rtol=1e-12)
    res = reference.int_attention(q, k, v, sinks=512, recent=0)
    np.testing.assert_allclose(res.out, exact, rtol=1e-12)


def test_int_attention_close_to_float_pq(head: tuple) -> None:
    q, k, v = head
    res = reference.int_attention(q, k, v, iters=10)
    fl = reference.pq_attention(q, k, v, res.key_codebooks, res.value_codebooks, sinks=4,
                                recent=32)
    ex = reference.exact_attention(q, k, v)
    err_int = np.linalg.norm(res.out - fl) / np.linalg.norm(fl)
    err_pq = np.linalg.norm(fl - ex) / np.linalg.norm(ex)
    # Measured on this head: int vs float PQ ~1e-2; float PQ vs exact ~1e-1 (docs/golden.md).
    assert err_int < 0.05
    assert err_int < err_pq
    assert err_pq < 0.6
    # Bank count and layout only change the integer rounding: results stay close.
    one = reference.int_attention(q, k, v, banks=1, layout="blocks",
                                  key_codebooks=res.key_codebooks,
                                  value_codebooks=res.value_codebooks)
    assert np.linalg.norm(one.out - res.out) / np.linalg.norm(res.out) < 5e-3  # measured 1.1e-3
    assert sum(p.sum > 0 for p in res.partials) == 4


def test_bank_assignment_and_split() -> None:
    rr = reference.bank_assignment(10, 4)
    bl = reference.bank_assignment(10, 4, "blocks")
    assert [a.tolist() for a in rr] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    assert [a.tolist() for a in bl] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    full, comp = reference.split_tokens(10, 2, 3)
    assert full.tolist() == [0, 1, 7, 8, 9] and comp.tolist() == [2, 3, 4, 5, 6]
    full, comp = reference.split_tokens(10, 0, 0)
    assert full.size == 0 and comp.size == 10


def test_reference_bad_input(head: tuple) -> None:
    q, k, v = head
    with pytest.raises(ValueError, match="shape \\(T, 128\\)"):
        reference.exact_attention(q, k[:, :64], v)
    with pytest.raises(ValueError, match="non-finite value nan"):
        reference.exact_attention(np.full(128, np.nan), k, v)
    with pytest.raises(TypeError, match="floating dtype"):
        reference.exact_attention(q.astype(np.int64), k, v)
    with pytest.raises(ValueError, match="sinks must be >= 0, got -1"):
        reference.split_tokens(10, -1, 0)
    with pytest.raises(ValueError, match="layout must be one of"):
        reference.bank_assignment(10, 2, "striped")
    with pytest.raises(ValueError, match="banks must be >= 1, got 0"):
        reference.int_attention(q, k, v, banks=0)
    with pytest.raises(ValueError, match="token_capacity"):
        from aqpim.numerics import Numerics
        reference.int_attention(q, k, v, numerics=Numerics(token_capacity=64))
    with pytest.raises(ValueError, match="mode must be one of"):
        api.attention(q, k, v, mode="fp8")


def test_api_modes(head: tuple) -> None:
    q, k, v = head
    ex = api.attention(q, k, v, mode="exact")
    for mode in ("pq", "int"):
        out = api.attention(q, k, v, mode=mode, subspaces=32)
        assert out.shape == (128,)
        assert np.linalg.norm(out - ex) / np.linalg.norm(ex) < 0.6


def test_synthetic_properties() -> None:
    a = synthetic.generate(heads=2, tokens=1024, seed=7)
    b = synthetic.generate(heads=2, tokens=1024, seed=7)
    assert all(np.array_equal(a[x], b[x]) for x in ("q", "k", "v"))
    assert a["q"].shape == (2, 128) and a["k"].shape == a["v"].shape == (2, 1024, 128)
    for h in range(2):
        k, v = a["k"][h], a["v"][h]
        ch = a["outlier_channels"][h]
        rest = np.setdiff1d(np.arange(128), ch)
        # Outlier channels: large in keys, on every token; none in values.
        assert np.abs(k[4:, ch]).mean() > 4 * np.abs(k[4:, rest]).mean()
        assert np.abs(v).max() < 4 * np.abs(v).std() + np.abs(v).mean() + 2
        # Peaked attention: far fewer effective tokens than T; the sink carries weight.
        s = k @ a["q"][h] / np.sqrt(128)
        p = np.exp(s - s.max())
        p /= p.sum()
        assert np.exp(-(p * np.log(p + 1e-300)).sum()) < 1024 / 4
        assert p[0] == p.max()
    with pytest.raises(ValueError, match="head_dim must be even"):
        synthetic.generate(heads=1, tokens=8, head_dim=7)
    with pytest.raises(ValueError, match="outliers must be <= head_dim / 4"):
        synthetic.generate(heads=1, tokens=8, head_dim=8, outliers=3)


def test_demo_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--golden-only", "--heads", "2", "--tokens", "256", "--json",
                      "--iters", "5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["storage"]["bits_per_element"] == 2.0
    assert res["storage"]["compression_codes"] == 8.0
    assert len(res["heads"]) == 2
    m = res["mean"]
    assert m["int_vs_pq"]["rel_err"] < m["pq_vs_exact"]["rel_err"]
    assert 0.5 < m["int_vs_exact"]["cosine"] <= 1.0
    assert demo.main(["--golden-only", "--heads", "1", "--tokens", "256", "--iters", "2"]) == 0
    assert "int vs exact" in capsys.readouterr().out
    assert demo.main(["--golden-only", "--centroids", "12"]) == 2
    assert "power of two" in capsys.readouterr().err
    # bad RTL configurations are refused before anything is built
    assert demo.main(["--centroids", "12"]) == 2
    assert "power of two" in capsys.readouterr().err
    assert demo.main(["--heads", "3"]) == 2
    assert "must divide banks" in capsys.readouterr().err
    assert demo.main(["--layout", "blocks"]) == 2
    assert "--golden-only" in capsys.readouterr().err
    assert demo.main(["--sinks", "-1"]) == 2
    assert "sinks must be >= 0" in capsys.readouterr().err
    assert demo.main(["--recent", "-2"]) == 2
    assert "recent must be >= 0" in capsys.readouterr().err
    assert demo.main(["--golden-only", "--steps", "2"]) == 2
    assert "RTL mode" in capsys.readouterr().err
    assert demo.main(["--capacity", "100"]) == 2
    assert "capacity 100 < 513" in capsys.readouterr().err


@pytest.mark.cosim
def test_demo_rtl_small(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """The demo's main job on a small shape (shares the RTL build of tests/test_bank.py):
    bit-exact steps, the trace kept, model cycles equal to the RTL's, errors ordered."""
    trace = tmp_path / "demo.jsonl"
    rc = demo.main(["--head-dim", "32", "-M", "16", "--tokens", "100", "--steps", "2",
                    "--capacity", "64", "--trace", str(trace), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    res = json.loads(out)  # stdout carries the JSON only (simulator logs go to stderr)
    assert res["bit_exact"] is True
    assert (res["config"]["sinks"], res["config"]["recent"]) == (4, 32)  # the defaults
    assert [st["tokens"] for st in res["steps"]] == [101, 102]
    for st, pf in zip(res["steps"], res["perf"]["trace_steps"], strict=True):
        assert st["mismatched_elements"] == 0
        assert pf["model_unit_cycles"] == pf["rtl_cycles"] == max(st["bank_cycles"])
        assert pf["hbm3_seconds"] > 0
        # the integer pipeline is much closer to float PQ than PQ is to exact attention
        assert st["rtl_vs_pq"]["rel_err"] < 0.5 * st["pq_vs_exact"]["rel_err"]
        # full-precision sinks and window: closer to exact than every token compressed
        assert st["rtl_vs_exact"]["rel_err"] < st["no_window_vs_exact"]["rel_err"]
    assert res["perf"]["same_banks"]["fp16_pim_seconds"] > pf["hbm3_seconds"]
    assert trace.read_text().startswith('{"format": "aqpim-trace"')


@pytest.mark.parametrize(("config", "message"), [
    ({"D": 64, "M_k": 8, "K_k": 256, "M_v": 16, "K_v": 12}, "value_centroids must be a power"),
    ({"D": 64, "Mk": 8}, "unknown key 'Mk'"),
    ([64, 8], "expected a JSON object"),
])
def test_demo_config_file_errors(capsys: pytest.CaptureFixture[str], tmp_path, config,
                                 message: str) -> None:
    """--config FILE: a bad key or value is refused (status 2) before anything is built."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    assert demo.main(["--config", str(path), "--json"]) == 2
    assert message in capsys.readouterr().err


def test_demo_config_file_and_accurate_options(tmp_path) -> None:
    """The file's short names map to the configuration; options on the command line win;
    --accurate is d = 4, K = 256 on both sides."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"D": 64, "M_k": 8, "K_k": 256, "M_v": 16, "K_v": 256,
                                "banks": 2, "heads": 1, "tokens": 300}))
    cfg = demo.RtlDemoConfig(**demo.load_config(path))
    num = cfg.numerics()
    assert (num.subspaces, num.centroids, num.values.subspaces, num.values.centroids) == (
        8, 256, 16, 256)
    assert num.bits_per_element == 1.5 and cfg.encoder_lanes == 16
    assert demo.main(["--golden-only", "--accurate"]) == 2  # an RTL-mode option
    acc = demo.rtl_config({"accurate": True, "head_dim": 64}).numerics()
    assert (acc.subspaces, acc.centroids, acc.symmetric, acc.bits_per_element) == (
        16, 256, True, 2.0)
    # the file's D, an explicit option over the file
    mixed = demo.rtl_config({"config": str(path), "accurate": True, "banks": 4})
    assert (mixed.head_dim, mixed.subspaces, mixed.value_subspaces, mixed.banks) == (
        64, 16, 0, 4)


@pytest.mark.cosim
@pytest.mark.slow
def test_demo_rtl_config_file(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """``aqpim demo --config FILE`` on keys d = 8, K = 256 with values d = 4, K = 256 at
    D = 64 (the build of tests/test_bank.py::test_rtl_decode_key_value_geometry)."""
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"D": 64, "M_k": 8, "K_k": 256, "M_v": 16, "K_v": 256,
                                "banks": 2, "heads": 1, "tokens": 300, "steps": 1,
                                "capacity": 160}))
    rc = demo.main(["--config", str(path), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["bit_exact"] is True
    assert res["numerics"]["value_subspaces"] == 16 and res["numerics"]["bits_per_element"] == 1.5
    for st, pf in zip(res["steps"], res["perf"]["trace_steps"], strict=True):
        assert pf["model_unit_cycles"] == pf["rtl_cycles"] == max(st["bank_cycles"])
