"""MDPMM: the frequency-aware proximal module (paper 3.4.3, Eq. 4, appendix E.2).

Frequency-decoupled block (default, ``freq_decouple=True``)::

    u    = LN(x)
    low  = Up(AvgPool_k(u))            x_low of Eq. 4: k x k average pooling (stride k), bilinear back to H x W
    high = u - low                     x_high of Eq. 4
    lo   = GDFN(low)                   low band: Restormer's gated-dconv FFN (stable anatomy)
    hi   = BiMamba2D(high)             high band: bidirectional Mamba (global context on textures vs noise)
    x    = x + Conv1x1(cat[lo, hi])    convolutional fusion (2C -> C, with bias), residual

``low_res_gdfn=True`` runs the GDFN on the pooled map and upsamples its output instead (about 1/k^2 of the GDFN
cost; not the default). Pooling uses ``ceil_mode`` and the upsampling goes back to the exact input size, so any
H x W works.

Non-decoupled variant (``freq_decouple=False``, the "w/o FD" ablation of Table 3): the same two operators applied to
the whole spectrum one after the other, as a standard Mamba block with a feed-forward network::

    x = x + BiMamba2D(LN1(x))
    x = x + GDFN(LN2(x))

There is no split and no fusion convolution (the parameter count drops by the fusion conv, 2C^2 + C, and gains a
LayerNorm, 2C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bimamba import BiMamba2D, MambaConfig
from .restormer import GDFN, LayerNorm2d

__all__ = ["MDPMM", "frequency_split"]


def frequency_split(u: torch.Tensor, pool_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 4: ``low = Up(AvgPool(u))``, ``high = u - low``; ``low + high == u`` exactly (up to rounding)."""
    pooled = F.avg_pool2d(u, pool_size, stride=pool_size, ceil_mode=True)
    low = F.interpolate(pooled, size=u.shape[-2:], mode="bilinear", align_corners=False)
    return low, u - low


class MDPMM(nn.Module):
    """Mamba-GDFN proximal map module. Input and output (B, C, H, W), any H, W.

    Args:
        dim: channels C.
        ffn_expansion_factor: GDFN hidden ratio (Restormer 2.66).
        bias: bias of the GDFN convolutions (Restormer ``False``).
        layernorm_type: ``"WithBias"`` or ``"BiasFree"``.
        freq_decouple: frequency-decoupled block (paper) or the non-decoupled ablation (see module docstring).
        pool_size: kernel and stride of the AvgPool of Eq. 4.
        low_res_gdfn: run the low-band GDFN on the pooled map (cheaper; default ``False``).
        mamba: settings of the :class:`BiMamba2D` layer (:class:`MambaConfig`; default ``MambaConfig()``).
    """

    def __init__(
        self,
        dim: int,
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_type: str = "WithBias",
        freq_decouple: bool = True,
        pool_size: int = 2,
        low_res_gdfn: bool = False,
        mamba: MambaConfig | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.freq_decouple = bool(freq_decouple)
        self.pool_size = int(pool_size)
        self.low_res_gdfn = bool(low_res_gdfn)
        self.norm = LayerNorm2d(dim, layernorm_type)
        self.gdfn = GDFN(dim, ffn_expansion_factor, bias)
        self.mamba = BiMamba2D(dim, mamba)
        if self.freq_decouple:
            self.fuse = nn.Conv2d(2 * dim, dim, kernel_size=1, bias=True)
        else:
            self.norm2 = LayerNorm2d(dim, layernorm_type)

    def forward(self, x: torch.Tensor, return_bands: bool = False):
        """Returns the updated map; with ``return_bands`` also ``(lo, hi)``, the outputs of the two branches."""
        u = self.norm(x)
        if not self.freq_decouple:
            hi = self.mamba(u)
            x = x + hi
            lo = self.gdfn(self.norm2(x))
            x = x + lo
            return (x, (lo, hi)) if return_bands else x
        if self.low_res_gdfn:
            pooled = F.avg_pool2d(u, self.pool_size, stride=self.pool_size, ceil_mode=True)
            low = F.interpolate(pooled, size=u.shape[-2:], mode="bilinear", align_corners=False)
            lo = F.interpolate(self.gdfn(pooled), size=u.shape[-2:], mode="bilinear", align_corners=False)
        else:
            low, _ = frequency_split(u, self.pool_size)
            lo = self.gdfn(low)
        hi = self.mamba(u - low)
        # fuse(cat[lo, hi]) as two products with the halves of its weight: no concatenated copy
        w_lo, w_hi = self.fuse.weight.split(self.dim, dim=1)
        x = x + F.conv2d(lo, w_lo, self.fuse.bias) + F.conv2d(hi, w_hi)
        return (x, (lo, hi)) if return_bands else x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, freq_decouple={self.freq_decouple}, pool_size={self.pool_size}"
