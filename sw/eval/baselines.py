"""Baselines at equal storage: uniform KIVI-style quantization and FP16, bits counted.

KIVI (Liu et al., ICML 2024) quantizes **keys per channel** (each channel of a group of
``key_group`` consecutive tokens shares one scale and zero point: key outlier channels get
their own range) and **values per token** (each token's group of ``value_group`` consecutive
channels shares one). Both are asymmetric min-max round-to-nearest at ``bits`` bits; scale and
zero point are stored in FP16 (and rounded to FP16 here, as a real cache would), so every
group costs 32 extra bits:

    bits per element = bits + 32 / group         (keys: group = key_group tokens,
                                                  values: group = value_group channels)

A cache's figure is the mean of its key and value halves (both hold T x D elements).
FP16 stores every element in 16 bits and loses only the FP16 rounding.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SCALE_BITS",
    "FP16_BITS",
    "quantize_groups",
    "uniform_keys",
    "uniform_values",
    "uniform_bits",
    "fp16",
]

SCALE_BITS = 16  # scale and zero point are FP16 each
FP16_BITS = 16


def _check_bits(bits: object) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], got {bits}")
    return int(bits)


def _check_group(name: str, group: object) -> int:
    if isinstance(group, bool) or not isinstance(group, int | np.integer):
        raise TypeError(f"{name} must be an int, got {group!r}")
    if group < 1:
        raise ValueError(f"{name} must be >= 1, got {group}")
    return int(group)


def _check_2d(name: str, x: object) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (T, D), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has a non-finite value")
    return x.astype(np.float64)


def quantize_groups(x: np.ndarray, bits: int) -> np.ndarray:
    """Asymmetric min-max quantize-dequantize along the last axis (one group per row).

    ``scale = (max - min) / (2^bits - 1)`` and ``zero = min`` are rounded to FP16; then
    ``x_hat = clip(rint((x - zero) / scale), 0, 2^bits - 1) * scale + zero``. A constant
    group (``max == min``) is returned as its FP16-rounded value.

    Parameters
    ----------
    x:
        float, shape (G, n): G groups of n elements.
    bits:
        Code width, 1..8.

    Returns
    -------
    float64, shape (G, n)
    """
    bits = _check_bits(bits)
    x = np.asarray(x, dtype=np.float64)
    lo = x.min(axis=-1, keepdims=True)
    hi = x.max(axis=-1, keepdims=True)
    levels = (1 << bits) - 1
    zero = lo.astype(np.float16).astype(np.float64)
    scale = ((hi - lo) / levels).astype(np.float16).astype(np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint((x - zero) / safe), 0, levels)
    return np.where(scale > 0, q * scale + zero, zero)


def uniform_keys(k: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Per-channel key quantization: each channel of each ``group`` tokens shares a range.

    Parameters
    ----------
    k:
        float, shape (T, D); the last group may be shorter than ``group``.
    bits, group:
        Code width and tokens per group.

    Returns
    -------
    float64 (T, D), the dequantized keys.
    """
    k = _check_2d("k", k)
    group = _check_group("group", group)
    out = np.empty_like(k)
    for t0 in range(0, k.shape[0], group):
        blk = k[t0:t0 + group]
        out[t0:t0 + group] = quantize_groups(blk.T, bits).T
    return out


def uniform_values(v: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Per-token value quantization: each run of ``group`` channels of a token shares a range.

    Parameters
    ----------
    v:
        float, shape (T, D); ``D % group == 0``.
    bits, group:
        Code width and channels per group.

    Returns
    -------
    float64 (T, D), the dequantized values.
    """
    v = _check_2d("v", v)
    group = _check_group("group", group)
    t, d = v.shape
    if d % group:
        raise ValueError(f"value group {group} does not divide head_dim {d}")
    return quantize_groups(v.reshape(t * d // group, group), bits).reshape(t, d)


def uniform_bits(bits: int, key_group: int, value_group: int) -> float:
    """Storage per element of the KIVI-style cache, scale and zero point counted.

    ``((bits + 32 / key_group) + (bits + 32 / value_group)) / 2``.
    """
    bits = _check_bits(bits)
    kg = _check_group("key_group", key_group)
    vg = _check_group("value_group", value_group)
    over = 2 * SCALE_BITS
    return ((bits + over / kg) + (bits + over / vg)) / 2


def fp16(x: np.ndarray) -> np.ndarray:
    """FP16 round trip (round to nearest even), returned as float64."""
    x = _check_2d("x", x)
    return x.astype(np.float16).astype(np.float64)
