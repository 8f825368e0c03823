"""Boolean and optional-number config values given on the command line.

``python -m monai.bundle run ... --resume false`` passes the *string* ``"false"`` (python-fire only turns ``False``
into a bool), and a non-empty string is truthy: every boolean knob of the bundle therefore goes through
:func:`as_bool`, which accepts the usual spellings and rejects anything else instead of guessing. Likewise
``--max_minutes null`` arrives as the string ``"null"``: the numeric knobs that ``null`` switches off go through
:func:`as_optional_float`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["as_bool", "as_optional_float"]

_TRUE = frozenset({"true", "yes", "on", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "f", "n", "none", "null", ""})
_NULL = frozenset({"none", "null", ""})


def as_bool(value: Any, name: str = "value") -> bool:
    """``True``/``False`` for bools, 0/1 and the strings true/false, yes/no, on/off, 1/0 (any case); ``None`` is False.

    Raises:
        ValueError: naming ``name`` for any other value (e.g. ``"treu"`` or 2), rather than treating it as true.

    Example::

        >>> as_bool("false", "resume"), as_bool("True"), as_bool(1)
        (False, True, True)
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be a boolean (true/false), got {value!r}.")


def as_optional_float(value: Any, name: str = "value") -> float | None:
    """``None`` for ``None`` and the strings null/none/"" (any case); otherwise the value as a float.

    Raises:
        ValueError: naming ``name`` for a value that is not a number (e.g. ``"abc"``, ``True``) or is NaN.

    Example::

        >>> as_optional_float("null", "max_minutes"), as_optional_float("2.5"), as_optional_float(3)
        (None, 2.5, 3.0)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in _NULL):
        return None
    try:
        if isinstance(value, bool):  # float(True) is 1.0: a boolean given for a number is a mistake, not 1
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if math.isnan(out):
        raise ValueError(f"{name} must be a number or null, got {value!r}.")
    return out
