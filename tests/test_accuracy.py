"""Accuracy evaluation: metrics, baseline bit accounting, --acts validation, a quick run."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from aqpim.sw.eval import accuracy as acc
from aqpim.sw.eval import baselines as bl


# ----------------------------------------------------------------------------------------------
# metrics against hand-computed cases
# ----------------------------------------------------------------------------------------------
def test_relative_error_and_cosine_by_hand():
    exact = np.array([[3.0, 4.0], [1.0, 0.0]])
    approx = np.array([[3.0, 0.0], [0.0, 1.0]])
    # ||(0,-4)|| / 5 = 0.8;  ||(-1,1)|| / 1 = sqrt(2)
    np.testing.assert_allclose(acc.relative_error(approx, exact), [0.8, math.sqrt(2)])
    # (3*3 + 0*4) / (3 * 5) = 0.6;  orthogonal = 0
    np.testing.assert_allclose(acc.cosine(approx, exact), [0.6, 0.0])
    assert acc.cosine(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        acc.relative_error(np.zeros(2), np.zeros(3))


def test_topk_overlap_by_hand():
    exact = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    approx = np.array([5.0, 1.0, 3.0, 2.0, 4.0])  # top-2: {0, 4} vs exact {0, 1}
    assert acc.topk_overlap(approx, exact, 2)[0] == 0.5
    assert acc.topk_overlap(approx, exact, 5)[0] == 1.0
    valid = np.array([True, True, False, False, False])  # causal: only 2 tokens, k' = 2
    assert acc.topk_overlap(approx, exact, 8, valid)[0] == 1.0
    with pytest.raises(ValueError, match="k must be"):
        acc.topk_overlap(approx, exact, 0)


def test_rotation_is_orthogonal_and_balances_variance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8)) * np.array([8, 4, 2, 1, 1, 1, 1, 1.0])
    r = acc.rotation(x, 2)
    np.testing.assert_allclose(r.T @ r, np.eye(8), atol=1e-12)
    # Largest and second-largest directions never share a subspace (greedy allocation).
    var = np.var(x @ r, axis=0)
    top2 = np.argsort(-var)[:2]
    assert top2[0] // 2 != top2[1] // 2


# ----------------------------------------------------------------------------------------------
# baselines: quantization and bits
# ----------------------------------------------------------------------------------------------
def test_quantize_groups_by_hand():
    x = np.array([[0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(bl.quantize_groups(x, 2), x)  # 4 levels hit 0..3 exactly
    np.testing.assert_array_equal(bl.quantize_groups(x, 1), [[0.0, 0.0, 3.0, 3.0]])
    np.testing.assert_array_equal(bl.quantize_groups(np.full((1, 3), 2.5), 2), [[2.5] * 3])


def test_uniform_keys_per_channel_values_per_token():
    k = np.zeros((4, 2))
    k[:, 0] = [0.0, 1.0, 2.0, 3.0]
    k[:, 1] = [100.0, 101.0, 102.0, 103.0]  # an outlier channel keeps its own range
    np.testing.assert_array_equal(bl.uniform_keys(k, 2, group=4), k)
    v = np.array([[0.0, 1.0, 2.0, 3.0], [10.0, 10.0, 10.0, 13.0]])
    np.testing.assert_array_equal(bl.uniform_values(v, 2, group=4), v)
    with pytest.raises(ValueError, match="does not divide"):
        bl.uniform_values(v, 2, group=3)
    with pytest.raises(ValueError, match="bits must be"):
        bl.uniform_keys(k, 9, group=4)


def test_uniform_bits_accounting():
    # keys: 2 + 32/128; values: 2 + 32/32 -> mean 2.625
    assert bl.uniform_bits(2, 128, 32) == pytest.approx(2.625)
    assert bl.uniform_bits(4, 64, 64) == pytest.approx(4.5)
    s = acc.Setting("u", "uniform", bits=3)
    b = acc.bits_per_element(s, tokens=512, head_dim=32, prefill=256, key_group=128,
                             value_group=32, amortise=32768)
    assert b["total"] == pytest.approx(3.625)


def test_pq_bits_accounting_by_hand():
    s = acc.Setting("p", "pq", d=2, centroids=16, sinks=1, recent=8, codebooks="offline")
    b = acc.bits_per_element(s, tokens=512, head_dim=32, prefill=256, key_group=128,
                             value_group=32, amortise=32768)
    fp = 9 * 16 / 512
    codes = 4 / 2 * 503 / 512
    books = (16 * 32 * 8 + 16 * 16) / (32768 * 32)
    assert b["fp16_tokens"] == pytest.approx(fp)
    assert b["codes"] == pytest.approx(codes)
    assert b["codebooks"] == pytest.approx(books)
    assert b["total"] == pytest.approx(fp + codes + books)
    # prefill codebooks with 3 refreshes (at 320, 384, 448) are 4 generations over 512 tokens
    r = acc.Setting("r", "pq", d=2, centroids=16, codebooks="prefill", refresh=64)
    br = acc.bits_per_element(r, tokens=512, head_dim=32, prefill=256, key_group=128,
                              value_group=32, amortise=32768)
    assert br["codebooks"] == pytest.approx(4 * (16 * 32 * 8 + 16 * 16) / (512 * 32))


# ----------------------------------------------------------------------------------------------
# malformed --acts files
# ----------------------------------------------------------------------------------------------
def _good(t: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {n: rng.normal(size=(1, t, 2, 8)).astype(np.float16) for n in "QKV"}


@pytest.mark.parametrize(
    "mutate, exc, match",
    [
        (lambda a: a.pop("V"), ValueError, "missing array 'V'"),
        (lambda a: a.update(K=a["K"][0]), ValueError, "4 dimensions"),
        (lambda a: a.update(Q=a["Q"][:, :32]), ValueError, "shapes differ"),
        (lambda a: a.update(K=a["K"].astype(np.int16)), TypeError, "float16 or float32"),
        (lambda a: a["V"].__setitem__((0, 3, 1, 2), np.nan), ValueError,
         r"non-finite.*\(0, 3, 1, 2\)"),
        (lambda a: a.update(window=np.int64(48)), ValueError, "does not divide"),
    ],
)
def test_malformed_acts_raise(mutate, exc, match):
    arrays = _good()
    mutate(arrays)
    with pytest.raises(exc, match=match):
        acc.check_acts(arrays, name="bad.npz")


def test_malformed_acts_file_cli(tmp_path, capsys):
    arrays = _good()
    arrays["Q"] = arrays["Q"].astype(np.int32)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert acc.main(["--acts", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "float16 or float32" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    assert acc.main(["--acts", str(junk), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    assert acc.main(["--acts", str(tmp_path / "none.npz")]) == 2
    assert "no such activation file" in capsys.readouterr().err


def test_committed_sample_loads():
    acts = acc.load_acts()
    assert acts.q.shape[0] == 6 and acts.head_dim == 32 and acts.window == 512
    assert acts.sequences >= 2


# ----------------------------------------------------------------------------------------------
# evaluation paths
# ----------------------------------------------------------------------------------------------
def _clustered(t: int, seqs: int, dim: int = 32, clusters: int = 8, seed: int = 3):
    """K/V near a few cluster centres (as PQ assumes), Q aimed at one cluster."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in "KV":
        centres = rng.normal(size=(clusters, dim))
        pick = rng.integers(0, clusters, size=(1, t * seqs, 1))
        out[name] = (centres[pick] + 0.03 * rng.normal(size=(1, t * seqs, 1, dim)))
    out["Q"] = 2.0 * out["K"][:, rng.permutation(t * seqs)] + 0.3 * rng.normal(
        size=out["K"].shape
    )
    return {k: v.astype(np.float32) for k, v in out.items()} | {"window": np.int64(t)}


def test_fp16_and_exact_paths_agree_with_reference():
    from aqpim.sw.golden import reference

    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(64, 16)) for _ in range(3))
    causal = np.arange(64)[None, :] <= np.array([40, 63])[:, None]
    out, _ = acc._attend(q[[40, 63]], np.broadcast_to(k, (2, 64, 16)),
                         np.broadcast_to(v, (2, 64, 16)), causal)
    np.testing.assert_allclose(out[0], reference.exact_attention(q[40], k[:41], v[:41]))
    np.testing.assert_allclose(out[1], reference.exact_attention(q[63], k, v))
    r = acc.evaluate_sequence(q, k, v, acc.Setting("f", "fp16"), prefill=32, stride=8)
    assert r["float"]["rel_err"] < 1e-3 and r["float"]["topk"] > 0.9


def test_pq_float_matches_reference_pq_attention():
    """With prefill codebooks the float path equals reference.pq_attention given the same
    codebooks (an independent implementation: LUT + histogram instead of decoding)."""
    from aqpim.sw.golden import pq, reference

    a = _clustered(96, 1)
    q, k, v = (a[n][0, :, 0].astype(np.float64) for n in "QKV")
    s = acc.Setting("p", "pq", d=4, centroids=16, sinks=2, recent=5, codebooks="prefill")
    kb = pq.train_codebooks(k[:48], subspaces=8, centroids=16, iters=25, seed=acc.SEED)
    vb = pq.train_codebooks(v[:48], subspaces=8, centroids=16, iters=25, seed=acc.SEED + 1000)
    pos = np.arange(48, 96, 16)
    causal = np.arange(96)[None, :] <= pos[:, None]
    full = acc._full_mask(96, pos, s.sinks, s.recent) & causal
    kh, vh = pq.decode(pq.encode(k, kb), kb), pq.decode(pq.encode(v, vb), vb)
    out, _ = acc._attend(q[pos], np.where(full[:, :, None], k, kh), np.where(full[:, :, None],
                         v, vh), causal)
    for i, t in enumerate(pos):
        want = reference.pq_attention(q[t], k[:t + 1], v[:t + 1], kb, vb, sinks=2, recent=5)
        np.testing.assert_allclose(out[i], want, rtol=1e-10, atol=1e-12)


def test_quick_end_to_end_pq_beats_uniform(tmp_path, monkeypatch, capsys):
    """--quick on clustered synthetic data: the JSON is complete, and 2-bit PQ beats uniform
    2-bit (which even has more bits) on data that PQ's clusters fit. With --json, stdout is
    exactly one JSON document (the report)."""
    f = tmp_path / "acts.npz"
    np.savez(f, **_clustered(64, 2))
    monkeypatch.setitem(sys.modules, "torch", None)  # the task metric must skip cleanly
    out = tmp_path / "out"
    rc = acc.main(["--acts", str(f), "--quick", "--out", str(out), "--no-progress",
                   "--task", "on", "--stride", "8", "--json"])
    assert rc == 0
    rep = json.loads((out / "accuracy.json").read_text())
    printed = json.loads(capsys.readouterr().out)  # fails on any other stdout text
    assert printed["results"] == rep["results"]
    by = {r["setting"]["name"]: r for r in rep["results"]}
    assert set(by) >= {"fp16", "uniform-2", "uniform-3", "uniform-4", "pq-d2-K16", "best"}
    for r in rep["results"]:
        assert 0 <= r["float"]["rel_err"] < 10 and r["bits"]["total"] > 0
    pq2, u2 = by["pq-d2-K16"], by["uniform-2"]
    assert pq2["bits"]["total"] <= u2["bits"]["total"]
    assert pq2["float"]["rel_err"] < 0.5 * u2["float"]["rel_err"]
    assert pq2["int"]["rel_err"] < 0.5 * u2["float"]["rel_err"]
    # "best" (quick) has split key/value widths and the query-aware transform: the integer
    # model (two Numerics) must track the float reference.
    assert by["best"]["setting"]["key_d"] == 4
    assert abs(by["best"]["int"]["rel_err"] - by["best"]["float"]["rel_err"]) < 0.02
    assert "torch" in rep["task"]["skipped"]
    assert (out / "error_vs_bits.png").stat().st_size > 1000
    assert (out / "accuracy.txt").read_text().startswith("setting")


# ----------------------------------------------------------------------------------------------
# query-aware key transform, split key/value codes, stored calibration
# ----------------------------------------------------------------------------------------------
def test_key_transform_keeps_scores_and_cuts_score_error():
    """q' . k' = q . k exactly; and k-means in the Sigma_q^(1/2) space gives a smaller mean
    squared score error E[(q . (k - c))^2] than k-means on raw keys when queries are
    anisotropic (their large-variance channels are where the key error matters)."""
    from aqpim.sw.eval import calibrate
    from aqpim.sw.golden import pq

    rng = np.random.default_rng(11)
    dim, n = 8, 2000
    # In every subspace (pair of channels) one channel matters to the queries, one does not.
    q = rng.normal(size=(n, dim)) * np.array([6, 0.2, 6, 0.2, 6, 0.2, 6, 0.2])
    k = rng.normal(size=(n, dim))
    a = calibrate.key_transform(q, k, 2, qaware=True, rotate=True)
    np.testing.assert_allclose((q @ np.linalg.inv(a).T) @ (k @ a).T, q @ k.T, atol=1e-9)
    errs = {}
    for qaware in (False, True):
        a = calibrate.key_transform(q, k, 2, qaware=qaware, rotate=False)
        cb = pq.train_codebooks(k @ a, subspaces=4, centroids=4, iters=20, seed=0)
        kh = pq.decode(pq.encode(k @ a, cb), cb) @ np.linalg.inv(a)
        errs[qaware] = np.mean(((k - kh) @ q[:200].T) ** 2)
    assert errs[True] < 0.5 * errs[False]
    r = calibrate.key_transform(q, k, 2, qaware=False, rotate=True)
    np.testing.assert_allclose(r.T @ r, np.eye(dim), atol=1e-12)  # rotation only: orthogonal


def test_split_bits_accounting_by_hand():
    s = acc.Setting("p", "pq", d=4, centroids=256, key_d=4, key_centroids=64, sinks=1,
                    recent=8, codebooks="calib")
    assert (s.kd, s.kk, s.split) == (4, 64, True)
    b = acc.bits_per_element(s, tokens=512, head_dim=32, prefill=256, key_group=128,
                             value_group=32, amortise=32768)
    # keys 6/4 = 1.5 bits, values 8/4 = 2 bits per element: mean 1.75 over 503 PQ tokens
    assert b["codes"] == pytest.approx(1.75 * 503 / 512)
    books = ((64 * 32 * 8 + 8 * 16) + (256 * 32 * 8 + 8 * 16)) / (2 * 32768 * 32)
    assert b["codebooks"] == pytest.approx(books)
    assert acc.Setting("e", "pq", d=2, centroids=16, key_d=2).split is False


def test_calib_modules_are_held_out():
    from aqpim.sw.eval import calibrate, capture

    assert not set(calibrate.CALIB_MODULES) & set(capture.STDLIB_MODULES)
    assert len(set(calibrate.CALIB_MODULES)) == len(calibrate.CALIB_MODULES)


def test_committed_calibration_fits_the_sample_and_the_defaults():
    from aqpim.sw.eval import calibrate

    cal = calibrate.load_calibration()
    acts = acc.load_acts()
    assert cal.matches(acts) is None
    assert cal.tokens >= 16384
    for s in acc.default_settings():
        if s.kind == "pq" and s.codebooks == "calib":
            for b in (calibrate.Book("K", s.kd, s.kk, rotate=s.rotate, qaware=s.qaware),
                      calibrate.Book("V", s.d, s.centroids, rotate=s.rotate)):
                assert cal.has(b), (s.name, b.name)
    xf, cb, sc = cal.get(calibrate.Book("K", 8, 256, qaware=True), 2, 1)
    assert xf.shape == (32, 32) and cb.shape == (4, 256, 8) and sc.shape == (4,)
    assert np.all(sc > 0)
    other = acc.check_acts(_good())  # 1 layer, 2 heads, D = 8: not what the books are for
    assert "heads" in cal.matches(other)
    with pytest.raises(ValueError, match="no such calibration"):
        calibrate.load_calibration("/nonexistent/calib.npz")


def test_stored_calibration_beats_other_window_codebooks():
    """On one real head, the stored held-out codebooks (24K tokens, query-aware) give a lower
    error than codebooks trained on the sample's other window (512 tokens), and the integer
    model stays within 0.01 of the float PQ reference with split key/value widths."""
    from aqpim.sw.eval import calibrate

    acts, cal = acc.load_acts(), calibrate.load_calibration()
    lay, h, win = 3, 1, acts.window
    q, k, v = (x[lay, :win, h] for x in (acts.q, acts.k, acts.v))
    cq, ck, cv = (x[lay, win:2 * win, h] for x in (acts.q, acts.k, acts.v))
    best = next(s for s in acc.default_settings() if s.name == "best")
    kw = dict(prefill=256, stride=32, calib_q=cq, calib_k=ck, calib_v=cv,
              stored=acc.Stored(cal, lay, h))
    r_cal = acc.evaluate_sequence(q, k, v, best, **kw)
    from dataclasses import replace

    r_off = acc.evaluate_sequence(q, k, v, replace(best, codebooks="offline"), integer=False,
                                  **kw)
    assert r_cal["float"]["rel_err"] < r_off["float"]["rel_err"]
    assert abs(r_cal["int"]["rel_err"] - r_cal["float"]["rel_err"]) < 0.01


def test_calib_settings_skip_without_calibration(tmp_path):
    a = _clustered(64, 2)
    acts = acc.check_acts(a)
    s = acc.Setting("c", "pq", d=2, centroids=16, codebooks="calib")
    rep = acc.evaluate(acts, [s], stride=16, progress=False)
    assert "no stored calibration" in rep["skipped"]["c"] and not rep["results"]


@pytest.mark.parametrize("head_dim", [32, 128])
def test_best_settings_pack_into_bank_columns(head_dim):
    """The recommended settings must be storable by the bank: whole codes of each cache fill a
    256-bit column (M * log2 K divides 256), at MiniLM's D = 32 and Llama's D = 128."""
    from aqpim.geometry import Geometry
    from aqpim.numerics import Numerics

    by = {s.name: s for s in acc.default_settings()}
    # best4 (d=2, K=256) at D = 128 is 64 x 8 = 512 bits per token: two columns, which the
    # bank's packing (intmodel.pack_columns) does not do yet (docs/accuracy.md).
    for name in ("best", "best-eq") + (("best4",) if head_dim == 32 else ()):
        s = by[name]
        for d, k in ((s.kd, s.kk), (s.d, s.centroids)):
            num = Numerics(head_dim=head_dim, subspaces=head_dim // d, centroids=k)
            assert Geometry(num).tokens_per_column >= 1, (name, d, k)


def test_calib_option_errors_and_mismatch(tmp_path, capsys):
    """--calib: a missing file exits 2 naming it; books for other heads skip 'calib' settings
    with the reason instead of failing."""
    f = tmp_path / "acts.npz"
    np.savez(f, **_clustered(64, 2))
    out = tmp_path / "o"
    assert acc.main(["--acts", str(f), "--calib", str(tmp_path / "none.npz"), "--quick",
                     "--out", str(out), "--no-progress", "--task", "off"]) == 2
    assert "no such calibration file" in capsys.readouterr().err
    from aqpim.sw.eval import calibrate

    cal = calibrate.load_calibration()  # MiniLM books: 6 layers, 3 heads, D = 32
    acts = acc.check_acts(_clustered(64, 2))
    s = next(s for s in acc.default_settings() if s.name == "best")
    rep = acc.evaluate(acts, [s], stride=16, progress=False, calibration=cal)
    assert "heads" in rep["skipped"]["best"]
