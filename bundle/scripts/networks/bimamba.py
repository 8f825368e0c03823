"""Bidirectional Mamba layer for 2D feature maps (Vim "v2" bidirectionality, Mamba-1 blocks).

The map is flattened row-major into a sequence of L = H * W tokens. One shared ``in_proj`` gives (x, z); the
forward branch runs causal depthwise conv1d -> SiLU -> x_proj/dt_proj -> selective scan on the sequence, the
backward branch does the same on the reversed sequence with its own conv1d, x_proj, dt_proj, A_log and D; the
two outputs are summed (the backward one flipped back), gated by SiLU(z) and projected back by ``out_proj``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .selective_scan import selective_scan, selective_scan_sequential

__all__ = ["BiMamba2D"]


class _ScanBranch(nn.Module):
    """The per-direction part of a Mamba-1 block: conv1d, x_proj, dt_proj, A_log, D (standard Mamba init)."""

    def __init__(
        self,
        d_inner: int,
        d_state: int,
        d_conv: int,
        dt_rank: int,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        # dt_proj: weight ~ U(-r^-1/2, r^-1/2); bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        std = dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True
        # S4D-real init: A = -(1..N) for every channel
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(d_inner))
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor, z: torch.Tensor | None, scan) -> torch.Tensor:
        """x, z: (B, E, L) -> (B, E, L) = scan(...) (gated by silu(z) if z is given)."""
        length = x.shape[-1]
        x = F.silu(self.conv1d(x)[..., :length])  # causal: pad d_conv - 1 on both sides, keep the first L
        x_dbl = torch.matmul(self.x_proj.weight, x)  # (B, R + 2N, L)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = torch.matmul(self.dt_proj.weight, dt)  # (B, E, L); its bias goes in as delta_bias
        pdt = torch.promote_types(x.dtype, torch.float32)  # A, D, bias in float32 (float64 stays float64)
        A = -torch.exp(self.A_log.to(pdt))
        return scan(
            x,
            dt,
            A,
            b,
            c,
            D=self.D.to(pdt),
            z=z,
            delta_bias=self.dt_proj.bias.to(pdt),
            delta_softplus=True,
        )


class BiMamba2D(nn.Module):
    """Bidirectional Mamba-1 layer on (B, C, H, W) feature maps: (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: channels C.
        d_state: SSM state size N.
        d_conv: kernel of the causal depthwise conv1d.
        expand: inner width E = int(expand * C).
        dt_rank: rank R of the delta projection; ``"auto"`` = ceil(C / 16).
        backend: selective-scan backend, ``"auto"`` | ``"torch"`` | ``"mamba_ssm"``
            (see :func:`scripts.networks.selective_scan.selective_scan`).
        chunk_size: chunk length of the pure-PyTorch scan (None: its measured default).

    Shapes: x (B, C, H, W) is flattened row-major to L = H * W tokens; in_proj C -> 2E gives x, z (B, E, L);
    each branch gives (B, E, L); out_proj E -> C; reshaped back to (B, C, H, W). Any H, W >= 1.

    Example::

        >>> layer = BiMamba2D(48)
        >>> y = layer(torch.randn(2, 48, 17, 23))   # (2, 48, 17, 23)

    Two paths side by side: :meth:`forward` (chunked pure-PyTorch scan or the mamba_ssm CUDA kernel, the scan
    gated by z inside the kernel) and :meth:`forward_reference` (the same maths with the sequential scan and the
    gate written out), which the tests compare.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2.0,
        dt_rank: int | str = "auto",
        backend: str = "auto",
        chunk_size: int | None = None,
    ):
        super().__init__()
        if backend not in ("auto", "torch", "mamba_ssm"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'mamba_ssm', got {backend!r}")
        self.dim, self.d_state, self.d_conv, self.expand = dim, d_state, d_conv, expand
        self.d_inner = int(expand * dim)
        self.dt_rank = math.ceil(dim / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend, self.chunk_size = backend, chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        self.fwd = _ScanBranch(self.d_inner, d_state, d_conv, self.dt_rank)  # forward direction
        self.bwd = _ScanBranch(self.d_inner, d_state, d_conv, self.dt_rank)  # reversed direction, own parameters
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

    def _scan(self, *args, **kwargs):
        return selective_scan(*args, backend=self.backend, chunk_size=self.chunk_size, **kwargs)

    def _in(self, x: torch.Tensor):
        b, c, h, w = x.shape
        if c != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {c}")
        xz = torch.matmul(self.in_proj.weight, x.reshape(b, c, h * w))  # (B, 2E, L), row-major tokens
        return xz.chunk(2, dim=1)

    def _out(self, y: torch.Tensor, shape) -> torch.Tensor:
        return torch.matmul(self.out_proj.weight, y).reshape(shape)  # (B, C, L) -> (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, z = self._in(x)
        # each branch gates by silu(z) inside the scan; flip(silu(flip z) * y_b) = silu(z) * flip(y_b)
        y = self.fwd(xs, z, self._scan) + self.bwd(xs.flip(-1), z.flip(-1), self._scan).flip(-1)
        return self._out(y, x.shape)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Readable path: sequential scan, y = (y_f + flip(y_b)) * silu(z). Slow; for tests."""
        xs, z = self._in(x)
        y_f = self.fwd(xs, None, selective_scan_sequential)
        y_b = self.bwd(xs.flip(-1), None, selective_scan_sequential)
        y = (y_f + y_b.flip(-1)) * F.silu(z)
        return self._out(y, x.shape)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"d_inner={self.d_inner}, dt_rank={self.dt_rank}, backend={self.backend!r}"
        )
