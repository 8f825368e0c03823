"""One unfolding stage of VL-DUN: a proximal-gradient step (paper 3.4, Fig. 2).

AMGDM (``amgdm.py``) is the gradient step on the data term, guided by the prior tokens; with known-operator data
consistency the exact k-space gradient step (``data_consistency.py``) follows it; then N MDPMM blocks (``mdpmm.py``)
are the proximal map. :func:`stage_layout` places the K stages on the U-shaped network's levels.
"""

from __future__ import annotations

import torch
from torch import nn

from .amgdm import AMGDM
from .data_consistency import DCGradientStep
from .mdpmm import MDPMM

__all__ = ["FULL_RESOLUTION_STAGES", "STAGE_NAMES", "UnfoldingStage", "stage_layout"]

STAGE_NAMES = ("enc1", "enc2", "enc3", "latent", "dec3", "dec2", "dec1", "refine")
#: stages at the image's own resolution: where the exact k-space data-term gradient is added (data_consistency)
FULL_RESOLUTION_STAGES = ("enc1", "dec1", "refine")


def stage_layout(
    dim: int, num_blocks: list[int], num_refinement_blocks: int, heads: list[int]
) -> list[tuple[str, int, int, int]]:
    """``(name, channels, MDPMM blocks, attention heads)`` of each stage, in forward order: the encoder levels C, 2C,
    4C, the latent 8C, the decoder mirroring them (dec1 at 2C after its concatenation), and the refinement stage at
    2C unless ``num_refinement_blocks`` is 0."""
    c1, c2, c3, c4 = dim, 2 * dim, 4 * dim, 8 * dim
    n1, n2, n3, n4 = num_blocks
    stage_dims = [c1, c2, c3, c4, c3, c2, c2, c2]
    stage_blocks = [n1, n2, n3, n4, n3, n2, n1, num_refinement_blocks]
    stage_heads = [heads[0], heads[1], heads[2], heads[3], heads[2], heads[1], heads[0], heads[0]]
    names = STAGE_NAMES if num_refinement_blocks > 0 else STAGE_NAMES[:-1]
    return list(zip(names, stage_dims, stage_blocks, stage_heads))


class UnfoldingStage(nn.Module):
    """One unfolding stage: AMGDM (gradient step) followed by N MDPMM blocks (proximal map)."""

    def __init__(
        self,
        dim: int,
        num_blocks: int,
        heads: int,
        prior_dim: int | None,
        kw_gd: dict,
        kw_prox: dict,
        data_consistency: bool = False,
    ):
        super().__init__()
        self.gd = AMGDM(dim, prior_dim=prior_dim, num_heads=heads, **kw_gd)
        # absent (not merely unused) without data consistency, so such a network's state dict is unchanged
        self.dc = DCGradientStep(dim, kw_gd.get("step_size_init", 1.0)) if data_consistency else None
        self.prox = nn.ModuleList([MDPMM(dim, **kw_prox) for _ in range(num_blocks)])

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, tokens: torch.Tensor | None, measured: dict | None = None
    ) -> torch.Tensor:
        x = self.gd(x, y, tokens)
        if self.dc is not None and measured is not None:
            x = self.dc(x, measured)
        for blk in self.prox:
            x = blk(x)
        return x
