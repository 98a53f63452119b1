"""Argument checks shared by hw/ and sw/: one wording for every bad-value error.

Every constructor and public function of the project checks its inputs at once and raises
``TypeError`` (wrong kind) or ``ValueError`` (wrong value) naming the argument and the bad value.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["check_array", "check_instance", "check_int", "float_array", "int_array"]

T = TypeVar("T")


def check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) in ``[lo, hi]``.

    ``hi=None`` means no upper bound. NumPy integers are accepted.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if hi is None:
        if value < lo:
            raise ValueError(f"{name} must be >= {lo}, got {value}")
    elif not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def check_instance(name: str, value: object, cls: type[T]) -> T:
    """Return ``value`` if it is a ``cls``, else TypeError naming the argument and the value."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {value!r}")
    return value


def check_array(name: str, a: object) -> np.ndarray:
    """Return ``a`` if it is a NumPy array, else raise TypeError."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    return a


def _ndim(name: str, a: np.ndarray, ndim: int | None) -> None:
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")


def float_array(name: str, a: object, ndim: int | None = None) -> np.ndarray:
    """Return ``a`` if it is a finite floating array (of ``ndim`` dimensions), else raise."""
    a = check_array(name, a)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {a.dtype}")
    _ndim(name, a, ndim)
    if not np.all(np.isfinite(a)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ValueError(f"{name} has a non-finite value {a[bad]} at index {bad}")
    return a


def int_array(name: str, a: object, ndim: int | None = None) -> np.ndarray:
    """Return ``a`` if it is an integer array (of ``ndim`` dimensions), else raise."""
    a = check_array(name, a)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    _ndim(name, a, ndim)
    return a
