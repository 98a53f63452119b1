"""Seeded, LLM-like synthetic K/V/Q activations for one decode step.

What the generator imitates, and how (docs/golden.md shows the statistics):

* **Clustered content.** Each head has ``clusters`` random centres (entries N(0, 1)); every
  token picks one centre and adds N(0, ``noise``^2) noise. Real K/V activations sit near a
  low-dimensional manifold; clusters give PQ codebooks something to learn (pure Gaussian noise
  would make PQ look worse than it is on real activations).
* **Key outlier channels.** ``outliers`` fixed channels per head (the same for every token)
  carry a large offset of ``outlier_scale`` (random sign per channel) plus unit noise, as the
  few massive channels seen in LLM keys. They are chosen among the low-frequency RoPE pairs,
  where real outliers sit and where RoPE barely rotates them, so they stay large after RoPE.
  Values have no outliers.
* **RoPE.** Keys and the query are rotated by their positions (keys 0 .. T-1, the query at T)
  with the rotate-half (Llama) convention, pair ``(i, i + D/2)`` at frequency
  ``rope_base^(-2i/D)``. Keys are thus "sampled after RoPE", as a PIM KV cache holds them.
* **Peaked attention.** The query's pre-RoPE content is ``query_gain`` times the centre of one
  target cluster plus unit noise, so the target cluster's tokens (recent ones most, since the
  high-frequency pairs decorrelate with distance) get most of the attention mass instead of
  a uniform spread.
* **Attention sinks.** The first ``sinks`` tokens' keys get the post-RoPE query direction added,
  so that their scores end ``sink_logit`` above the best other score, imitating the
  attention-sink tokens that LLMs attend to regardless of content (``sinks=0`` disables it).

Plain NumPy; every draw comes from ``numpy.random.default_rng(seed)`` in a fixed order.
"""

from __future__ import annotations

import numpy as np

from aqpim.checks import check_int

__all__ = ["generate", "rope"]


def _check_real(name: str, value: object, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be finite and >= {minimum}, got {value}")
    return float(value)


def rope(x: np.ndarray, positions: np.ndarray, base: float = 10000.0) -> np.ndarray:
    """Rotary position embedding, rotate-half convention.

    Parameters
    ----------
    x:
        float, shape (..., T, D) with D even.
    positions:
        shape (T,), the token positions.
    base:
        RoPE base; pair ``i`` turns by ``position * base^(-2i/D)`` radians.

    Returns
    -------
    float64 array of the shape of ``x``.
    """
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {dim}")
    half = dim // 2
    freq = base ** (-2.0 * np.arange(half) / dim)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * freq[None, :]  # (T, D/2)
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def generate(
    *,
    heads: int,
    tokens: int,
    head_dim: int = 128,
    seed: int = 0,
    clusters: int = 32,
    noise: float = 0.5,
    outliers: int = 4,
    outlier_scale: float = 12.0,
    query_gain: float = 1.25,
    sinks: int = 1,
    sink_logit: float = 1.0,
    rope_base: float = 10000.0,
) -> dict[str, np.ndarray]:
    """Generate one decode step's query and the K/V cache for ``heads`` heads.

    Parameters
    ----------
    heads, tokens, head_dim:
        H, T and D (D even, for RoPE).
    seed:
        Seed of ``numpy.random.default_rng``.
    clusters:
        Content clusters per head (shared by keys and values, separate centres).
    noise:
        Standard deviation of the per-token noise around the cluster centre.
    outliers:
        Key outlier channels per head (0 disables them); at most D/4.
    outlier_scale:
        Magnitude of the outlier channels' offset.
    query_gain:
        Weight of the target cluster's centre in the query (0 gives an unrelated query).
    sinks:
        Number of leading tokens made attention sinks (0 disables them).
    sink_logit:
        The sink keys' scores ``q.k / sqrt(D)`` are set this far (natural-log units) above the
        best non-sink score, by adding the query direction to them.
    rope_base:
        RoPE base.

    Returns
    -------
    dict with ``q`` (H, D), ``k`` (H, T, D), ``v`` (H, T, D), all float64, and
    ``outlier_channels`` (H, outliers) int64, ``target_cluster`` (H,) and ``cluster`` (H, T)
    (which centre each token drew) for diagnostics.
    """
    heads = check_int("heads", heads, 1)
    tokens = check_int("tokens", tokens, 1)
    head_dim = check_int("head_dim", head_dim, 2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (RoPE pairs), got {head_dim}")
    seed = check_int("seed", seed, 0)
    clusters = check_int("clusters", clusters, 1)
    outliers = check_int("outliers", outliers, 0)
    if outliers > head_dim // 4:
        raise ValueError(f"outliers must be <= head_dim / 4 = {head_dim // 4}, got {outliers}")
    sinks = check_int("sinks", sinks, 0)
    if sinks > tokens:
        raise ValueError(f"sinks = {sinks} exceeds tokens = {tokens}")
    noise = _check_real("noise", noise, 0.0)
    outlier_scale = _check_real("outlier_scale", outlier_scale, 0.0)
    query_gain = _check_real("query_gain", query_gain, 0.0)
    sink_logit = _check_real("sink_logit", sink_logit, -np.inf)
    rope_base = _check_real("rope_base", rope_base, 1.0)

    rng = np.random.default_rng(seed)
    h, t, d = heads, tokens, head_dim
    half = d // 2
    k_centres = rng.standard_normal((h, clusters, d))
    v_centres = rng.standard_normal((h, clusters, d))
    which = rng.integers(0, clusters, size=(h, t))
    rows = np.arange(h)[:, None]
    k_pre = k_centres[rows, which] + noise * rng.standard_normal((h, t, d))
    v = v_centres[rows, which] + noise * rng.standard_normal((h, t, d))

    # Outliers in the slowest-rotating quarter of the RoPE pairs: pair i and i + D/2 both.
    slow = np.arange(half - max(1, d // 8), half)
    out_ch = np.zeros((h, outliers), dtype=np.int64)
    for i in range(h):
        pairs = rng.choice(slow, size=(outliers + 1) // 2, replace=False)
        chans = np.concatenate([pairs, pairs + half])[:outliers]
        out_ch[i] = np.sort(chans)
        signs = rng.choice([-1.0, 1.0], size=outliers)
        k_pre[i][:, out_ch[i]] += outlier_scale * signs

    target = rng.integers(0, clusters, size=h)
    q_pre = query_gain * k_centres[np.arange(h), target] + rng.standard_normal((h, d))

    k = rope(k_pre, np.arange(t), rope_base)
    q = rope(q_pre[:, None, :], np.array([t]), rope_base)[:, 0, :]
    if 0 < sinks < t:
        # Along q / |q| with length a, a key's score q.k / sqrt(D) rises by a |q| / sqrt(D):
        # choose a per sink so that its score ends sink_logit above the best non-sink score.
        qnorm = np.linalg.norm(q, axis=1)  # (H,)
        scores = np.einsum("htd,hd->ht", k, q) / np.sqrt(d)
        best = scores[:, sinks:].max(axis=1)
        a = (best[:, None] + sink_logit - scores[:, :sinks]) * np.sqrt(d) / qnorm[:, None]
        k[:, :sinks, :] += a[:, :, None] * (q / qnorm[:, None])[:, None, :]
    return {
        "q": q,
        "k": k,
        "v": v,
        "outlier_channels": out_ch,
        "target_cluster": target,
        "cluster": which,
    }
