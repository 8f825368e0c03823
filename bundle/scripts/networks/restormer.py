"""Restormer building blocks used by VL-DUN: layer norms, GDFN, Downsample and Upsample.

These follow the definitions of Restormer (Zamir et al., CVPR 2022; see ``architecture.md`` A3), which VLU-Net,
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
        mu = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight + self.bias


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
        # (B, C, H, W) -> (B, H, W, C) -> norm over C -> back; same numbers as Restormer's (B, HW, C) reshape.
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
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
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
