"""Offline calibration of MiniLM codebooks on held-out text, stored compactly.

Offline PQ codebooks are shared by every request, like weights, so they can be trained on far
more data than one prompt. The evaluation sample (:mod:`.capture`, ``minilm_qkv.npz``) holds only
two windows of 512 tokens; using one as the other's calibration gives k-means 512 points for
K = 256 centroids, too few. This module captures Q, K, V of all-MiniLM-L6-v2 on **different**
text (the docstrings of :data:`CALIB_MODULES`, a list disjoint from the evaluation's
:data:`~aqpim.sw.eval.capture.STDLIB_MODULES`; 48 windows = 24576 tokens by default) and stores,
per (layer, head) of the evaluation sample and per :class:`Book` (cache, d, K, transform):

* the transform applied before PQ (keys ``x @ A``, queries ``q @ inv(A).T`` so that scores are
  unchanged; values ``v @ R`` with R orthogonal, the output rotated back with ``R.T``);
* the codebooks (float16, shape (M, K, d));
* the integer model's per-subspace steps (``intmodel.subspace_scales`` of the transformed
  calibration data and the centroids), i.e. what the host fixes when it writes the codebooks.

The file (``sw/data/minilm_calib.npz``, about 2 MB) holds no activations, only these; the
evaluation reads it with :class:`Calibration`. Run
``python -m aqpim.sw.eval.calibrate --out sw/data/minilm_calib.npz`` (needs torch, the ``eval``
extra; a few minutes on one core, most of it k-means).

Key transform (``qaware``): a score error is ``q . (k - c)``, so the expected squared score
error is ``(k - c)^T Sigma_q (k - c)`` with ``Sigma_q = E[q q^T]`` over calibration queries.
Quantizing ``k' = Sigma_q^(1/2) k`` in plain L2 minimises exactly that, and the query becomes
``q' = Sigma_q^(-1/2) q`` (``q' . k' = q . k``). Both matrices fold into W_k and W_q (no RoPE in
MiniLM), so the banks see ordinary keys and queries and nothing changes in hardware. The PCA
rotation with eigenvalue allocation (:func:`.accuracy.rotation`) is then applied on top.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from aqpim.sw.eval import accuracy as acc
from aqpim.sw.golden import intmodel, pq

from aqpim.numerics import Numerics

__all__ = [
    "CALIB_MODULES",
    "Book",
    "BOOKS",
    "DEFAULT_CALIB",
    "key_transform",
    "value_transform",
    "build",
    "Calibration",
    "load_calibration",
    "main",
]

DEFAULT_CALIB = "minilm_calib.npz"

# Held-out text: none of these is in capture.STDLIB_MODULES (checked in the tests).
CALIB_MODULES: tuple[str, ...] = (
    "os", "io", "abc", "contextlib", "asyncio", "multiprocessing", "configparser", "optparse",
    "gzip", "bz2", "lzma", "struct", "codecs", "locale", "gettext", "pprint", "reprlib",
    "operator", "numbers", "array", "weakref", "types", "graphlib", "sched", "selectors", "ssl",
    "smtplib", "imaplib", "ftplib", "poplib", "mailbox", "mimetypes", "base64", "wave",
    "colorsys", "pydoc", "doctest", "trace", "timeit", "cProfile", "pstats", "ast", "dis",
    "tokenize", "symtable", "importlib", "pkgutil", "runpy", "ipaddress", "uuid", "secrets",
    "hmac", "glob", "fnmatch", "filecmp", "platform", "sysconfig", "warnings", "traceback",
    "signal", "shlex", "cmd", "code", "getopt", "xmlrpc.client", "http.server",
    "http.cookiejar", "urllib.request", "email.message", "concurrent.futures",
    "xml.dom.minidom", "xml.etree.ElementTree", "html.parser", "plistlib", "zoneinfo",
    "contextvars", "socketserver", "tomllib", "ctypes",
)


@dataclass(frozen=True)
class Book:
    """One stored codebook family: which cache, sub-vector size, K and transform."""

    cache: str  # "K" or "V"
    d: int
    centroids: int
    rotate: bool = True
    qaware: bool = False  # keys only

    def __post_init__(self) -> None:
        if self.cache not in ("K", "V"):
            raise ValueError(f"cache must be 'K' or 'V', got {self.cache!r}")
        if self.qaware and self.cache != "K":
            raise ValueError("the query-aware transform applies to keys only")

    @property
    def name(self) -> str:
        xf = ("q" if self.qaware else "") + ("r" if self.rotate else "")
        return f"{self.cache}_d{self.d}_K{self.centroids}_{xf or 'plain'}"


# What the default evaluation's "calib" settings need (best, best4 and their ablations).
BOOKS: tuple[Book, ...] = (
    Book("K", 8, 256, qaware=True),
    Book("K", 8, 256, rotate=True),
    Book("K", 8, 256, rotate=False, qaware=True),
    Book("K", 4, 256, qaware=True),
    Book("K", 4, 256, rotate=True),
    Book("K", 2, 256, qaware=True),
    Book("K", 2, 256, rotate=True),
    Book("V", 4, 256, rotate=True),
    Book("V", 4, 256, rotate=False),
    Book("V", 2, 256, rotate=True),
)


def _sqrtm(s: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Symmetric (inverse) square root of a PSD matrix; eigenvalues floored at 1e-9 x max."""
    w, u = np.linalg.eigh(s)
    w = np.maximum(w, 1e-9 * max(float(w.max()), 1e-300))
    return (u * w ** (-0.5 if inverse else 0.5)) @ u.T


def key_transform(q: np.ndarray, k: np.ndarray, d: int, *, qaware: bool, rotate: bool
                  ) -> np.ndarray:
    """Key transform A (D, D): ``Sigma_q^(1/2)`` (if ``qaware``) then the PCA rotation of the
    transformed keys (if ``rotate``). Keys become ``k @ A`` and queries ``q @ inv(A).T``.

    Parameters
    ----------
    q, k:
        Calibration queries and keys (N, D) of one head.
    d:
        Sub-vector size the rotation balances the subspaces for.
    """
    q = np.asarray(q, np.float64)
    return key_transform_cov(q.T @ q / q.shape[0] if qaware else None, k, d, rotate=rotate)


def key_transform_cov(sigma_q: np.ndarray | None, k: np.ndarray, d: int, *, rotate: bool
                      ) -> np.ndarray:
    """:func:`key_transform` from the query second-moment matrix ``Sigma_q`` (D, D) directly
    (None: no query-aware part), for callers that accumulate it instead of keeping queries."""
    k = np.asarray(k, np.float64)
    a = np.eye(k.shape[1]) if sigma_q is None else _sqrtm(np.asarray(sigma_q, np.float64))
    if rotate:
        a = a @ acc.rotation(k @ a, d)
    return a


def value_transform(v: np.ndarray, d: int, *, rotate: bool) -> np.ndarray:
    """Value rotation R (orthogonal, (D, D)): PCA + eigenvalue allocation, or the identity."""
    v = np.asarray(v, np.float64)
    return acc.rotation(v, d) if rotate else np.eye(v.shape[1])


def build(arrays: dict[str, np.ndarray], books: tuple[Book, ...] = BOOKS, *, seed: int = acc.SEED,
          progress: bool = True) -> dict[str, np.ndarray]:
    """Transforms, codebooks and int-model steps for every (layer, head) and book.

    Parameters
    ----------
    arrays:
        Calibration ``Q``, ``K``, ``V`` (layers, tokens, heads, D).
    books:
        The codebook families to train.
    seed:
        k-means seed (keys ``seed``, values ``seed + 1000``, as the evaluation's offline books).

    Returns
    -------
    dict of arrays ``{name}.xform`` (L, H, D, D) float32, ``{name}.cb`` (L, H, M, K, d) float16,
    ``{name}.scale`` (L, H, M) float32.
    """
    q, k, v = (np.asarray(arrays[n], np.float64) for n in "QKV")
    layers, tokens, heads, dim = k.shape
    out: dict[str, np.ndarray] = {}
    for b in books:
        if dim % b.d:
            raise ValueError(f"{b.name}: d = {b.d} does not divide head_dim {dim}")
        if tokens < b.centroids:
            raise ValueError(f"{b.name}: {tokens} calibration tokens < K = {b.centroids}")
        m = dim // b.d
        num = Numerics(head_dim=dim, subspaces=m, centroids=b.centroids)
        xf = np.empty((layers, heads, dim, dim), np.float32)
        cbs = np.empty((layers, heads, m, b.centroids, b.d), np.float16)
        sc = np.empty((layers, heads, m), np.float32)
        t0 = time.time()
        for lay in range(layers):
            for h in range(heads):
                x = (k if b.cache == "K" else v)[lay, :, h]
                if b.cache == "K":
                    a = key_transform(q[lay, :, h], x, b.d, qaware=b.qaware, rotate=b.rotate)
                else:
                    a = value_transform(x, b.d, rotate=b.rotate)
                a = a.astype(np.float32).astype(np.float64)  # what the file will hold
                xt = x @ a
                cb = pq.train_codebooks(xt, subspaces=m, centroids=b.centroids, iters=25,
                                        seed=seed + (0 if b.cache == "K" else 1000))
                cb = cb.astype(np.float16)
                rows = cb.astype(np.float64).transpose(1, 0, 2).reshape(b.centroids, dim)
                xf[lay, h], cbs[lay, h] = a, cb
                sc[lay, h] = intmodel.subspace_scales(np.concatenate([xt, rows]), num)
        out[f"{b.name}.xform"], out[f"{b.name}.cb"], out[f"{b.name}.scale"] = xf, cbs, sc
        if progress:
            print(f"{b.name}: {time.time() - t0:.0f} s", file=sys.stderr)
    return out


class Calibration:
    """Stored offline codebooks (from :func:`build`) for the heads of one activation file.

    Parameters
    ----------
    arrays:
        The npz contents: ``layers``, ``heads`` (head labels), ``head_dim`` and the book arrays.
    name:
        What to call it in error messages.
    """

    def __init__(self, arrays: dict[str, np.ndarray], name: str = "calibration") -> None:
        for key in ("heads", "head_dim", "layers"):
            if key not in arrays:
                raise ValueError(f"{name}: missing {key!r}")
        self.name = name
        self.heads = tuple(int(h) for h in np.asarray(arrays["heads"]).ravel())
        self.head_dim = int(np.asarray(arrays["head_dim"]))
        self.layers = int(np.asarray(arrays["layers"]))
        self.tokens = int(np.asarray(arrays.get("tokens", 0)))
        self.source = str(np.asarray(arrays.get("source", name)))
        self._arrays = arrays

    def matches(self, acts: acc.Acts) -> str | None:
        """None when these books fit ``acts`` (same layers, head labels, D), else why not."""
        if (acts.layers, acts.heads, acts.head_dim) != (self.layers, self.heads, self.head_dim):
            return (f"{self.name} is for {self.layers} layers, heads {self.heads}, D = "
                    f"{self.head_dim}; the activations have {acts.layers} layers, heads "
                    f"{acts.heads}, D = {acts.head_dim}")
        return None

    def has(self, book: Book) -> bool:
        return f"{book.name}.cb" in self._arrays

    def get(self, book: Book, layer: int, head: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(transform (D, D), codebooks (M, K, d), int-model steps (M,)) as float64; ``head`` is
        the index into the activation file's heads axis."""
        if not self.has(book):
            raise ValueError(f"{self.name} has no codebooks {book.name}")
        return tuple(np.asarray(self._arrays[f"{book.name}.{part}"][layer, head], np.float64)
                     for part in ("xform", "cb", "scale"))  # type: ignore[return-value]


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Load a calibration npz (default: the committed ``minilm_calib.npz``)."""
    if path is None:
        path = Path(str(resources.files("aqpim.sw").joinpath("data", DEFAULT_CALIB)))
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such calibration file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    return Calibration(arrays, name=str(path))


def main(argv: list[str] | None = None) -> int:
    """``python -m aqpim.sw.eval.calibrate --out FILE.npz [--windows N] [--from-npz CAP]``."""
    ap = argparse.ArgumentParser(
        prog="python -m aqpim.sw.eval.calibrate",
        description="train offline MiniLM codebooks on held-out stdlib docstrings (needs torch "
        "unless --from-npz)",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--windows", type=int, default=48, help="calibration windows of 512 tokens")
    ap.add_argument("--heads", default="0,5,10", help="head indices (those of the eval sample)")
    ap.add_argument("--update", action="store_true",
                    help="keep the books --out already holds (same capture), train the missing "
                    "ones, drop those no longer in BOOKS")
    ap.add_argument("--from-npz", type=Path, default=None,
                    help="use Q/K/V already captured on CALIB_MODULES instead of running MiniLM")
    args = ap.parse_args(argv)
    if args.windows < 1:
        ap.error(f"--windows must be >= 1, got {args.windows}")
    heads = [int(h) for h in args.heads.split(",")]
    if args.from_npz is not None:
        with np.load(args.from_npz) as z:
            cal = {n: z[n] for n in "QKV"}
    else:
        from aqpim.sw.eval import capture

        cal = capture.capture_qkv(capture.stdlib_text(CALIB_MODULES), windows=args.windows,
                                  window=512, heads=heads)
    todo, kept = BOOKS, {}
    if args.update and args.out.is_file():
        with np.load(args.out) as z:
            old = {key: z[key] for key in z.files}
        have = [b for b in BOOKS if f"{b.name}.cb" in old]
        kept = {key: old[key] for b in have for key in old if key.startswith(b.name + ".")}
        todo = tuple(b for b in BOOKS if b not in have)
    books = kept | build(cal, todo)
    layers, tokens, _, dim = cal["K"].shape
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out, **books, heads=np.asarray(heads, np.int64), layers=np.int64(layers),
        head_dim=np.int64(dim), tokens=np.int64(tokens),
        books=np.str_(",".join(b.name for b in BOOKS)),
        modules=np.str_(",".join(CALIB_MODULES)), python=np.str_(sys.version.split()[0]),
        source=np.str_(f"all-MiniLM-L6-v2 Q/K/V on {tokens} tokens of docstrings of "
                       f"{len(CALIB_MODULES)} stdlib modules disjoint from the eval sample's"),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
