"""Bidirectional Mamba layer for 2D feature maps (Vim "v2" bidirectionality, Mamba-1 blocks).

The map is flattened row-major into a sequence of L = H * W tokens. One shared ``in_proj`` gives (x, z); the
forward branch runs causal depthwise conv1d -> SiLU -> x_proj/dt_proj -> selective scan on the sequence, the
backward branch does the same on the reversed sequence with its own conv1d, x_proj, dt_proj, A_log and D; the
two outputs are summed (the backward one flipped back), gated by SiLU(z) and projected back by ``out_proj``.
The fast path computes the backward branch without flipping anything (anti-causal conv, reverse scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .selective_scan import canonical_backend, resolve_backend, selective_scan
from .selective_scan_numba import causal_conv1d_silu_numba

__all__ = ["BiMamba2D", "MambaConfig"]


@dataclass(frozen=True)
class MambaConfig:
    """Settings of every :class:`BiMamba2D` layer of a network, passed as one group (AMGDM, MDPMM, VLDUN).

    Args:
        d_state: SSM state size N.
        d_conv: kernel of the causal depthwise conv1d.
        expand: inner width E = int(expand * C).
        dt_rank: rank R of the delta projection; ``"auto"`` = ceil(C / 16).
        backend: selective-scan backend, ``"auto"`` | ``"numba"`` | ``"chunked"`` | ``"mamba_ssm"`` |
            ``"reference"`` (see :func:`scripts.networks.selective_scan.resolve_backend`; ``"torch"`` is the old
            name of ``"chunked"``).
        chunk_size: chunk length of the pure-PyTorch scan (None: its measured default).

    Example::

        >>> MambaConfig(d_state=8, expand=1.0, backend="chunked")
        MambaConfig(d_state=8, d_conv=4, expand=1.0, dt_rank='auto', backend='chunked', chunk_size=None)
    """

    d_state: int = 16
    d_conv: int = 4
    expand: float = 2.0
    dt_rank: int | str = "auto"
    backend: str = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.d_state < 1 or self.d_conv < 1 or self.expand <= 0:
            raise ValueError(f"d_state and d_conv must be >= 1 and expand > 0, got {self}.")
        if self.dt_rank != "auto" and int(self.dt_rank) < 1:
            raise ValueError(f"dt_rank must be 'auto' or >= 1, got {self.dt_rank!r}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be None or >= 1, got {self.chunk_size}.")


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
        chunk_size: int | None = None,
    ):
        super().__init__()
        self.d_inner, self.d_state, self.dt_rank, self.chunk_size = d_inner, d_state, dt_rank, chunk_size
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

    def forward(self, x: torch.Tensor, z: torch.Tensor | None, backend: str, reverse: bool = False) -> torch.Tensor:
        """x, z: (B, E, L) -> (B, E, L) = scan(...) (gated by silu(z) if z is given), on a resolved ``backend``.

        ``reverse=True`` is this branch applied to the reversed sequence, with the result reversed back, computed
        without flipping anything: the causal conv of the reversed sequence is the anti-causal conv with the
        kernel flipped, and the scan runs backwards.
        """
        length, k = x.shape[-1], self.conv1d.kernel_size[0]
        if backend == "numba":  # conv + SiLU fused on the CPU (3x less time than torch's depthwise conv1d)
            x = causal_conv1d_silu_numba(x, self.conv1d.weight[:, 0], self.conv1d.bias, reverse=reverse)
        elif reverse:
            w = self.conv1d.weight.flip(-1)
            x = F.silu(F.conv1d(x, w, self.conv1d.bias, padding=k - 1, groups=self.d_inner)[..., k - 1 :])
        else:  # causal: pad k - 1 on both sides, keep the first L
            x = F.silu(self.conv1d(x)[..., :length])
        x_dbl = torch.matmul(self.x_proj.weight, x)  # (B, R + 2N, L)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
        dt = torch.matmul(self.dt_proj.weight, dt)  # (B, E, L); its bias goes in as delta_bias
        pdt = torch.promote_types(x.dtype, torch.float32)  # A, D, bias in float32 (float64 stays float64)
        A = -torch.exp(self.A_log.to(pdt))
        return selective_scan(
            x,
            dt,
            A,
            b,
            c,
            D=self.D.to(pdt),
            z=z,
            delta_bias=self.dt_proj.bias.to(pdt),
            delta_softplus=True,
            reverse=reverse,
            backend=backend,
            chunk_size=self.chunk_size,
        )


class BiMamba2D(nn.Module):
    """Bidirectional Mamba-1 layer on (B, C, H, W) feature maps: (B, C, H, W) -> (B, C, H, W).

    Args:
        dim: channels C.
        config: the layer's settings (:class:`MambaConfig`; default ``MambaConfig()``).

    Shapes: x (B, C, H, W) is flattened row-major to L = H * W tokens; in_proj C -> 2E gives x, z (B, E, L);
    each branch gives (B, E, L); out_proj E -> C; reshaped back to (B, C, H, W). Any H, W >= 1.

    Example::

        >>> layer = BiMamba2D(48, MambaConfig(d_state=8))
        >>> y = layer(torch.randn(2, 48, 17, 23))   # (2, 48, 17, 23)

    Two paths side by side: :meth:`forward` (chunked pure-PyTorch scan or the mamba_ssm CUDA kernel, the scan
    gated by z inside the kernel) and :meth:`forward_reference` (the same maths with the sequential scan and the
    gate written out), which the tests compare.
    """

    def __init__(self, dim: int, config: MambaConfig | None = None) -> None:
        super().__init__()
        cfg = MambaConfig() if config is None else config
        if canonical_backend(cfg.backend) == "numba":  # unknown names and a missing numba fail here, not in forward
            resolve_backend(cfg.backend, "cpu")  # numba missing: say so when the network is built
        self.config = cfg
        self.dim, self.d_state, self.d_conv, self.expand = dim, cfg.d_state, cfg.d_conv, cfg.expand
        self.d_inner = int(cfg.expand * dim)
        self.dt_rank = math.ceil(dim / 16) if cfg.dt_rank == "auto" else int(cfg.dt_rank)
        self.backend, self.chunk_size = cfg.backend, cfg.chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.d_inner, bias=False)
        # the two directions have their own parameters
        self.fwd = _ScanBranch(self.d_inner, cfg.d_state, cfg.d_conv, self.dt_rank, chunk_size=cfg.chunk_size)
        self.bwd = _ScanBranch(self.d_inner, cfg.d_state, cfg.d_conv, self.dt_rank, chunk_size=cfg.chunk_size)
        self.out_proj = nn.Linear(self.d_inner, dim, bias=False)

    def _in(self, x: torch.Tensor):
        b, c, h, w = x.shape
        if c != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {c}")
        # row-major tokens (B, C, L): a view for contiguous and for channels-last maps. x and z come from the two
        # halves of in_proj as separate products, so that each is a contiguous (B, E, L) for the scan.
        tokens = x.reshape(b, c, h * w)
        wx, wz = self.in_proj.weight.chunk(2, dim=0)
        return torch.matmul(wx, tokens), torch.matmul(wz, tokens)

    def _out(self, y: torch.Tensor, shape) -> torch.Tensor:
        # (B, E, L) -> (B, C, L) -> (B, C, H, W) in channels-last memory, the layout of the maps around it. The one
        # copy is of the C-channel result; projecting to (B, L, C) directly would hand the scans' backward a
        # transposed gradient to copy, E = 2C channels, once per direction.
        b, c, h, w = shape
        y = torch.matmul(self.out_proj.weight, y).transpose(1, 2).contiguous()
        return y.view(b, h, w, c).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, z = self._in(x)
        # each branch gates by silu(z) inside the scan; the backward branch scans the same tensors in reverse
        backend = resolve_backend(self.backend, x.device)
        y = self.fwd(xs, z, backend) + self.bwd(xs, z, backend, reverse=True)
        return self._out(y, x.shape)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Readable path: sequential scan, y = (y_f + flip(y_b)) * silu(z). Slow; for tests."""
        xs, z = self._in(x)
        y_f = self.fwd(xs, None, "reference")  # the sequential loop over time
        y_b = self.bwd(xs.flip(-1), None, "reference")
        y = (y_f + y_b.flip(-1)) * F.silu(z)
        return self._out(y, x.shape)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"d_inner={self.d_inner}, dt_rank={self.dt_rank}, backend={self.backend!r}"
        )
