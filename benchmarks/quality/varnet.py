"""The known-operator baseline of the quality benchmark: a single-coil VarNet-style cascade (Sriram et al. 2020)
built from MONAI's reconstruction blocks.

Each cascade is MONAI's ``VarNetBlock`` (soft data consistency with a learned weight + a ``ComplexUnet``
refinement in the image domain); with one coil and unit sensitivity maps MONAI's sensitivity expand/reduce are
the plain centred orthonormal FFT / inverse FFT, the same convention as the bundle's k-space transforms, so the
cascade sees exactly the measurements VL-DUN's data consistency sees. No coil-sensitivity model (single coil).
The output is returned as the bundle's dict (``restored`` = magnitude of the final image), so the same
``VLDUNLoss`` and trainer train it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["KspaceVarNet"]


class KspaceVarNet(nn.Module):
    """Single-coil VarNet: ``num_cascades`` MONAI ``VarNetBlock`` s over the measured k-space.

    Args:
        num_cascades: number of unrolled blocks.
        features: the six ``BasicUNet`` widths of each block's ``ComplexUnet``.

    Forward: ``x`` (B, 1, H, W) zero-filled magnitude (unused but for its shape: the cascade starts from the
    measured k-space), ``kspace`` (B, 1, H, W) complex, ``mask`` (B, 1, H, W). Returns ``{"restored": (B, 1, H, W)}``.
    """

    def __init__(self, num_cascades: int = 4, features: Sequence[int] = (16, 16, 32, 64, 128, 16)) -> None:
        super().__init__()
        from monai.apps.reconstruction.networks.blocks.varnetblock import VarNetBlock
        from monai.apps.reconstruction.networks.nets.complex_unet import ComplexUnet

        self.cascades = nn.ModuleList(
            [VarNetBlock(ComplexUnet(spatial_dims=2, features=tuple(features))) for _ in range(int(num_cascades))]
        )

    def forward(self, x: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        from monai.apps.reconstruction.complex_utils import complex_abs_t
        from monai.networks.blocks.fft_utils_t import ifftn_centered_t

        from scripts.networks.data_consistency import check_measurements, single_coil_cascades

        kspace, mask = check_measurements(kspace, mask, x)
        # the cascade starts from the measurements themselves, in MONAI's (B, 1, H, W, 2) real/imaginary layout
        k = single_coil_cascades(self.cascades, torch.view_as_real(kspace.to(torch.complex64)), kspace, mask)
        image = ifftn_centered_t(k, spatial_dims=2, is_complex=True)
        return {"restored": complex_abs_t(image)}
