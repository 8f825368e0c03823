"""Moved: this module was split into :mod:`scripts.workflows.slices` (slice sampling, :class:`FixedSeedd`) and
:mod:`scripts.workflows.outputs` (:class:`SplitPredictiond`, the intensity map transforms).

The old names still resolve, so configs with ``"_target_": "scripts.workflows.transforms.SampleSlicesd"`` keep
working, with a ``FutureWarning`` naming the new path. The old ``sample_seed(data, base_seed, ...)`` is gone: use
:class:`scripts.workflows.slices.FixedSeedd` or :func:`scripts.transforms.sample_seed`.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: old name -> module of this package that holds it now
MOVED = {
    "RandSampleSlicesd": "slices",
    "SampleSlicesd": "slices",
    "FixedSeedd": "slices",
    "SplitPredictiond": "outputs",
    "RecordIntensityMapd": "outputs",
    "InverseIntensityMapd": "outputs",
}

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name in MOVED:
        new = f"{__package__}.{MOVED[name]}.{name}"
        warnings.warn(f"{__name__}.{name} has moved to {new}; use that path.", FutureWarning, stacklevel=2)
        return getattr(importlib.import_module(f".{MOVED[name]}", __package__), name)
    if name == "sample_seed":
        raise AttributeError(
            "scripts.workflows.transforms.sample_seed was removed: use scripts.transforms.sample_seed(seed, sample_id) "
            "or scripts.workflows.slices.FixedSeedd."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
