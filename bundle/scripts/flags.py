"""Boolean config values given on the command line.

``python -m monai.bundle run ... --resume false`` passes the *string* ``"false"`` (python-fire only turns ``False``
into a bool), and a non-empty string is truthy: every boolean knob of the bundle therefore goes through
:func:`as_bool`, which accepts the usual spellings and rejects anything else instead of guessing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]

_TRUE = frozenset({"true", "yes", "on", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "f", "n", "none", "null", ""})


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
