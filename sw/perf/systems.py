"""The systems compared, on the same model and hardware configs: one decode step each.

* ``gpu``: FP16 attention on the GPU (H100 by default), KV read at ``bandwidth_utilisation`` of
  HBM bandwidth; what does not fit next to the weights lives in CPU memory and crosses PCIe.
* ``fp16-pim``: AttAcc-style FP16 bank-level PIM (16 FP16 MACs per bank per column command),
  KV cache in the PIM stacks; what does not fit spills to CPU memory and crosses PCIe to the
  GPU, which attends over it while the PIM attends over the rest.
* ``aqpim-2b`` / ``aqpim-4b``: PQ codes in the banks (M = 64 subspaces, K = 16 or 256
  centroids), attention on the codes by our units; attention-sink tokens and the recent window
  stay FP16 on the GPU; value codebooks sit in every bank that holds a piece of the head.

FC layers (QKV/O projections, MLP, LM head) run on the GPU in every system:
``max(weight bytes / (util x HBM bandwidth), 2 x params x batch / (util x FP16 FLOPS))``.
The GPU baseline is analytical: no GPU was lent to this task (docs/perf.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aqpim.sw.perf.hbm3 import (
    CONFIG_DIR,
    DecodeReport,
    HBM3Config,
    PimWorkload,
    load_json,
    simulate_decode,
)

from aqpim.checks import check_int
from aqpim.numerics import Numerics

__all__ = [
    "ModelConfig",
    "GPUConfig",
    "Result",
    "SYSTEMS",
    "BUILTIN_MODELS",
    "BUILTIN_GPUS",
    "aqpim_numerics",
    "aqpim_workload",
    "fp16_workload",
    "evaluate",
]

BUILTIN_MODELS = ("llama2-7b", "llama3-8b", "llama2-70b")
BUILTIN_GPUS = ("h100", "a100")
SYSTEMS = ("gpu", "fp16-pim", "aqpim-2b", "aqpim-4b")
FP16_BYTES = 2


def _int_field(where: str, d: dict[str, Any], key: str) -> int:
    if key not in d:
        raise ValueError(f"{where}: missing key {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{where}: {key} must be an integer, got {v!r}")
    if v < 1:
        raise ValueError(f"{where}: {key} must be >= 1, got {v}")
    return v


def _num_field(where: str, d: dict[str, Any], key: str, *, upper: float | None = None) -> float:
    if key not in d:
        raise ValueError(f"{where}: missing key {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"{where}: {key} must be a number, got {v!r}")
    if not (v > 0 and math.isfinite(v)) or (upper is not None and v > upper):
        bound = f"in (0, {upper}]" if upper is not None else "> 0"
        raise ValueError(f"{where}: {key} must be {bound}, got {v}")
    return float(v)


def _resolve(name_or_path: str | Path, builtins: tuple[str, ...], what: str) -> Path:
    s = str(name_or_path)
    if s in builtins:
        return CONFIG_DIR / f"{s}.json"
    if s.endswith(".json") or Path(s).exists():
        return Path(s)
    raise ValueError(f"unknown {what} {s!r}: use one of {', '.join(builtins)} or a .json file")


# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder-only transformer, as far as decode time is concerned."""

    name: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model config") -> ModelConfig:
        if not isinstance(d, dict):
            raise TypeError(f"{where} must be a JSON object, got {type(d).__name__}")
        vals = {
            k: _int_field(where, d, k)
            for k in ("layers", "heads", "kv_heads", "head_dim", "hidden", "intermediate", "vocab")
        }
        if vals["heads"] % vals["kv_heads"]:
            raise ValueError(
                f"{where}: heads {vals['heads']} is not a multiple of kv_heads {vals['kv_heads']}"
            )
        return cls(name=str(d.get("name", where)), **vals)

    @classmethod
    def load(cls, name_or_path: str | Path) -> ModelConfig:
        """A built-in model (``llama2-7b``, ``llama3-8b``, ``llama2-70b``) or a JSON file."""
        p = _resolve(name_or_path, BUILTIN_MODELS, "model")
        return cls.from_dict(load_json(p, "model"), where=f"model config {str(p)!r}")

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA group size)."""
        return self.heads // self.kv_heads

    @property
    def params(self) -> int:
        """Weights read every decode step: attention projections, MLP, LM head."""
        q_o = 2 * self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (q_o + kv + mlp) + self.vocab * self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.params * FP16_BYTES

    def kv_token_bytes(self) -> int:
        """FP16 K and V bytes of one token of one KV head."""
        return 2 * self.head_dim * FP16_BYTES

    def kv_bytes(self, context: int, batch: int) -> int:
        """FP16 KV cache of the whole model."""
        return batch * self.layers * self.kv_heads * context * self.kv_token_bytes()


@dataclass(frozen=True)
class GPUConfig:
    """A GPU for the FC layers and the GPU baseline."""

    name: str
    hbm_gbs: float
    hbm_gb: float
    bandwidth_utilisation: float
    fp16_tflops: float
    compute_utilisation: float
    pcie_gbs: float
    reserved_gb: float

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "gpu config") -> GPUConfig:
        if not isinstance(d, dict):
            raise TypeError(f"{where} must be a JSON object, got {type(d).__name__}")
        vals = {k: _num_field(where, d, k) for k in ("hbm_gbs", "hbm_gb", "fp16_tflops",
                                                      "pcie_gbs")}
        for k in ("bandwidth_utilisation", "compute_utilisation"):
            vals[k] = _num_field(where, d, k, upper=1.0)
        reserved = d.get("reserved_gb", 0.0)
        if isinstance(reserved, bool) or not isinstance(reserved, int | float) or reserved < 0:
            raise ValueError(f"{where}: reserved_gb must be a number >= 0, got {reserved!r}")
        if reserved >= vals["hbm_gb"]:
            raise ValueError(f"{where}: reserved_gb {reserved} >= hbm_gb {vals['hbm_gb']}")
        return cls(name=str(d.get("name", where)), reserved_gb=float(reserved), **vals)

    @classmethod
    def load(cls, name_or_path: str | Path) -> GPUConfig:
        p = _resolve(name_or_path, BUILTIN_GPUS, "gpu")
        return cls.from_dict(load_json(p, "gpu"), where=f"gpu config {str(p)!r}")

    @property
    def usable_bytes(self) -> float:
        return (self.hbm_gb - self.reserved_gb) * 1e9

    def count_for(self, model: ModelConfig) -> int:
        """GPUs needed to hold the FP16 weights (tensor parallel)."""
        return max(1, math.ceil(model.weight_bytes / self.usable_bytes))

    def read_seconds(self, nbytes: float, gpus: int) -> float:
        return nbytes / (gpus * self.hbm_gbs * 1e9 * self.bandwidth_utilisation)

    def pcie_seconds(self, nbytes: float, gpus: int) -> float:
        return nbytes / (gpus * self.pcie_gbs * 1e9)

    def fc_seconds(self, model: ModelConfig, batch: int, gpus: int) -> float:
        memory = self.read_seconds(model.weight_bytes, gpus)
        flops = 2.0 * model.params * batch
        compute = flops / (gpus * self.fp16_tflops * 1e12 * self.compute_utilisation)
        return max(memory, compute)


# ----------------------------------------------------------------------------------------------
# PIM workloads
# ----------------------------------------------------------------------------------------------
AQPIM_DEFAULTS = {"subspaces": 64, "sinks": 4, "window": 64}


def aqpim_numerics(model: ModelConfig, bits: int) -> Numerics:
    """The PQ configuration for ``bits`` per element: M = 64 (d = 2), K = 2^(2 * bits)."""
    if bits not in (2, 4):
        raise ValueError(f"AQPIM bits per element must be 2 or 4, got {bits!r}")
    m = AQPIM_DEFAULTS["subspaces"]
    if model.head_dim % m:
        raise ValueError(f"head_dim {model.head_dim} is not divisible by {m} subspaces")
    code_bits = bits * model.head_dim // m
    if not 1 <= code_bits <= 8:
        raise ValueError(f"{bits} bits/element with head_dim {model.head_dim} gives "
                         f"{code_bits}-bit codes; 1..8 supported")
    return Numerics(head_dim=model.head_dim, subspaces=m, centroids=1 << code_bits)


def _beats(bits: int) -> int:
    return -(-bits // 256)


def aqpim_workload(model: ModelConfig, hw: HBM3Config, num: Numerics, batch: int,
                   tokens: int) -> PimWorkload:
    """One decode step of AQPIM in the banks (``tokens`` PQ tokens per KV head)."""
    u = lambda k: hw.unit("aqpim", k)  # noqa: E731
    div = u("clock_divider")
    m, b, k = num.subspaces, num.code_bits, num.centroids
    tokens_per_column = 256 / (m * b)
    # LOAD_LUT beats as the ISA packs them (power-of-two slots): the unit takes one per cycle
    lut_width = 1 << (num.lut_bits - 1).bit_length()
    lut_beats = -(-m * k * lut_width // 256)
    passes = -(-model.group // u("query_heads_per_pass"))
    tail = (u("lut_accumulate_latency") + u("softmax_histogram_latency")
            + k * u("value_mac_cycles_per_centroid") + u("value_mac_latency"))
    return PimWorkload(
        layers=model.layers,
        jobs_per_layer=batch * model.kv_heads,
        passes=passes,
        tokens=tokens,
        key_bits_per_token=m * b,
        value_bits_per_token=m * b,
        key_spacing=math.ceil(u("lut_accumulate_cycles_per_column") * div),
        value_spacing=math.ceil(tokens_per_column * u("softmax_histogram_cycles_per_token") * div),
        write_beats_per_job=2 * (1 + _beats(num.head_dim * num.elem_bits)),
        query_beats_per_pass=1 + _beats(m * k * num.lut_bits),
        partial_beats_per_bank=1 + _beats((num.head_dim + 2) * 8 * u("partial_word_bytes")),
        tail_cycles=math.ceil(tail * div),
        lut_load_cycles=math.ceil(lut_beats * u("lut_load_cycles_per_beat") * div),
        label=f"aqpim-{num.bits_per_element:g}b",
    )


def fp16_workload(model: ModelConfig, hw: HBM3Config, batch: int, tokens: int) -> PimWorkload:
    """One decode step of AttAcc-style FP16 PIM (``tokens`` FP16 tokens per KV head)."""
    u = lambda k: hw.unit("fp16", k)  # noqa: E731
    div = u("clock_divider")
    elems_per_column = hw.org["column_bytes"] // FP16_BYTES
    passes = -(-model.group // u("query_heads_per_pass"))
    spacing = u("mac_cycles_per_column") * elems_per_column / u("macs_per_column_command")
    bits = model.head_dim * 16
    return PimWorkload(
        layers=model.layers,
        jobs_per_layer=batch * model.kv_heads,
        passes=passes,
        tokens=tokens,
        key_bits_per_token=bits,
        value_bits_per_token=bits,
        key_spacing=math.ceil(spacing * div),
        value_spacing=math.ceil(spacing * div),
        write_beats_per_job=2 * (1 + _beats(bits)),
        query_beats_per_pass=1 + _beats(bits),
        partial_beats_per_bank=1 + _beats(model.head_dim * 8 * u("partial_word_bytes")),
        roundtrip_bytes_per_token=2 * FP16_BYTES,  # score out, softmax weight back
        tail_cycles=math.ceil(u("mac_latency") * div),
        label="fp16-pim",
    )


# ----------------------------------------------------------------------------------------------
# one system, one point
# ----------------------------------------------------------------------------------------------
@dataclass
class Result:
    """One decode step of one system. Seconds; ``breakdown`` sums to ``seconds``."""

    system: str
    model: str
    context: int
    batch: int
    gpus: int
    stacks: int
    seconds: float
    attention_seconds: float
    breakdown: dict[str, float]
    kv_bytes: int  # the KV cache in the system's own format (FP16 or codes + FP16 window)
    spilled_bytes: int  # the part in CPU memory, read over PCIe every step
    pim_bandwidth_utilisation: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.spilled_bytes == 0

    @property
    def pcie_share(self) -> float:
        return self.breakdown.get("pcie", 0.0) / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fits"] = self.fits
        d["pcie_share"] = self.pcie_share
        return d


def _merge_parallel(
    pim: DecodeReport | None, gpu_side: dict[str, float]
) -> tuple[float, dict[str, float]]:
    """PIM and GPU attend over their parts at the same time: the slower one is the time."""
    pim_s = pim.seconds if pim is not None else 0.0
    gpu_s = sum(gpu_side.values())
    if pim is not None and pim_s >= gpu_s:
        return pim_s, pim.breakdown()
    return gpu_s, dict(gpu_side)


def evaluate(system: str, model: ModelConfig, gpu: GPUConfig, hw: HBM3Config, context: int,
             batch: int) -> Result:
    """One decode step of ``system`` at ``context`` tokens and ``batch`` sequences."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}: use one of {', '.join(SYSTEMS)}")
    context = check_int("context", context, 1)
    batch = check_int("batch", batch, 1)
    gpus = gpu.count_for(model)
    fc = gpu.fc_seconds(model, batch, gpus)
    jobs = batch * model.layers * model.kv_heads
    notes: list[str] = []
    util = None

    if system == "gpu":
        kv = model.kv_bytes(context, batch)
        room = max(0.0, gpus * gpu.usable_bytes - model.weight_bytes)
        in_hbm = int(min(kv, room))
        spill = kv - in_hbm
        attn = {"gpu_attention": gpu.read_seconds(in_hbm, gpus),
                "pcie": gpu.pcie_seconds(spill, gpus)}
        attention = sum(attn.values())
    elif system == "fp16-pim":
        per_token = model.kv_token_bytes()
        fit_tokens = min(context, int(hw.capacity_bytes // (jobs * per_token)))
        spill = jobs * (context - fit_tokens) * per_token
        kv = model.kv_bytes(context, batch)
        pim = (simulate_decode(hw, fp16_workload(model, hw, batch, fit_tokens))
               if fit_tokens else None)
        util = pim.bandwidth_utilisation if pim else None
        gpu_side = {"pcie": gpu.pcie_seconds(spill, gpus),
                    "gpu_attention": gpu.read_seconds(spill, gpus)} if spill else {}
        attention, attn = _merge_parallel(pim, gpu_side)
    else:
        bits = 2 if system == "aqpim-2b" else 4
        num = aqpim_numerics(model, bits)
        full = min(context, AQPIM_DEFAULTS["sinks"] + AQPIM_DEFAULTS["window"])
        pq_tokens = context - full
        code_bytes = 2 * num.subspaces * num.code_bits // 8  # K and V codes of one token
        cb_bytes = num.subspaces * num.centroids * num.sub_dim * num.elem_bits // 8
        pieces = model.layers * max(batch * model.kv_heads, hw.banks)
        room = hw.capacity_bytes - pieces * cb_bytes  # value codebooks in every bank piece
        fit_tokens = min(pq_tokens, max(0, int(room // (jobs * code_bytes))))
        spill = jobs * (pq_tokens - fit_tokens) * code_bytes
        window_bytes = jobs * full * model.kv_token_bytes()
        kv = jobs * pq_tokens * code_bytes + window_bytes
        pim = (simulate_decode(hw, aqpim_workload(model, hw, num, batch, fit_tokens))
               if fit_tokens else None)
        util = pim.bandwidth_utilisation if pim else None
        gpu_side = {"gpu_attention": gpu.read_seconds(window_bytes + spill, gpus)}
        if spill:
            gpu_side["pcie"] = gpu.pcie_seconds(spill, gpus)
        attention, attn = _merge_parallel(pim, gpu_side)
        if room <= 0:
            notes.append("value codebooks alone exceed PIM capacity")

    breakdown = {"fc": fc, **attn}
    return Result(
        system=system,
        model=model.name,
        context=context,
        batch=batch,
        gpus=gpus,
        stacks=hw.stacks,
        seconds=fc + attention,
        attention_seconds=attention,
        breakdown=breakdown,
        kv_bytes=int(kv),
        spilled_bytes=int(spill),
        pim_bandwidth_utilisation=util,
        notes=notes,
    )
