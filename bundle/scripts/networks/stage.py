"""One unfolding stage of VL-DUN: a proximal-gradient step (paper 3.4, Fig. 2).

AMGDM (``amgdm.py``) is the gradient step on the data term, guided by the prior tokens; with known-operator data
consistency the exact k-space gradient step (``data_consistency.py``) follows it; then N MDPMM blocks (``mdpmm.py``)
are the proximal map.
"""

from __future__ import annotations

import torch
from torch import nn

from .amgdm import AMGDM
from .data_consistency import DCGradientStep
from .mdpmm import MDPMM

__all__ = ["UnfoldingStage"]


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
