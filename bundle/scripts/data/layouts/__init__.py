"""Dataset layouts: each finder turns one folder layout into :class:`Case` records behind one signature,
``finder(input_dir, options: LayoutOptions) -> Found``, registered by name in :data:`LAYOUTS`.

- ``msd`` / ``nnunet`` (:mod:`.msd`), ``acdc`` (:mod:`.acdc`), ``brats`` (:mod:`.brats`), ``slices`` (:mod:`.slices`).

A finder applies every option that concerns its layout (modality, class names, patient ids, ...) itself and
reports per-case problems in ``Found.problems``; checking the files and writing the datalist is
:func:`scripts.data.prepare.prepare_datalist`'s job. To add a layout, write a finder and add it to ``LAYOUTS``
(and a sub-command to the CLI in ``prepare.py``).
"""

from __future__ import annotations

from .._readers import DataPreparationError
from ._base import Case, Finder, Found, LayoutOptions, normalize_modality, parse_labels
from .acdc import ACDC_LABELS, find_acdc_cases
from .brats import BRATS_LABEL_MAP, BRATS_LABELS, BRATS_SEQUENCES, find_brats_cases
from .msd import find_msd_cases
from .slices import SLICE_PRESETS, find_slice_cases

__all__ = [
    "ACDC_LABELS",
    "BRATS_LABELS",
    "BRATS_LABEL_MAP",
    "BRATS_SEQUENCES",
    "LAYOUTS",
    "SLICE_PRESETS",
    "Case",
    "Finder",
    "Found",
    "LayoutOptions",
    "find_acdc_cases",
    "find_brats_cases",
    "find_msd_cases",
    "find_slice_cases",
    "get_finder",
    "normalize_modality",
    "parse_labels",
]

#: layout name -> finder (``nnunet`` is an alias of ``msd``)
LAYOUTS: dict[str, Finder] = {
    "msd": find_msd_cases,
    "nnunet": find_msd_cases,
    "acdc": find_acdc_cases,
    "brats": find_brats_cases,
    "slices": find_slice_cases,
}


def get_finder(layout: str) -> Finder:
    """The finder registered for ``layout`` (case-insensitive); ``DataPreparationError`` naming the choices."""
    layout = layout.lower()
    finder = LAYOUTS.get(layout)
    if finder is None:
        raise DataPreparationError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    return finder
