"""Numerics arguments of the units.

The attention units take a whole :class:`Numerics` (:func:`check_numerics`), so every width in
the RTL is the width the golden model uses; ``aqpim verilog`` builds one from flat ``--param``
values (:func:`aqpim.hw.verilog.build_unit`). The bank controller also accepts flat fields over
a base configuration (:func:`numerics_from`), which the RTL device's build passes. Pure Python
(no Amaranth).
"""

from __future__ import annotations

import dataclasses

from aqpim.checks import check_instance
from aqpim.numerics import Numerics

__all__ = ["check_numerics", "numerics_from"]

_FIELDS = (
    "head_dim", "subspaces", "centroids", "elem_bits", "lut_bits", "lut_frac_bits",
    "exp_bits", "token_capacity", "value_subspaces", "value_centroids",
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


def check_numerics(numerics: object) -> Numerics:
    """Return ``numerics`` if it is a :class:`Numerics`; TypeError naming it otherwise."""
    return check_instance("numerics", numerics, Numerics)
