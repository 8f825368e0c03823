"""Class tables shared by the transforms, the CLIP prior and the losses.

Keeping the modality and degradation class lists in one module means a class id written by a transform is
interpreted the same way by the network's prompt bank and by the loss, whatever config is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Default modality classes (index = class id). The paper trains on M = 8 datasets; our demo and the shared
#: evaluation sets have two imaging modalities, so the default table is MRI/CT. Configs may pass their own list.
MODALITIES: tuple[str, ...] = ("MRI", "CT")

#: Degradation classes of the text prior. The first four are the paper's visual primitives (section 3.3.3,
#: appendix D); the last two are the undersampling families the bundle simulates (paper Eq. 5), added so that
#: the degradation that was actually applied during joint training has a class of its own.
DEGRADATION_TYPES: tuple[str, ...] = (
    "noise",
    "blur",
    "motion",
    "low_resolution",
    "cartesian_undersampling",
    "radial_undersampling",
)

#: One prompt per entry of DEGRADATION_TYPES, in the style of the paper's example prompt.
DEGRADATION_PROMPTS: tuple[str, ...] = (
    "Noisy medical image with severe grain",
    "Blurry medical image with smeared edges",
    "Medical image corrupted by patient motion ghosting",
    "Low resolution medical image lacking fine detail",
    "MRI with aliasing from Cartesian k-space undersampling",
    "CT with streak artifacts from sparse-view radial sampling",
)


def _index(name: str | int, table: Sequence[str], what: str) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        if 0 <= name < len(table):
            return name
        raise ValueError(f"{what} class id {name} is outside 0..{len(table) - 1} ({list(table)}).")
    key = str(name).strip().lower()
    for i, entry in enumerate(table):
        if entry.lower() == key:
            return i
    raise ValueError(f"unknown {what} {name!r}; expected one of {list(table)}.")


def modality_index(name: str | int, modalities: Sequence[str] = MODALITIES) -> int:
    """Class id of a modality given by name (case-insensitive) or id, e.g. ``modality_index("ct") == 1``."""
    return _index(name, modalities, "modality")


def degradation_index(name: str | int) -> int:
    """Class id of a degradation type given by name or id, e.g. ``degradation_index("radial_undersampling")``."""
    return _index(name, DEGRADATION_TYPES, "degradation")


def modalities_in(datalist: Sequence[Mapping[str, Any]], default: str | int, modalities: Sequence[str] = MODALITIES):
    """The modality names present in a datalist (items without a ``modality`` entry count as ``default``).

    The joint loss switches its modality and degradation terms off when the training data hold one class only.
    """
    found = {modalities[modality_index(item.get("modality", default), modalities)] for item in datalist}
    return sorted(found, key=list(modalities).index)
