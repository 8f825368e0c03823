"""AMGDM: the dual-prior guided gradient-descent module of one unfolding stage (paper 3.4.2, appendix E.1).

One stage of proximal gradient descent on ``1/2 ||y - Phi x||^2`` needs ``x - rho * Phi^T (Phi x - y)``. In feature
space (paper section 3.4.2, appendix E.1):

    q      = DWConv3x3(Conv1x1(LN(x)))                      image features as queries, (B, heads, HW, c)
    k, v   = Linear_k(P), Linear_v(P)                       prior tokens P (B, T, D) as keys/values, (B, heads, T, c)
    Phi x  = x + Conv1x1(softmax(q k^T / sqrt(c)) v)        Eq. 10; the residual keeps x's content
    r      = Phi x - y_l                                    data-fidelity residual against the measurement embedding
    x_new  = x - rho * BiMamba2D(LN(r))                     Phi^T as a bidirectional Mamba layer, rho learnable

``rho`` is one scalar per stage, initialised to 1 (as VLU-Net's gradient step).

**Without the CLIP prior** (``prior_dim=None``, the "w/o CLIP" ablation) there are no prior tokens. The module then
derives its keys and values from the image itself: ``LN(x)`` is average-pooled to a ``self_token_grid`` x
``self_token_grid`` grid (default 2 x 2 = 4 tokens of C channels) which serve directly as keys and values (no
projection). That keeps the attention form (every pixel attends to a handful of global summary tokens, a cheap
self-attention, like VLU-Net's fallback when no CLIP vector is given) and removes the two ``Linear(D -> C)`` prior
projections, so the parameter count always drops (by ``2*D*C`` per stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bimamba import BiMamba2D, MambaConfig
from .restormer import LayerNorm2d

__all__ = ["AMGDM", "PriorCrossAttention"]


class PriorCrossAttention(nn.Module):
    """Cross-attention of every pixel (query) over a few tokens (keys/values): returns the (B, C, H, W) update.

    Args:
        dim: channels C of the feature map.
        token_dim: channels D of the tokens, or ``None``: the tokens already have C channels and are used as keys
            and values without projection (self-derived tokens).
        num_heads: attention heads (C must be divisible by it).
        bias: bias of the convolutions and linear maps.
    """

    def __init__(self, dim: int, token_dim: int | None, num_heads: int = 1, bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dw = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        if token_dim is None:
            self.k: nn.Module = nn.Identity()
            self.v: nn.Module = nn.Identity()
        else:
            self.k = nn.Linear(token_dim, dim, bias=bias)
            self.v = nn.Linear(token_dim, dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, return_attention: bool = False):
        b, c, h, w = x.shape
        nh = self.num_heads
        q = self.q_dw(self.q(x)).reshape(b, nh, c // nh, h * w)  # (B, h, c, HW)
        k = self.k(tokens).reshape(b, -1, nh, c // nh).permute(0, 2, 1, 3)  # (B, h, T, c)
        v = self.v(tokens).reshape(b, -1, nh, c // nh).permute(0, 2, 3, 1)  # (B, h, c, T)
        attn = torch.matmul(k, q) * (c // nh) ** -0.5  # (B, h, T, HW): scores of each pixel over T tokens
        attn = attn.softmax(dim=2)
        out = torch.matmul(v, attn).reshape(b, c, h, w)  # (B, h, c, HW) -> (B, C, H, W)
        out = self.project_out(out)
        return (out, attn.reshape(b, nh, -1, h, w)) if return_attention else out


class AMGDM(nn.Module):
    """Attention-Mamba gradient-descent module (one per unfolding stage).

    Args:
        dim: channels C of the features at this level.
        prior_dim: dimension D of the CLIP prior tokens, or ``None`` for no CLIP prior (self-derived tokens).
        num_heads: heads of the cross-attention.
        bias: bias of the attention's convolutions/linear maps (Restormer default ``False``).
        layernorm_type: ``"WithBias"`` or ``"BiasFree"``.
        step_size_init: initial value of the learnable step size rho.
        self_token_grid: grid side of the self-derived tokens when ``prior_dim`` is None.
        mamba: settings of the :class:`BiMamba2D` layer (:class:`MambaConfig`; default ``MambaConfig()``).

    Forward: ``x`` (B, C, H, W) features, ``y`` (B, C, H, W) measurement embedding at this level, ``tokens``
    (B, T, D) prior tokens (required iff ``prior_dim`` is not None). Returns the updated (B, C, H, W).
    """

    def __init__(
        self,
        dim: int,
        prior_dim: int | None = 512,
        num_heads: int = 1,
        bias: bool = False,
        layernorm_type: str = "WithBias",
        step_size_init: float = 1.0,
        self_token_grid: int = 2,
        mamba: MambaConfig | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.prior_dim = prior_dim
        self.self_token_grid = int(self_token_grid)
        self.norm_x = LayerNorm2d(dim, layernorm_type)
        self.attn = PriorCrossAttention(dim, prior_dim, num_heads, bias)
        self.norm_r = LayerNorm2d(dim, layernorm_type)
        self.back_projection = BiMamba2D(dim, mamba)
        self.step_size = nn.Parameter(torch.tensor(float(step_size_init)))

    def self_tokens(self, u: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, g*g, C): average-pooled summary tokens (used without a CLIP prior)."""
        g = self.self_token_grid
        return F.adaptive_avg_pool2d(u, g).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"features {tuple(x.shape)} and measurement embedding {tuple(y.shape)} differ.")
        u = self.norm_x(x)
        if self.prior_dim is None:
            tokens = self.self_tokens(u)
        elif tokens is None:
            raise ValueError("this AMGDM was built with a CLIP prior (prior_dim set) and needs `tokens`.")
        phi_x = x + self.attn(u, tokens)  # Phi x: operator estimate guided by the priors
        r = phi_x - y  # residual Phi x - y
        return x - self.step_size * self.back_projection(self.norm_r(r))  # x - rho Phi^T (Phi x - y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, prior_dim={self.prior_dim}"
