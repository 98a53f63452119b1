"""The systems compared, on the same model and hardware configs: one decode step each.

* ``gpu``: FP16 attention on the GPU (H100 by default), KV read at ``bandwidth_utilisation`` of
  HBM bandwidth; what does not fit next to the weights lives in CPU memory and crosses PCIe.
* ``fp16-pim``: AttAcc-style FP16 bank-level PIM (16 FP16 MACs per bank per column command),
  KV cache in the PIM stacks; what does not fit spills to CPU memory and crosses PCIe to the
  GPU, which attends over it while the PIM attends over the rest.
* ``aqpim-*``: PQ codes in the banks, attention on the codes by the built bank units. A
  system's PQ configuration is a full :class:`~aqpim.numerics.Numerics` (key side M_k, K_k and
  value side M_v, K_v) plus G, the query heads one SCORE pass serves (GQA, docs/bank.md); every
  size (bits and columns per token, LUT beats, codebook bytes) comes from
  :class:`~aqpim.geometry.Geometry`. Attention-sink tokens and the recent window stay FP16 on
  the GPU; key and value codebooks sit in every bank that holds a piece of the head.

FC layers (QKV/O projections, MLP, LM head) run on the GPU in every system:
``max(weight bytes / (util x HBM bandwidth), 2 x params x batch / (util x FP16 FLOPS))``.
The GPU baseline is analytical: no GPU was lent to this task (docs/perf.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aqpim.sw.perf.hbm3 import (
    CONFIG_DIR,
    HBM3Config,
    PimWorkload,
    load_json,
    simulate_decode,
)

from aqpim.checks import check_int
from aqpim.geometry import COLUMN_BITS, MAX_QUERIES, Geometry
from aqpim.numerics import Numerics

__all__ = [
    "ModelConfig",
    "GPUConfig",
    "Result",
    "SYSTEMS",
    "SYSTEM_SPECS",
    "DEFAULT_SYSTEMS",
    "SystemSpec",
    "get_spec",
    "spec_workload",
    "uniform_workload",
    "BUILTIN_MODELS",
    "BUILTIN_GPUS",
    "pq_numerics",
    "pq_queries",
    "system_for",
    "aqpim_workload",
    "fp16_workload",
    "evaluate",
]

BUILTIN_MODELS = ("llama2-7b", "llama3-8b", "llama2-70b")
# Energy constants for configs that carry none (sources: the packaged configs' comments).
GPU_ENERGY_DEFAULTS = {"hbm_pj_per_bit": 3.59, "flop_pj": 0.32, "nvlink_pj_per_bit": 1.3,
                       "pcie_pj_per_bit": 5.0, "host_dram_pj_per_bit": 15.0}
HW_ENERGY_DEFAULTS = {"activate_pj_per_bit": 0.11, "cell_read_pj_per_bit": 0.44,
                      "bank_to_buffer_pj_per_bit": 2.74, "link_pj_per_bit": 1.3,
                      "fp16_mac_pj": 0.32, "pq_op_pj": 0.1}
BUILTIN_GPUS = ("h100", "a100")
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
    """A GPU for the FC layers and the GPU baseline, with its host (CPU) side."""

    name: str
    hbm_gbs: float
    hbm_gb: float
    bandwidth_utilisation: float
    fp16_tflops: float
    compute_utilisation: float
    pcie_gbs: float
    reserved_gb: float
    nvlink_gbs: float = 900.0  # GPU-GPU, for the tensor-parallel all-reduce
    allreduce_latency_us: float = 5.0
    host_memory_gbs: float = 1126.4  # CPU memory bandwidth (AttAcc's dgx-cpu attention)
    norm_kernels_us_per_layer: float = 22.2
    energy: dict[str, float] = field(default_factory=dict, compare=False)

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
        # Optional keys (older configs lack them): defaults are the H100 DGX's.
        for k in ("nvlink_gbs", "allreduce_latency_us", "host_memory_gbs",
                  "norm_kernels_us_per_layer"):
            if k in d:
                vals[k] = _num_field(where, d, k)
        energy = d.get("energy", {})
        if not isinstance(energy, dict):
            raise TypeError(f"{where}: energy must be a JSON object")
        return cls(name=str(d.get("name", where)), reserved_gb=float(reserved), energy=energy,
                   **vals)

    @classmethod
    def load(cls, name_or_path: str | Path) -> GPUConfig:
        p = _resolve(name_or_path, BUILTIN_GPUS, "gpu")
        return cls.from_dict(load_json(p, "gpu"), where=f"gpu config {str(p)!r}")

    @property
    def usable_bytes(self) -> float:
        return (self.hbm_gb - self.reserved_gb) * 1e9

    def e(self, key: str) -> float:
        """An energy constant from the config (``h100.json``'s value when the config has none)."""
        v = self.energy.get(key, GPU_ENERGY_DEFAULTS.get(key))
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ValueError(f"gpu config {self.name!r}: energy.{key} must be a number >= 0, "
                             f"got {v!r}")
        return float(v)

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

    def host_read_seconds(self, nbytes: float) -> float:
        """CPU attention over host-resident KV: its memory bandwidth at the same cap."""
        return nbytes / (self.host_memory_gbs * 1e9 * self.bandwidth_utilisation)

    def allreduce_seconds(self, model: ModelConfig, batch: int, gpus: int) -> float:
        """Tensor parallel: two all-reduces of the hidden state per layer (after attention and
        after the MLP), ring over NVLink: 2 (g - 1) / g of the bytes each way, plus latency."""
        if gpus < 2:
            return 0.0
        nbytes = batch * model.hidden * FP16_BYTES
        per = 2 * (gpus - 1) / gpus * nbytes / (self.nvlink_gbs / 2 * 1e9)
        return 2 * model.layers * (per + self.allreduce_latency_us * 1e-6)

    def allreduce_bytes(self, model: ModelConfig, batch: int, gpus: int) -> float:
        if gpus < 2:
            return 0.0
        return 2 * model.layers * 2 * (gpus - 1) * batch * model.hidden * FP16_BYTES

    def norm_seconds(self, model: ModelConfig) -> float:
        """Norms, activations, residual adds: launch-bound kernels, a fixed cost per layer."""
        return model.layers * self.norm_kernels_us_per_layer * 1e-6


# ----------------------------------------------------------------------------------------------
# the systems
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SystemSpec:
    """How one system stores and attends over the KV cache.

    ``kind``: ``gpu`` (attention on the GPU), ``fp16`` (AttAcc-style FP16 bank PIM),
    ``uniform`` (integers of ``data_bits`` plus an FP16 scale and zero per ``group`` elements, in
    the same PIM), ``pq`` (AQPIM: ``numerics``, the keys' and values' PQ geometry at head_dim
    128, scaled to a model's head_dim with each side's sub-vector length d kept; ``queries``
    G, the LUTs one SCORE pass scores against, 0 for the model's group capped at the config's
    ``units.aqpim.query_heads_per_pass``).
    ``spill``: where what does not fit in PIM goes: ``pcie`` (CPU memory, streamed to the GPU
    every step), ``gpu-first`` (the GPU's free HBM, then CPU memory streamed over PCIe),
    ``cpu-attention`` (GPU HBM first, then the CPU attends over its part: AttAcc's dgx-cpu).
    ``gqa``: one column read serves as many query heads of a KV head as the MACs' slots allow.
    ``device_per_gpu``: one PIM device (``stacks`` stacks) per GPU, or one shared by all.
    ``merge``: the buffer-die merge unit (AQPIM). ``mapping``: ``aqpim`` (the schedule picks the
    spread) or ``attacc`` (one head per channel, heads in rounds, AttAcc's trace generator).
    """

    name: str
    kind: str
    data_bits: int = 16
    group: int = 0
    numerics: Numerics | None = None
    spill: str = "gpu-first"
    gqa: bool = True
    device_per_gpu: bool = True
    merge: bool = True
    mapping: str = "aqpim"
    window: bool = False  # attention sinks + recent window in FP16 on the GPU
    queries: int = 0  # PQ: G (0: min(model group, units.aqpim.query_heads_per_pass))

    def __post_init__(self) -> None:
        if self.kind not in ("gpu", "fp16", "uniform", "pq"):
            raise ValueError(f"system {self.name!r}: unknown kind {self.kind!r}")
        if self.spill not in ("pcie", "gpu-first", "cpu-attention"):
            raise ValueError(f"system {self.name!r}: unknown spill policy {self.spill!r}")
        if self.kind == "uniform" and not (1 <= self.data_bits <= 8 and self.group >= 1):
            raise ValueError(f"system {self.name!r}: uniform needs data_bits in 1..8 and "
                             f"group >= 1, got {self.data_bits}, {self.group}")
        if self.kind == "pq" and not isinstance(self.numerics, Numerics):
            raise TypeError(f"system {self.name!r}: pq needs numerics (a Numerics), got "
                            f"{self.numerics!r}")
        q = self.queries
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= MAX_QUERIES:
            raise ValueError(f"system {self.name!r}: queries must be an int in 0..{MAX_QUERIES} "
                             f"(0: the model's group, capped by the config), got {q!r}")

    def bits_per_element(self, hw: HBM3Config, head_dim: int) -> float:
        """Stored bits per KV element in the PIM (scales included)."""
        if self.kind in ("gpu", "fp16"):
            return 16.0
        if self.kind == "uniform":
            return self.data_bits + hw.unit("uniform", "scale_bits") / self.group
        return pq_numerics(self, head_dim).bits_per_element


def _pq(name: str, d: int, k: int, value_d: int | None = None, value_k: int | None = None,
        **kw: Any) -> SystemSpec:
    """A PQ system at head_dim 128: keys d, K (M_k = 128 / d); values value_d, value_k (default:
    the keys')."""
    vd = d if value_d is None else value_d
    vk = k if value_k is None else value_k
    num = Numerics(head_dim=128, subspaces=128 // d, centroids=k, value_subspaces=128 // vd,
                   value_centroids=vk)
    return SystemSpec(name, "pq", numerics=num, window=True, **kw)


SYSTEM_SPECS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec("gpu", "gpu"),
        # the fair FP16 PIM baseline and its variants
        SystemSpec("fp16-pim", "fp16"),
        SystemSpec("fp16-pim-cpu", "fp16", spill="cpu-attention"),
        SystemSpec("fp16-pim-naive", "fp16", spill="pcie", gqa=False, device_per_gpu=False),
        SystemSpec("fp16-pim-attacc", "fp16", gqa=False, mapping="attacc"),
        # uniform-quantized KV in the same PIM (scales: FP16 scale + zero per group)
        SystemSpec("int8-pim", "uniform", data_bits=8, group=128, window=True),
        SystemSpec("int4-pim", "uniform", data_bits=4, group=32, window=True),
        SystemSpec("kivi2-pim", "uniform", data_bits=2, group=32, window=True),
        # AQPIM as built (docs/bank.md): G = the model's group (capped at 8) LUTs per SCORE
        # pass. 2 bits: keys and values d = 4, K = 256, the 2-bit configuration the perplexity
        # sweep found accurate (docs/llm.md); without the merge unit; ungrouped (G = 1)
        _pq("aqpim-2b", 4, 256),
        _pq("aqpim-2b-nomerge", 4, 256, merge=False),
        _pq("aqpim-2b-g1", 4, 256, queries=1),
        # the previous 2-bit system, d = 2, K = 16 (the demo's default shape)
        _pq("aqpim-2b-d2k16", 2, 16),
        # keys d = 8 + values d = 4, K = 256 (the <= 1.03x setting); 4 bits: d = 2, K = 256
        # (two columns per token at D = 128)
        _pq("aqpim-1.5b", 8, 256, 4, 256),
        _pq("aqpim-4b", 2, 256),
    )
}
SYSTEMS = tuple(SYSTEM_SPECS)
DEFAULT_SYSTEMS = SYSTEMS  # every named system
AQPIM_DEFAULTS = {"sinks": 4, "window": 64}


def get_spec(system: str | SystemSpec) -> SystemSpec:
    if isinstance(system, SystemSpec):
        return system
    if system not in SYSTEM_SPECS:
        raise ValueError(f"unknown system {system!r}: use one of {', '.join(SYSTEMS)}")
    return SYSTEM_SPECS[system]


def pq_numerics(spec: SystemSpec, head_dim: int) -> Numerics:
    """The PQ configuration of ``spec`` at ``head_dim``: each side's sub-vector length d and
    K kept (the named systems are defined at head_dim 128)."""
    if spec.kind != "pq" or spec.numerics is None:
        raise ValueError(f"system {spec.name!r} is not a PQ system")
    num = spec.numerics
    if num.head_dim == head_dim:
        return num
    dk, dv = num.keys.sub_dim, num.values.sub_dim
    for side, d in (("keys", dk), ("values", dv)):
        if head_dim % d:
            raise ValueError(f"system {spec.name!r}: head_dim {head_dim} is not divisible by "
                             f"the {side}' sub-vector length d = {d}")
    return dataclasses.replace(num, head_dim=head_dim, subspaces=head_dim // dk,
                               value_subspaces=head_dim // dv,
                               value_centroids=num.values.centroids)


def pq_queries(spec: SystemSpec, model: ModelConfig, hw: HBM3Config) -> int:
    """G of ``spec`` on ``model``: the spec's, else ``units.aqpim.query_heads_per_pass`` (the
    most LUTs a bank is built with, 1..8), never more than the model's group."""
    cap = spec.queries or hw.unit("aqpim", "query_heads_per_pass")
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_QUERIES:
        raise ValueError(f"hardware config: units.aqpim.query_heads_per_pass must be an int in "
                         f"1..{MAX_QUERIES}, got {cap!r}")
    return min(model.group, cap)


def system_for(num: Numerics) -> str | None:
    """The named AQPIM system (merge unit, default G) with ``num``'s key and value geometry at
    its head_dim, or None."""
    def shape(n: Numerics) -> tuple[int, ...]:
        return (n.head_dim, n.subspaces, n.centroids, n.values.subspaces, n.values.centroids)

    for name, spec in SYSTEM_SPECS.items():
        if spec.kind != "pq" or not spec.merge or spec.queries:
            continue
        try:
            if shape(pq_numerics(spec, num.head_dim)) == shape(num):
                return name
        except ValueError:
            continue
    return None


def _beats(bits: int) -> int:
    return -(-bits // 256)


def _link_partial(model: ModelConfig, word_bytes: int) -> int:
    """One (max, sum, out[D]) partial on the link."""
    return (model.head_dim + 2) * word_bytes


def aqpim_workload(model: ModelConfig, hw: HBM3Config, num: Numerics, batch: int,
                   tokens: int, *, merge: bool = True, mapping: str = "aqpim",
                   queries: int = 1) -> PimWorkload:
    """One decode step of AQPIM in the banks (``tokens`` PQ tokens per KV head).

    The bank as built (docs/bank.md): G = ``queries`` LUTs per SCORE pass, ``ceil(group / G)``
    passes per KV head. SCORE reads each key column once and scores it against the G LUTs in
    the same cycle (1 cycle per column whatever G); AGGREGATE reads each value column once (one
    token per cycle, or one column per cycle when a token spans several) into G histograms,
    then the one value MAC reads them out in turn: G (K_v D / lanes + 4) cycles per pass, on every
    streaming bank, before the next command. Sizes come from :class:`Geometry`.
    """
    u = lambda k: hw.unit("aqpim", k)  # noqa: E731
    div = u("clock_divider")
    g = Geometry(num, queries=queries)
    passes = -(-model.group // queries)
    # AGGREGATE's value stream: tokens_per_column tokens per column at one token per cycle, or
    # one column per cycle (the column reader's rate) when a token spans several columns
    value_cycles = max(g.value.tokens_per_column * u("softmax_histogram_cycles_per_token")
                       / g.value.columns_per_token, 1)
    # the value MAC's lanes take D / lanes cycles per bin (hw/value_mac.py, as
    # hbm3.command_unit_cycles)
    per_bin = num.head_dim // min(u("value_mac_lanes"), num.head_dim)
    value_mac = num.values.centroids * per_bin + u("value_mac_latency")
    merge_cfg = hw.units["aqpim"].get("merge_unit", {})
    # the merge unit drains each (channel, query head) group after its last beat
    merge_tail = queries * merge_cfg.get("latency", 0) if merge else 0
    tail = u("lut_accumulate_latency") + u("softmax_histogram_latency")
    column_bytes = COLUMN_BITS // 8
    # the host builds a LUT per query head and uploads it in LOAD_LUT beats (L bits per entry
    # in power-of-two slots, as the ISA packs them); a LUT builder in the buffer die
    # (lut_from_host false) would take the FP16 query instead
    lut_bytes = g.lut_beats * column_bytes if hw.units["aqpim"].get("lut_from_host", True) \
        else model.head_dim * FP16_BYTES
    word = merge_cfg.get("partial_word_bytes", u("partial_word_bytes"))
    return PimWorkload(
        layers=model.layers,
        jobs_per_layer=batch * model.kv_heads,
        passes=passes,
        tokens=tokens,
        key_bits_per_token=g.key.token_bits,
        value_bits_per_token=g.value.token_bits,
        key_spacing=math.ceil(u("lut_accumulate_cycles_per_column") * div),
        value_spacing=math.ceil(value_cycles * div),
        # one WRITE_KV: header, the new token's K then V (W-bit elements), encoded in the bank
        write_beats_per_job=1 + g.token_beats,
        # G LOAD_LUTs per pass, header and beats each
        query_beats_per_pass=queries * (1 + g.lut_beats),
        partial_beats_per_bank=queries * (1 + _beats((num.head_dim + 2) * 8
                                                     * u("partial_word_bytes"))),
        tail_cycles=math.ceil(tail * div) + merge_tail,
        pass_cycles=math.ceil(queries * value_mac * div),
        lut_load_cycles=math.ceil(queries * g.lut_beats * u("lut_load_cycles_per_beat") * div),
        label=f"aqpim-{num.bits_per_element:g}b",
        # down: every query head's LUT and the new token's FP16 K and V
        link_down_bytes_per_job=model.group * lut_bytes + 2 * model.head_dim * FP16_BYTES,
        link_up_bytes_per_partial=_link_partial(model, word),
        queries_per_pass=queries,
        merge=merge,
        # the new token's code columns: one per side, or its columns per token
        write_columns_per_job=g.key.columns_per_token + g.value.columns_per_token,
        mapping=mapping,
    )


def uniform_workload(model: ModelConfig, hw: HBM3Config, batch: int, tokens: int, *,
                     data_bits: int = 16, stored_bits: float = 16.0, gqa: bool = True,
                     mapping: str = "aqpim", label: str = "fp16-pim") -> PimWorkload:
    """One decode step of AttAcc-style PIM over FP16 (``data_bits`` 16) or integer KV.

    Each bank's MACs take a 32 B column (256 / data_bits elements) in ``cycles`` cycles per
    query head; a GQA-aware schedule serves ``floor(nCCD_AB / cycles)`` query heads (at most the
    GQA group) per column read, the naive one a single query head. Without GQA (and in the
    AttAcc mapping, which has no GQA), every query head is a job of its own over its KV copy.
    """
    design = "fp16" if data_bits == 16 else "uniform"
    u = lambda k: hw.unit(design, k)  # noqa: E731
    elems = hw.org["column_bytes"] * 8 / data_bits
    if data_bits == 16:
        cycles = u("mac_cycles_per_column") * elems / u("macs_per_column_command")
        div = u("clock_divider")
    else:
        cycles = elems / u("macs_per_cycle")
        div = 1
    if gqa:
        qpp = max(1, min(model.group, int(hw.n_ccd_ab // cycles)))
        jobs, passes = batch * model.kv_heads, -(-model.group // qpp)
    else:
        # one query head per pass; the AttAcc mapping makes every query head its own job
        qpp = 1
        if mapping == "attacc":
            jobs, passes = batch * model.heads, 1
        else:
            jobs, passes = batch * model.kv_heads, model.group
    bits = math.ceil(model.head_dim * stored_bits)
    spacing = math.ceil(qpp * cycles * div)
    return PimWorkload(
        layers=model.layers,
        jobs_per_layer=jobs,
        passes=passes,
        tokens=tokens,
        key_bits_per_token=bits,
        value_bits_per_token=bits,
        key_spacing=spacing,
        value_spacing=spacing,
        write_beats_per_job=2 * (1 + _beats(bits)),
        query_beats_per_pass=qpp * (1 + _beats(model.head_dim * 16)),
        partial_beats_per_bank=qpp * (1 + _beats(model.head_dim * 8 * u("partial_word_bytes"))),
        roundtrip_bytes_per_token=qpp * 2 * FP16_BYTES,  # score out, softmax weight back
        tail_cycles=math.ceil(u("mac_latency") * div),
        label=label,
        link_down_bytes_per_job=(jobs and (batch * model.heads // jobs)) * model.head_dim
        * FP16_BYTES + 2 * model.head_dim * FP16_BYTES,
        link_up_bytes_per_partial=_link_partial(model, FP16_BYTES),
        queries_per_pass=qpp,
        merge=True,  # AttAcc's buffer die gathers the bank outputs (its softmax/GEMV buffers)
        write_columns_per_job=_beats(2 * bits),
        mapping=mapping,
    )


def fp16_workload(model: ModelConfig, hw: HBM3Config, batch: int, tokens: int, *,
                  gqa: bool = False, mapping: str = "aqpim") -> PimWorkload:
    """AttAcc-style FP16 PIM; ``gqa`` False is the naive one-pass-per-query-head schedule."""
    return uniform_workload(model, hw, batch, tokens, gqa=gqa, mapping=mapping,
                            label="fp16-pim" if gqa else "fp16-pim-naive")


def spec_workload(spec: SystemSpec, model: ModelConfig, hw: HBM3Config, batch: int,
                  tokens: int) -> PimWorkload:
    """The PIM workload of ``spec`` (a PIM kind) at ``tokens`` PIM-resident tokens per job."""
    if spec.kind == "pq":
        return aqpim_workload(model, hw, pq_numerics(spec, model.head_dim), batch, tokens,
                              merge=spec.merge, mapping=spec.mapping,
                              queries=pq_queries(spec, model, hw))
    if spec.kind == "fp16":
        return uniform_workload(model, hw, batch, tokens, gqa=spec.gqa, mapping=spec.mapping,
                                label=spec.name)
    if spec.kind == "uniform":
        return uniform_workload(model, hw, batch, tokens, data_bits=spec.data_bits,
                                stored_bits=spec.bits_per_element(hw, model.head_dim),
                                gqa=spec.gqa, mapping=spec.mapping, label=spec.name)
    raise ValueError(f"system {spec.name!r} has no PIM workload")


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
    kv_bytes: int  # the KV cache in the system's own format (+ FP16 window, + codebooks)
    spilled_bytes: int  # outside PIM (GPU HBM and CPU memory)
    pim_bandwidth_utilisation: float | None = None
    notes: list[str] = field(default_factory=list)
    cpu_bytes: int = 0  # the part in CPU memory
    gpu_hbm_bytes: int = 0  # the spilled part in the GPU's free HBM
    link_bytes: int = 0  # GPU-PIM link, whole step
    energy_j: dict[str, float] = field(default_factory=dict)
    bits_per_element: float = 16.0
    streamed_bytes: int = 0  # read inside the PIM banks, whole step (re-reads per pass count)

    @property
    def fits(self) -> bool:
        """The whole KV cache sits in PIM (or, for the GPU system, in its HBM)."""
        return self.spilled_bytes == 0

    @property
    def pcie_share(self) -> float:
        return self.breakdown.get("pcie", 0.0) / self.seconds if self.seconds else 0.0

    @property
    def energy_total_j(self) -> float:
        return sum(self.energy_j.values())

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fits"] = self.fits
        d["pcie_share"] = self.pcie_share
        d["energy_total_j"] = self.energy_total_j
        return d


def _hw_e(hw: HBM3Config, key: str) -> float:
    """A PIM energy constant (``hbm3.json``'s value when the config has none)."""
    v = hw.energy.get(key, HW_ENERGY_DEFAULTS.get(key))
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ValueError(f"hardware config: energy.{key} must be a number >= 0, got {v!r}")
    return float(v)


def evaluate(system: str | SystemSpec, model: ModelConfig, gpu: GPUConfig, hw: HBM3Config,
             context: int, batch: int) -> Result:
    """One decode step of ``system`` at ``context`` tokens and ``batch`` sequences."""
    spec = get_spec(system)
    context = check_int("context", context, 1)
    batch = check_int("batch", batch, 1)
    gpus = gpu.count_for(model)
    fc = gpu.fc_seconds(model, batch, gpus)
    common = {"fc": fc, "allreduce": gpu.allreduce_seconds(model, batch, gpus),
              "norm_act": gpu.norm_seconds(model)}
    jobs = batch * model.layers * model.kv_heads
    notes: list[str] = []
    util = None
    pim = None
    link_bytes = 0
    e_gpu_bit = gpu.e("hbm_pj_per_bit") * 1e-12
    energy = {
        "gpu_fc": model.weight_bytes * 8 * e_gpu_bit
        + 2.0 * model.params * batch * gpu.e("flop_pj") * 1e-12,
        "allreduce": gpu.allreduce_bytes(model, batch, gpus) * 8
        * gpu.e("nvlink_pj_per_bit") * 1e-12,
    }
    gpu_room = max(0.0, gpus * gpu.usable_bytes - model.weight_bytes)

    if spec.kind == "gpu":
        kv = model.kv_bytes(context, batch)
        in_hbm = int(min(kv, gpu_room))
        cpu = kv - in_hbm
        read, pcie = gpu.read_seconds(kv, gpus), gpu.pcie_seconds(cpu, gpus)
        attn = {"pcie": pcie} if pcie > read else {"gpu_attention": read}
        attention = max(read, pcie)
        spilled, in_gpu = cpu, in_hbm
        energy["gpu_attention"] = kv * 8 * e_gpu_bit
        energy["pcie"] = cpu * 8 * (gpu.e("pcie_pj_per_bit") + gpu.e("host_dram_pj_per_bit")) \
            * 1e-12
        bpe = 16.0
    else:
        devices = gpus if spec.device_per_gpu else 1
        hw_sys = hw.replace(stacks=hw.stacks * devices, link_gbs=hw.link_gbs * devices)
        bpe = spec.bits_per_element(hw, model.head_dim)
        full = min(context, AQPIM_DEFAULTS["sinks"] + AQPIM_DEFAULTS["window"]) \
            if spec.window else 0
        pim_tokens = context - full
        # per job and token, K and V in the stored format (whole bytes per token)
        tok_bytes = math.ceil(2 * model.head_dim * bpe / 8)
        fixed = 0
        if spec.kind == "pq":
            # key and value codebooks of every job piece (every bank's units hold both): M
            # subspaces of cb_beats beats per side (K x d W-bit centroids each)
            geo = Geometry(pq_numerics(spec, model.head_dim))
            cb_bytes = sum(side.subspaces * side.cb_beats for side in (geo.key, geo.value)) \
                * COLUMN_BITS // 8
            pieces = model.layers * max(batch * model.kv_heads, hw_sys.banks)
            fixed = pieces * cb_bytes
        room = hw_sys.capacity_bytes - fixed
        if room <= 0:
            notes.append("codebooks alone exceed PIM capacity")
        fit = min(pim_tokens, max(0, int(room // (jobs * tok_bytes)))) if room > 0 else 0
        rest = jobs * (pim_tokens - fit) * tok_bytes
        window_bytes = jobs * full * model.kv_token_bytes()
        kv = jobs * pim_tokens * tok_bytes + window_bytes + fixed
        free = max(0.0, gpu_room - window_bytes)
        in_gpu = 0 if spec.spill == "pcie" else int(min(rest, free))
        cpu = rest - in_gpu
        spilled = rest
        if fit:
            pim = simulate_decode(hw_sys, spec_workload(spec, model, hw_sys, batch, fit))
            util = pim.bandwidth_utilisation
            link_bytes = pim.link_bytes
        pim_s = pim.seconds if pim else 0.0
        if spec.spill == "cpu-attention":
            read = gpu.read_seconds(window_bytes + in_gpu, gpus)
            pcie = 0.0
            cpu_s = gpu.host_read_seconds(cpu)
        else:
            # the GPU reads what it holds and what streams in over PCIe, overlapped
            read = gpu.read_seconds(window_bytes + in_gpu + cpu, gpus)
            pcie = gpu.pcie_seconds(cpu, gpus)
            cpu_s = 0.0
        sides = {"pim": pim_s, "gpu_attention": read, "pcie": pcie, "cpu_attention": cpu_s}
        slowest = max(sides, key=lambda k: sides[k])
        attention = sides[slowest]
        attn = pim.breakdown() if slowest == "pim" and pim else {slowest: attention}
        # energy of the PIM side
        if pim:
            e_bits = pim.bytes_streamed * 8
            energy["pim_dram"] = e_bits * (_hw_e(hw, "activate_pj_per_bit")
                                           + _hw_e(hw, "cell_read_pj_per_bit")) * 1e-12
            energy["pim_bus"] = pim.bus_bytes * 8 * _hw_e(hw, "bank_to_buffer_pj_per_bit") * 1e-12
            energy["pim_link"] = pim.link_bytes * 8 * _hw_e(hw, "link_pj_per_bit") * 1e-12
            # one op per element and query head (FP16 / dequant MAC), or per code (PQ)
            heads_tokens = batch * model.layers * model.heads * fit
            if spec.kind == "pq":
                num = pq_numerics(spec, model.head_dim)
                ops = heads_tokens * (num.subspaces + num.values.subspaces)
                energy["pim_units"] = ops * _hw_e(hw, "pq_op_pj") * 1e-12
            else:
                ops = heads_tokens * 2 * model.head_dim
                energy["pim_units"] = ops * _hw_e(hw, "fp16_mac_pj") * 1e-12
        energy["gpu_attention"] = (window_bytes + in_gpu + (0 if cpu_s else cpu)) * 8 * e_gpu_bit
        energy["pcie"] = (cpu * 8 * (gpu.e("pcie_pj_per_bit") + gpu.e("host_dram_pj_per_bit"))
                          * 1e-12 if pcie else 0.0)
        energy["cpu_attention"] = cpu * 8 * gpu.e("host_dram_pj_per_bit") * 1e-12 if cpu_s \
            else 0.0

    breakdown = {**common, **attn}
    return Result(
        system=spec.name,
        model=model.name,
        context=context,
        batch=batch,
        gpus=gpus,
        stacks=hw.stacks * (gpus if spec.device_per_gpu and spec.kind != "gpu" else 1),
        seconds=sum(common.values()) + attention,
        attention_seconds=attention,
        breakdown=breakdown,
        kv_bytes=int(kv),
        spilled_bytes=int(spilled),
        pim_bandwidth_utilisation=util,
        notes=notes,
        cpu_bytes=int(cpu),
        gpu_hbm_bytes=int(in_gpu),
        link_bytes=int(link_bytes),
        energy_j={k: v for k, v in energy.items() if v},
        bits_per_element=bpe,
        streamed_bytes=pim.bytes_streamed if pim else 0,
    )
