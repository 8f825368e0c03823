"""The VL-DUN network and its parts.

- :class:`VLDUN` (``vldun.py``): the unfolded network; its presets (:data:`PRESETS`, :func:`preset_config`) are in
  ``presets.py``, one unfolding stage (:class:`UnfoldingStage`) in ``stage.py``.
- :class:`RecHead`, :class:`SegHead`, :class:`SegUNetHead` (``heads.py``): the restoration and segmentation heads.
- :class:`CLIPPrior` (``clip_prior.py``): open_clip visual encoder + modality classifier, cached text prompt bank,
  prior tokens. Importing this package registers the bundle's small open_clip configs.
- :class:`AMGDM` (``amgdm.py``): prior-guided gradient-descent module.
- :class:`MDPMM` (``mdpmm.py``): frequency-aware proximal module.
- :class:`DCGradientStep`, :class:`KspaceDataConsistency`, :class:`DCCascades` (``data_consistency.py``):
  known-operator k-space data consistency (exact gradient step, output projection, VarNet-style cascades) for when
  the mask is known.
- :class:`GDFN`, :class:`LayerNorm2d`, :class:`Downsample`, :class:`Upsample` (``restormer.py``).
- :class:`BiMamba2D` and its settings :class:`MambaConfig` (``bimamba.py``) and :func:`selective_scan`
  (``selective_scan.py``: the reference scan and the dispatcher; the chunked scan in ``selective_scan_chunked.py``,
  the fused numba scan in ``selective_scan_numba.py`` around the kernels of ``_numba_kernels.py``).
"""

from .amgdm import AMGDM, PriorCrossAttention
from .bimamba import BiMamba2D, MambaConfig
from .clip_prior import CLIP_CONFIG_DIR, CLIPPrior, load_state_dict_file, register_clip_configs
from .data_consistency import DCCascades, DCGradientStep, KspaceDataConsistency
from .heads import RecHead, SegHead, SegUNetHead
from .mdpmm import MDPMM, frequency_split
from .presets import DEFAULT_PRESET, PRESETS, preset_config
from .restormer import GDFN, BiasFreeLayerNorm, Downsample, LayerNorm2d, Upsample, WithBiasLayerNorm
from .selective_scan import selective_scan, selective_scan_chunked, selective_scan_sequential
from .stage import UnfoldingStage
from .vldun import STAGE_NAMES, VLDUN

__all__ = [
    "AMGDM",
    "BiMamba2D",
    "BiasFreeLayerNorm",
    "CLIPPrior",
    "CLIP_CONFIG_DIR",
    "DCCascades",
    "DCGradientStep",
    "DEFAULT_PRESET",
    "Downsample",
    "GDFN",
    "KspaceDataConsistency",
    "LayerNorm2d",
    "MDPMM",
    "MambaConfig",
    "PRESETS",
    "PriorCrossAttention",
    "RecHead",
    "SegHead",
    "SegUNetHead",
    "STAGE_NAMES",
    "UnfoldingStage",
    "Upsample",
    "VLDUN",
    "WithBiasLayerNorm",
    "frequency_split",
    "load_state_dict_file",
    "preset_config",
    "register_clip_configs",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
]
