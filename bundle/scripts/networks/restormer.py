"""Restormer building blocks used by VL-DUN: layer norms, GDFN, Downsample and Upsample.

These follow the definitions of Restormer (Zamir et al., CVPR 2022, section 3), which VLU-Net,
PromptIR and AMIR reuse unchanged:

- the layer norms normalise each pixel over its channels. ``"WithBias"`` is ``(x - mu) / sqrt(var + 1e-5) * w + b``;
  ``"BiasFree"`` is ``x / sqrt(var + 1e-5) * w`` (the variance is still the centred one, the mean is not removed);
- GDFN (gated-dconv feed-forward network): Conv1x1 C -> 2h, depthwise Conv3x3 on 2h, split into (x1, x2),
  ``GELU(x1) * x2``, Conv1x1 h -> C, with ``h = int(C * ffn_expansion_factor)``;
- Downsample: Conv3x3 C -> C/2 (no bias) then PixelUnshuffle(2), so (C, H, W) -> (2C, H/2, W/2);
- Upsample: Conv3x3 C -> 2C (no bias) then PixelShuffle(2), so (C, H, W) -> (C/2, 2H, 2W).

The code is written from that description (no code was copied).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BiasFreeLayerNorm", "WithBiasLayerNorm", "LayerNorm2d", "GDFN", "Downsample", "Upsample"]

LAYERNORM_TYPES = ("WithBias", "BiasFree")


class BiasFreeLayerNorm(nn.Module):
    """Restormer's "BiasFree" norm over the last dimension: ``x / sqrt(var(x) + eps) * weight``."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(int(normalized_shape)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + self.eps) * self.weight


class WithBiasLayerNorm(nn.Module):
    """Restormer's "WithBias" norm over the last dimension: ``(x - mean) / sqrt(var + eps) * weight + bias``."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(int(normalized_shape)))
        self.bias = nn.Parameter(torch.zeros(int(normalized_shape)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the same formula as one fused kernel (4x faster than the mean/var/divide chain, forward + backward)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class LayerNorm2d(nn.Module):
    """Per-pixel layer norm of a (B, C, H, W) map over C, as Restormer's ``LayerNorm(dim, LayerNorm_type)``.

    Args:
        dim: number of channels C.
        layernorm_type: ``"WithBias"`` (default) or ``"BiasFree"``.
    """

    def __init__(self, dim: int, layernorm_type: str = "WithBias") -> None:
        super().__init__()
        if layernorm_type == "BiasFree":
            self.body: nn.Module = BiasFreeLayerNorm(dim)
        elif layernorm_type == "WithBias":
            self.body = WithBiasLayerNorm(dim)
        else:
            raise ValueError(f"layernorm_type must be one of {LAYERNORM_TYPES}, got {layernorm_type!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, H, W, C) -> norm over C -> back; same numbers as Restormer's (B, HW, C) reshape. On a
        # channels-last map (VL-DUN's layout) the permuted view is contiguous: no copy in or out.
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward Network of Restormer. Input and output (B, C, H, W).

    Parameters: ``3*C*h + 18*h`` without bias, ``h = int(C * ffn_expansion_factor)`` (20,574 at C = 48, f = 2.66).
    """

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.hidden_features = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the gate's two halves computed as separate convs with the halves of the weights (the same maths as
        # chunking one 2h-channel output): each half is a contiguous map, where chunks of a channels-last map are
        # strided and made GELU and the product ~1.3x slower (measured)
        h = self.hidden_features
        (wi1, wi2), (wd1, wd2) = self.project_in.weight.split(h), self.dwconv.weight.split(h)
        (bi1, bi2), (bd1, bd2) = (
            (None, None) if conv.bias is None else conv.bias.split(h) for conv in (self.project_in, self.dwconv)
        )
        x1 = F.conv2d(F.conv2d(x, wi1, bi1), wd1, bd1, padding=1, groups=h)
        x2 = F.conv2d(F.conv2d(x, wi2, bi2), wd2, bd2, padding=1, groups=h)
        return self.project_out(F.gelu(x1) * x2)


class Downsample(nn.Module):
    """Conv3x3 C -> C/2 then PixelUnshuffle(2): (B, C, H, W) -> (B, 2C, H/2, W/2). H, W must be even."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        if n_feat % 2:
            raise ValueError(f"Downsample needs an even channel count, got {n_feat}.")
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, stride=1, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Conv3x3 C -> 2C then PixelShuffle(2): (B, C, H, W) -> (B, C/2, 2H, 2W)."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, stride=1, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
