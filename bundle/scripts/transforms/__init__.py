"""Degradation and intensity transforms of the VL-DUN bundle (MONAI array + dictionary transforms).

- ``kspace``: simulated k-space undersampling (paper Eq. 5): Cartesian (MRI) and radial (sparse-view CT) masks,
  :class:`KspaceUndersample` / :class:`KspaceUndersampled` and :class:`ModalityKspaceUndersampled`.
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
from scripts.transforms.kspace import (
    GOLDEN_ANGLE_DEG,
    CartesianKspaceMask,
    KspaceUndersample,
    KspaceUndersampled,
    ModalityKspaceUndersampled,
    RadialKspaceMask,
    fft2c,
    ifft2c,
    sample_seed,
)

__all__ = [
    "GOLDEN_ANGLE_DEG",
    "NORMALIZATION_MODES",
    "PRIMITIVES",
    "CartesianKspaceMask",
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
