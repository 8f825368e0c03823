"""Degradation and intensity transforms of the VL-DUN bundle (MONAI array + dictionary transforms).

- ``kspace_masks``: Cartesian (MRI) and radial (sparse-view CT) k-space masks.
- ``kspace``: simulated k-space undersampling (paper Eq. 5): FFT helpers and the array transform
  :class:`KspaceUndersample` (its ``undersample`` returns a :class:`KspaceRecord`).
- ``kspace_dict``: the dictionary transforms :class:`KspaceUndersampled` and :class:`ModalityKspaceUndersampled`.
- ``degradations``: the four primitives of the CLIP degradation prior (noise, blur, motion, low resolution).
- ``intensity``: per-modality normalisation to [0, 1] and modality names to class ids.

Class ids and prompt texts come from :mod:`scripts.prompts`. See ``bundle/docs/kspace.md``.
"""

from scripts.transforms.degradations import (
    PRIMITIVES,
    RandPrimitiveDegradation,
    RandPrimitiveDegradationd,
    motion_kspace,
    truncate_kspace,
)
from scripts.transforms.intensity import (
    NORMALIZATION_MODES,
    ModalityNormalized,
    ModalityToIndexd,
    RestoreInputUnitsd,
    normalize_intensity,
)
from scripts.transforms.kspace import KspaceRecord, KspaceUndersample, fft2c, ifft2c, sample_seed
from scripts.transforms.kspace_dict import KspaceUndersampled, ModalityKspaceUndersampled
from scripts.transforms.kspace_masks import GOLDEN_ANGLE_DEG, CartesianKspaceMask, RadialKspaceMask

__all__ = [
    "GOLDEN_ANGLE_DEG",
    "NORMALIZATION_MODES",
    "PRIMITIVES",
    "CartesianKspaceMask",
    "KspaceRecord",
    "KspaceUndersample",
    "KspaceUndersampled",
    "ModalityKspaceUndersampled",
    "ModalityNormalized",
    "ModalityToIndexd",
    "RestoreInputUnitsd",
    "RadialKspaceMask",
    "RandPrimitiveDegradation",
    "RandPrimitiveDegradationd",
    "fft2c",
    "ifft2c",
    "motion_kspace",
    "normalize_intensity",
    "sample_seed",
    "truncate_kspace",
]
