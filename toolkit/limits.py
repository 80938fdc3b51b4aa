"""Ranges for factory parameters, written in the signature: the recipe schema checks them.

``Annotated`` types over the constraints of the ``annotated-types`` package, so a plugin's
factory says ``temperature: Temperature = 0.1`` and ``selfsup recipe validate`` rejects
``objective.temperature: 0`` with the file, line and key, before anything is built. Any other
``annotated_types`` constraint works the same way (``Annotated[int, Interval(ge=2, le=8)]``).
"""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Gt, Interval

from toolkit.schema import ASCENDING

Positive = Annotated[int, Ge(1)]
"""A count or size: 1 or more."""
NonNegative = Annotated[int, Ge(0)]
"""A count that may be 0 (0 usually turns something off)."""
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Temperature = Annotated[float, Gt(0)]
"""A softmax or logit temperature ``tau`` in ``exp(s / tau)``: above 0."""
Probability = Annotated[float, Interval(ge=0, le=1)]
Momentum = Annotated[float, Interval(ge=0, le=1)]
"""An EMA momentum ``m`` in ``xi <- m * xi + (1 - m) * theta`` (0.99-0.999 in MoCo and BYOL)."""
Fraction = Annotated[float, Interval(gt=0, le=1)]
"""A share of something, above 0 and at most 1."""
FractionRange = Annotated[tuple[Fraction, Fraction], ASCENDING]
"""``[low, high]`` with ``0 < low <= high <= 1``, e.g. the area range of a random resized crop."""
