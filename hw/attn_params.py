"""Parameter handling shared by the attention units (LUT-accumulate, softmax, histogram, MAC).

Every attention unit takes keyword-only parameters: either a whole
:class:`aqpim.numerics.Numerics` (``numerics=``), or any of its integer fields, or both (the
fields then override the given or default configuration). The result is one validated
``Numerics``, so every width in the RTL is the width the golden model uses. This module is
pure Python (no Amaranth).
"""

from __future__ import annotations

import dataclasses

from aqpim.numerics import Numerics

__all__ = ["numerics_from"]

_FIELDS = (
    "head_dim", "subspaces", "centroids", "elem_bits", "lut_bits", "lut_frac_bits",
    "exp_bits", "token_capacity",
)


def numerics_from(numerics: Numerics | None = None, **fields: int | None) -> Numerics:
    """Return the ``Numerics`` a unit was asked for.

    Parameters
    ----------
    numerics:
        A base configuration, or ``None`` for the project defaults (``Numerics()``).
    **fields:
        Integer fields of ``Numerics`` that override the base; ``None`` means "not given".
        Nothing is guessed: ``subspaces=256`` with the default ``head_dim=128`` is a
        ValueError naming both values, as ``Numerics`` itself raises it.

    Raises
    ------
    TypeError
        ``numerics`` is not a ``Numerics``, or a field is not an int.
    ValueError
        An unknown field, or a value ``Numerics`` rejects.
    """
    if numerics is not None and not isinstance(numerics, Numerics):
        raise TypeError(f"numerics must be a Numerics, got {numerics!r}")
    given: dict[str, int] = {}
    for name, value in fields.items():
        if name not in _FIELDS:
            raise ValueError(f"unknown parameter {name!r}; expected one of {_FIELDS}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        given[name] = value
    base = numerics if numerics is not None else Numerics()
    return dataclasses.replace(base, **given)
