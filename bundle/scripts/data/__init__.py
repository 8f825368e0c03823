"""Data for the VL-DUN bundle: the built-in demo phantoms and converters from real dataset layouts.

- :func:`ensure_demo_data` (``scripts.data.demo``): deterministic synthetic MRI-like and CT-like 3D phantoms
  (drawn by :func:`generate_phantom`, ``scripts.data.phantoms``), generated on first use into a cache folder, with
  a decathlon-style ``datalist.json``.
- :func:`prepare_datalist` (``scripts.data.prepare``): MSD / nnU-Net, ACDC, BraTS 2021 and 2D-slice folders to a
  MONAI datalist JSON with a patient-wise train/validation/test split. The layouts are finders with one signature
  in ``scripts.data.layouts`` (registry ``LAYOUTS``), the file checks are in ``scripts.data.checks``.
- ``scripts.data.datalist``: the patient-wise split and the datalist writer that both of the above use.

See ``bundle/docs/data.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports (PEP 562), so that ``python -m scripts.data.prepare`` / ``scripts.data.demo`` do not import the
# module twice (runpy warns when the package already imported the module it is about to run).
_EXPORTS = {
    "DEMO_LABELS": "phantoms",
    "DEMO_MODALITIES": "phantoms",
    "default_demo_root": "demo",
    "ensure_demo_data": "demo",
    "generate_phantom": "phantoms",
    "DataPreparationError": "prepare",
    "prepare_datalist": "prepare",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEMO_LABELS",
    "DEMO_MODALITIES",
    "DataPreparationError",
    "default_demo_root",
    "ensure_demo_data",
    "generate_phantom",
    "prepare_datalist",
]
