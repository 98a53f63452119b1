"""AQPIM: product-quantized KV-cache attention in HBM3 processing-in-memory.

The package is split as the hardware is:

- ``aqpim.numerics`` and ``aqpim.isa``: the contract shared by hardware and software
  (fixed-point formats and widths; the PIM command set). Pure Python.
- ``aqpim.hw`` (folder ``hw/``): Amaranth RTL, one unit per file.
- ``aqpim.sw`` (folder ``sw/``): NumPy golden model, host driver, performance model, evaluation.
- ``aqpim.sim`` (folder ``sim/``): cocotb testbenches run under Verilator.
"""

__version__ = "0.1.0"
