"""LLM perplexity evaluation: loader, tokenizer, forward pass, every KV cache, the sweep.

All marked ``llm`` (they need torch and the --no-deps assets; ``nox -s llm`` installs them and
runs the fast ones). The end-to-end CLI run is also marked ``slow``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

# The eval extra: `nox -s llm` installs it, and a missing torch must fail there, not skip.
# The plain `tests` session does not collect this module (--ignore in noxfile.py).
import torch
from aqpim.sw.eval import kvcache, llm, ppl
from aqpim.sw.golden import intmodel

from aqpim.numerics import Numerics

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def model() -> llm.Model:
    return llm.Model()


# ----------------------------------------------------------------------------------------------
# loader and tokenizer
# ----------------------------------------------------------------------------------------------
def test_config_matches_gguf_metadata(model: llm.Model) -> None:
    cfg = model.cfg
    meta = {k: model.reader.fields[k].contents() for k in (
        "llama.block_count", "llama.embedding_length", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.vocab_size",
        "llama.feed_forward_length", "llama.rope.dimension_count")}
    assert (cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.ffn, cfg.vocab) == (
        meta["llama.block_count"], meta["llama.embedding_length"],
        meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"],
        meta["llama.feed_forward_length"], meta["llama.vocab_size"])
    assert cfg.head_dim == meta["llama.rope.dimension_count"] == 64
    assert cfg.rope_base == meta["llama.rope.freq_base"] == 1e5
    # Every block's projections have the shapes the metadata implies (out, in).
    b = model.blocks[0]
    assert tuple(b["attn_q"].shape) == (cfg.heads * cfg.head_dim, cfg.hidden)
    assert tuple(b["attn_k"].shape) == (cfg.kv_heads * cfg.head_dim, cfg.hidden)
    assert tuple(b["ffn_down"].shape) == (cfg.hidden, cfg.ffn)
    assert tuple(model.embed.shape) == (cfg.vocab, cfg.hidden)


def test_tokenizer_against_gguf_vocab(model: llm.Model) -> None:
    tokens = model.reader.fields["tokenizer.ggml.tokens"].contents()
    assert model.tokenizer.get_vocab_size() == len(tokens) == model.cfg.vocab
    text = "The capital of France is Paris. In 1889, 42 people\n\tcame."
    ids = model.encode(text)
    assert model.decode(ids) == text  # byte-level BPE round-trips any text
    # Byte-level: a leading space is part of the token (Ġ); digits are split one by one.
    assert [tokens[i] for i in model.encode(" Paris")] == ["ĠParis"]
    assert [tokens[i] for i in model.encode("1889")] == ["1", "8", "8", "9"]
    bos = model.reader.fields["tokenizer.ggml.bos_token_id"].contents()
    assert model.encode(tokens[bos]) == [bos]  # special tokens stay whole


def test_greedy_paris(model: llm.Model) -> None:
    assert model.greedy("The capital of France is", 2).startswith(" Paris")


def test_logits_match_independent_numpy_forward(model: llm.Model) -> None:
    _, w, _ = llm.load_gguf()
    ids = model.encode("Wikipedia is a free online encyclopedia written by volunteers.")
    a = model.forward(ids).double().numpy()
    b = llm.numpy_logits(w, model.cfg, ids)
    assert np.abs(a - b).max() < 1e-3 * np.abs(b).max()
    assert (a.argmax(1) == b.argmax(1)).all()


def test_wiki_split_disjoint() -> None:
    cal, ev = llm.wiki_split()
    data = json.loads(llm.wiki_path().read_text(encoding="utf-8"))
    titles = sorted(data)
    assert len(data) == 10033
    assert cal.startswith(titles[0] + "\n\n") and ev.startswith(titles[1] + "\n\n")
    # A sample of articles from each part: present in its own part, absent from the other.
    for i in range(0, len(titles), 97):
        t = titles[i]
        art = f"{data[t]['title']}\n\n{data[t]['extract'].strip()}"
        own, other = (cal, ev) if i % 5 == 0 else (ev, cal)
        assert art in own and art not in other, t


# ----------------------------------------------------------------------------------------------
# caches on a small slice
# ----------------------------------------------------------------------------------------------
def _layer_qkv(model: llm.Model, tokens: int = 96, layer: int = 3):  # noqa: ANN202
    _, ev = llm.wiki_split()
    ids = llm.tokenize_windows(model, ev, tokens, 1)[0]
    got = {}

    def grab(i: int, q, k, v) -> None:  # noqa: ANN001
        if i == layer:
            got["qkv"] = (q.clone(), k.clone(), v.clone())

    model.forward(ids, on_qkv=grab)
    return got["qkv"]


def _books(k: np.ndarray, d: int, centroids: int, xf: str = "",
           sigma_q: np.ndarray | None = None) -> kvcache.PQBooks:
    fl, ints, sc, a = ppl.train_layer(k, d, centroids, iters=8, xf=xf, sigma_q=sigma_q)
    return kvcache.PQBooks(fl[None], ints[None], sc[None], a[None] if xf else None)


def test_compressed_mask_rule() -> None:
    m = kvcache.compressed_mask(10, 2, 3).numpy()
    for t in range(10):
        assert list(np.flatnonzero(m[t])) == list(range(2, t - 3 + 1))
    g = kvcache.compressed_mask(12, 1, 2, group=4).numpy()
    # Group [1, 5) is compressed once token 4 has left the window: t - 2 >= 4.
    assert not g[5, 1] and g[6, 1] and g[6, 4] and not g[6, 5]


def test_fp16_window_covering_everything_is_fp16_cache(model: llm.Model) -> None:
    q, k, v = _layer_qkv(model)
    T = q.shape[1]
    ref = kvcache.FP16Cache().attend(0, q, k, v)
    books = kvcache.PQBooks
    kb = _books(k.double().numpy(), 4, 16)
    vb = _books(v.double().numpy(), 4, 16)
    assert isinstance(kb, books)
    for cache in (kvcache.UniformCache(bits=2, sinks=0, recent=T),
                  kvcache.PQCache(kb, vb, sinks=0, recent=T),
                  kvcache.PQCache(kb, vb, sinks=0, recent=T, integer=True)):
        out = cache.attend(0, q, k, v)
        # float32 attention computed two ways (SDPA vs explicit softmax; float64 merge)
        diff = float((out - ref).abs().max())
        assert diff < 1e-5, (type(cache).__name__, diff)
    # ... and a window that is too short changes the output.
    out = kvcache.PQCache(kb, vb, sinks=4, recent=8).attend(0, q, k, v)
    assert not torch.allclose(out, ref, atol=1e-3)


@pytest.mark.parametrize("xf", ["", "q", "qr"])
def test_integer_cache_is_intmodel_per_query(xf: str) -> None:
    """The vectorized integer cache == intmodel's units query by query (LUT, bank, merge).

    With a transform (query-aware keys, rotation) the bank holds codes of ``k A_k`` and
    ``v A_v``, the LUT is built from ``q A_k^-T`` and the bank's output goes back through
    ``A_v^-1`` before the host merge with the untransformed FP16 tokens.
    """
    rng = np.random.default_rng(3)
    T, D, d, K, S, W = 48, 16, 4, 16, 2, 6
    k = torch.from_numpy(rng.standard_normal((1, T, D))).float()
    v = torch.from_numpy(rng.standard_normal((1, T, D))).float()
    q = torch.from_numpy(rng.standard_normal((2, T, D)) * 3).float()
    qd = q.double().numpy().reshape(1, -1, D)
    sigma = np.einsum("hnd,hne->hde", qd, qd) / qd.shape[1]
    kb = _books(k.double().numpy(), d, K, xf, sigma)
    vb = _books(v.double().numpy(), d, K, xf.replace("q", ""))
    if xf:
        assert not np.allclose(kb.xf[0, 0], np.eye(D))
    out = kvcache.PQCache(kb, vb, sinks=S, recent=W, integer=True).attend(0, q, k, v)
    num = Numerics(head_dim=D, subspaces=D // d, centroids=K, token_capacity=4096)
    k16 = k[0].half().double().numpy()
    v16 = v[0].half().double().numpy()
    ak = kb.xf[0, 0] if xf else np.eye(D)
    av = vb.xf[0, 0] if "r" in xf else np.eye(D)
    kc = intmodel.encode(intmodel.quantize(k16 @ ak, kb.scales[0, 0], num), kb.ints[0, 0], num)
    vc = intmodel.encode(intmodel.quantize(v16 @ av, vb.scales[0, 0], num), vb.ints[0, 0], num)
    for h in range(2):
        for t in range(T):
            qt = q[h, t].double().numpy()
            comp = np.arange(S, t - W + 1)
            full = np.array([s for s in range(t + 1) if s < S or s > t - W])
            extra = intmodel.float_partial(qt, k16[full], v16[full])
            if comp.size:
                lut = intmodel.build_lut(qt @ np.linalg.inv(ak).T, kb.ints[0, 0],
                                         kb.scales[0, 0], num)
                p = intmodel.bank_partial(lut, kc[comp], vc[comp], vb.ints[0, 0], num)
                # host: bank output to float in the transformed basis, then back through A_v^-1
                bout = p.out / num.weight_one * np.repeat(vb.scales[0, 0], num.sub_dim)
                g = max(p.max / (1 << num.lut_frac_bits), extra.max)
                ab = 2.0 ** (p.max / (1 << num.lut_frac_bits) - g)
                af = 2.0 ** (extra.max - g)
                ref = ((ab * bout @ np.linalg.inv(av) + af * extra.out)
                       / (ab * p.sum / num.weight_one + af * extra.sum))
                if not xf:  # the plain case through intmodel's own host merge as well
                    assert np.allclose(ref, intmodel.host_merge([p], vb.scales[0, 0], num, extra))
            else:
                ref = extra.out / extra.sum
            assert np.allclose(out[h, t].numpy(), ref, atol=1e-6, rtol=1e-6), (h, t)


@pytest.mark.parametrize(("D", "d", "K"), [(16, 2, 16), (32, 4, 256), (64, 8, 4)])
def test_bank_kernel_bit_exact(D: int, d: int, K: int) -> None:
    """The vectorized kernel (LUT built inside) == build_lut + bank_partial, query by query.

    Queries include exact LUT half-way points (q = 0.5 / (centroid * step)) and saturation.
    """
    rng = np.random.default_rng(5)
    T, M = 40, D // d
    num = Numerics(head_dim=D, subspaces=M, centroids=K)
    kcb = rng.integers(-128, 128, (M, K, d))
    ks = rng.uniform(0.01, 0.2, M)
    q = rng.standard_normal((T, D)) * 4
    q[::7] *= 400  # saturates the LUT
    q[20] = 0.0
    kcb[0, 0, 0] = 3
    x = 2.5 / (3 * ks[0] * intmodel.lut_step(num))
    while (x * 3) * ks[0] * intmodel.lut_step(num) != 2.5:  # step to an exact tie (-> 2)
        x = np.nextafter(x, np.inf if (x * 3) * ks[0] * intmodel.lut_step(num) < 2.5 else 0)
    q[20, 0] = x
    kc, vc = rng.integers(0, K, (T, M)), rng.integers(0, K, (T, M))
    cv = rng.integers(-128, 128, (M, K, d))
    mx, sm, out = kvcache.bank_partials(q, kcb, ks, kc, vc, cv, num, 3, 5)
    for t in range(T):
        sel = np.arange(3, t - 5 + 1)
        if not sel.size:
            assert sm[t] == 0
            continue
        lut = intmodel.build_lut(q[t], kcb, ks, num)
        p = intmodel.bank_partial(lut, kc[sel], vc[sel], cv, num)
        assert (p.max, p.sum) == (mx[t], sm[t]) and np.array_equal(p.out, out[t]), t


def test_integer_close_to_float_pq(model: llm.Model) -> None:
    q, k, v = _layer_qkv(model)
    kb = _books(k.double().numpy(), 2, 16)
    vb = _books(v.double().numpy(), 2, 16)
    ref = kvcache.FP16Cache().attend(0, q, k, v)
    fl = kvcache.PQCache(kb, vb, sinks=4, recent=8).attend(0, q, k, v)
    it = kvcache.PQCache(kb, vb, sinks=4, recent=8, integer=True).attend(0, q, k, v)
    err_pq = (fl - ref).norm() / ref.norm()
    err_int = (it - fl).norm() / ref.norm()
    assert 0 < err_int < 0.2 * err_pq  # the integer loss is small next to the PQ loss


def test_uniform_cache_is_causal(model: llm.Model) -> None:
    """Streaming: changing the last token's key/value changes no earlier query's output."""
    q, k, v = _layer_qkv(model)
    cache = kvcache.UniformCache(bits=2, sinks=1, recent=4, key_group=8, value_group=16)
    a = cache.attend(0, q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, -1] *= 50
    v2[:, -1] *= 50
    b = cache.attend(0, q, k2, v2)
    assert torch.equal(a[:, :-1], b[:, :-1])
    assert not torch.equal(a[:, -1], b[:, -1])
    # Quantization does act: output differs from FP16 beyond the window.
    assert not torch.allclose(a, kvcache.FP16Cache().attend(0, q, k, v), atol=1e-4)


def test_cache_bits() -> None:
    s = {x.name: x for x in ppl.default_settings()}
    b = ppl.cache_bits(s["pq-d4K256"], tokens=2048, head_dim=64)
    assert b["code"] == 2.0
    fp = 36 * 16 / 2048
    books = (256 * 64 * 8 + 16 * 16) / (32768 * 64)
    assert math.isclose(b["total"], fp + 2.0 * (2048 - 36) / 2048 + books)
    assert ppl.cache_bits(s["pq-k8K256-v4K256"], tokens=2048, head_dim=64)["code"] == 1.5
    u = ppl.cache_bits(s["kivi-2"], tokens=2048, head_dim=64)
    assert u["code"] == 2 and u["total"] > 2 + 16 / 128 + 16 / 64
    assert ppl.cache_bits(s["fp16"], tokens=2048, head_dim=64)["total"] == 16
    with pytest.raises(ValueError, match="tokens"):
        ppl.cache_bits(s["fp16"], tokens=0, head_dim=64)


# ----------------------------------------------------------------------------------------------
# sweep: resume without repeating
# ----------------------------------------------------------------------------------------------
_CALLS: list[str] = []


def _fake_task(task: dict) -> dict:
    _CALLS.append(task["key"])
    return {"key": task["key"], "nll_sum": 1.0, "tokens": 1, "seconds": 0.0}


def test_killed_sweep_resumes_without_repeating(tmp_path) -> None:  # noqa: ANN001
    from dask.distributed import LocalCluster

    tasks = [{"key": f"t/{i}"} for i in range(8)]
    res = tmp_path / "results.jsonl"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        addr = cluster.scheduler_address
        _CALLS.clear()
        ppl.run_sweep(tasks, res, scheduler=addr, progress=False, limit=3,
                      fn=_fake_task)  # "killed"
        first = ppl.read_results(res)
        assert len(first) == 3
        with res.open("a") as f:
            f.write('{"key": "t/7", "nll')  # a torn line from the kill is ignored
        _CALLS.clear()
        done = ppl.run_sweep(tasks, res, scheduler=addr, progress=False, fn=_fake_task)
        assert set(done) == {t["key"] for t in tasks}
        assert not set(_CALLS) & set(first)  # no finished task ran again
        assert set(_CALLS) == {t["key"] for t in tasks} - set(first)


# ----------------------------------------------------------------------------------------------
# end to end on a text the project never saw
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_end_to_end_on_new_text(tmp_path, capsys) -> None:  # noqa: ANN001
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"Line {i}: the river flows past the old mill at dawn, and the "
                             f"baker sells bread number {i * 7}." for i in range(400)),
                    encoding="utf-8")
    rc = ppl.main(["--text", str(text), "--calib-text", str(text), "--window", "128",
                   "--windows", "1", "--calib-windows", "2",
                   "--settings", "pq-d2K16,kivi-2,pq-d4K256-qr", "--timing",
                   "--out", str(tmp_path / "o"), "--json", "--no-progress"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rep["settings"]]
    assert names == ["fp16", "pq-d2K16", "kivi-2", "pq-d4K256-qr"]
    assert rep["fp16_ppl"] > 1 and rep["settings"][1]["ppl_ratio_int"] > 0
    assert rep["settings"][3]["ppl_ratio_int"] > 0
    assert set(rep["timing"]["int_s"]) == {"pq-d2K16", "pq-d4K256-qr"}
    assert rep["targets"]["int eval <= 2x FP16 time"]["how"] == "timing"
    books = np.load(next((tmp_path / "o").glob("books-*.npz")))
    assert "k_d4_K256_qr_xf" in books.files and "v_d4_K256_r_xf" in books.files
    assert (tmp_path / "o" / "ppl.png").is_file()


def test_cli_rejects_bad_input(tmp_path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit):
        ppl.main(["--settings", "nope", "--out", str(tmp_path)])
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ppl.main(["--window", "30", "--out", str(tmp_path)])
    assert "leave no compressed token" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# SmolLM2's own keys, values and queries through the RTL bank array
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.cosim
def test_smollm2_decode_step_on_rtl(model: llm.Model) -> None:
    """One layer of SmolLM2 (3 KV heads, 9 query heads: G = 3), keys and values d = 4, K = 256
    (the accurate configuration, D = 64: two tokens per column), S = 4 sinks and W = 32 recent
    tokens on the host as in the perplexity evaluation, prefilled with 320 tokens of the
    evaluation text and decoded for 2 steps through the driver on the RTL bank array under
    Verilator (random idle and back-pressure): every output bit equal to the golden device's,
    and close to the float attention of the same tokens."""
    from aqpim.sim.rtl_device import RtlDevice
    from aqpim.sim.session import PairedDecode

    from aqpim.geometry import Geometry

    T, steps = 320, 2
    q, k, v = (x.half().double().numpy() for x in _layer_qkv(model, T + steps, layer=7))
    cfg = model.cfg
    group = cfg.heads // cfg.kv_heads
    q = q.reshape(cfg.kv_heads, group, T + steps, cfg.head_dim)
    num = Numerics(head_dim=cfg.head_dim, subspaces=16, centroids=256, token_capacity=512)
    geo = Geometry(num, queries=group)
    errs = []
    with RtlDevice(geo, cfg.kv_heads, seed=11) as dev:
        run = PairedDecode(dev, kv_heads=cfg.kv_heads, iters=6, seed=3, sinks=4, recent=32)
        run.prefill(k[:, :T], v[:, :T])
        for i in range(T, T + steps):
            st = run.step(q[:, :, i], k[:, i], v[:, i])
            assert st.out.shape == (cfg.kv_heads, group, cfg.head_dim)
            np.testing.assert_array_equal(st.out, st.golden)
            # float attention over the same T + 1 tokens, per query head
            for h in range(cfg.kv_heads):
                s = k[h, :i + 1] @ q[h, :, i].T / math.sqrt(cfg.head_dim)
                p = np.exp(s - s.max(0))
                ref = (p / p.sum(0)).T @ v[h, :i + 1]
                err = np.linalg.norm(st.out[h] - ref) / np.linalg.norm(ref)
                assert err < 0.3, (h, err)
                errs.append(err)
    print(f"SmolLM2 layer 7, {T} tokens + {steps} steps, 3 KV x 3 query heads: RTL == golden; "
          f"error vs float attention {min(errs):.3f}-{max(errs):.3f}")
