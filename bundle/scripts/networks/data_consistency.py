"""Known-operator data consistency for VL-DUN: the exact k-space physics ``Phi = M F`` when the mask is known.

The paper's AMGDM estimates the degradation operator with cross-attention because its degradations are unknown
(section 3.4.2). For undersampled MRI, and for sparse-view CT simulated as radial k-space sampling, the operator is
known whenever the mask is: ``y = M ⊙ F(x) + n`` with ``F`` the orthonormal centred 2-D FFT (the convention of
``scripts.transforms.kspace``). Unrolled networks that use it (VarNet, MoDL, DC-CNN) gain several dB over
image-domain networks; this module gives VL-DUN the same two ingredients:

- :class:`DCGradientStep`: inside an image-resolution unfolding stage, the exact gradient of the data term,
  ``g = F^H(M ⊙ F(x_k) - y)``, of the stage's current image estimate ``x_k`` (read out of the features by a 1x1 conv
  on top of the zero-filled image), injected back into the features with a learned step ``rho``
  (``f <- f - rho * embed(g)``): a soft, learned-weight DC as in MONAI's ``VarNetBlock``.
- :class:`KspaceDataConsistency`: the projection that ends the rec head. ``"hard"`` replaces the measured samples
  of the output's k-space by ``y`` (``(1 - M) ⊙ F(x) + M ⊙ y``, exact to float32 precision); ``"soft"`` moves them
  towards ``y`` by a learned weight (``F(x) - lambda * M ⊙ (F(x) - y)``, ``lambda`` initialised to 1 = hard).
- :class:`DCCascades`: optional VarNet-style cascades after the projection (MONAI ``VarNetBlock`` s with a small
  ``BasicUNet`` on the complex image). The stages see only the magnitude input, and their two DC steps act on
  features; a few explicit image-domain rounds of "refine, then move back to the measurements" are what made the
  VarNet baseline gain ~2 dB at 8x where the single projection gained ~0.3 (``bundle/docs/workflows.md``).

**Complex images.** A k-space with unmeasured samples is not Hermitian, so the consistent image is complex even
when the object is real. The network therefore works on the complex image where exactness needs it: the stages'
image estimates are the complex zero-filled image ``z0 = F^-1(y)`` plus a learned complex (2-channel) correction;
the rec head's estimate is the (magnitude) input image plus a learned complex correction whose real part is the
blind network's residual, so that one head serves batches with and without measurements; and the restored output
is the magnitude of the projected complex image (the targets are magnitudes); the complex
image itself is returned too (``restored_complex``). **Magnitude-only data** (NIfTI/DICOM magnitude images, our
simulations) are treated as real images with zero phase: the simulated k-space is ``F`` of the clean magnitude, so
the same model holds exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from monai.apps.reconstruction.networks.blocks.varnetblock import VarNetBlock
from monai.apps.reconstruction.networks.nets.utils import divisible_pad_t, inverse_divisible_pad_t
from monai.data import MetaTensor
from monai.networks.nets import BasicUNet
from torch import nn

from ..transforms.kspace import fft2c, ifft2c

__all__ = [
    "DC_PROJECTIONS",
    "DCCascades",
    "DCGradientStep",
    "KspaceDataConsistency",
    "check_measurements",
    "complex_to_channels",
    "single_coil_cascades",
]

DC_PROJECTIONS = ("hard", "soft")


def complex_to_channels(z: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) complex -> (B, 2, H, W) real (real and imaginary parts as channels)."""
    return torch.cat([z.real, z.imag], dim=1)


def _channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.complex(x[:, :1].float(), x[:, 1:2].float())


def check_measurements(kspace: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Validate the measured k-space and mask against the (B, 1, H, W) network input.

    ``kspace``: (B, 1, H, W) complex, or (B, 2, H, W) real (real/imaginary channels). ``mask``: broadcastable to
    (B, 1, H, W), 1 where a sample was measured. Returns ``(kspace complex64, mask float32)`` as (B, 1, H, W).
    """
    b, _, h, w = image.shape
    # plain tensors: MetaTensor's per-op overhead and type propagation have no place inside the network
    kspace, mask = (t.as_tensor() if isinstance(t, MetaTensor) else torch.as_tensor(t) for t in (kspace, mask))
    if not torch.is_complex(kspace):
        if kspace.ndim != 4 or kspace.shape[1] != 2:
            raise ValueError(
                f"kspace must be complex (B, 1, H, W) or real (B, 2, H, W) with real/imaginary channels, "
                f"got {tuple(kspace.shape)} {kspace.dtype}."
            )
        kspace = _channels_to_complex(kspace)
    if kspace.shape != (b, 1, h, w):
        raise ValueError(f"kspace {tuple(kspace.shape)} does not match the input image {tuple(image.shape)}.")
    mask = mask.to(kspace.device)
    if mask.ndim != 4 or mask.shape[-2:] != (h, w):
        raise ValueError(f"mask {tuple(mask.shape)} does not match the input image {tuple(image.shape)}.")
    if not torch.isfinite(torch.view_as_real(kspace)).all():
        raise ValueError("kspace contains NaN or Inf values.")
    return kspace.to(torch.complex64), mask.to(torch.float32).expand(b, 1, h, w)


class KspaceDataConsistency(nn.Module):
    """Data-consistency projection of a complex image onto the measurements.

    Args:
        mode: ``"hard"`` (measured samples replaced by ``y``) or ``"soft"`` (moved towards ``y`` by a learned
            weight, initialised to 1).

    Forward: ``image`` (B, 1, H, W) complex, ``kspace`` (B, 1, H, W) complex measurements (zero where not
    measured), ``mask`` (B, 1, H, W) float. Returns the (B, 1, H, W) complex consistent image.

    Example::

        >>> dc = KspaceDataConsistency("hard")
        >>> out = dc(torch.randn(2, 1, 8, 8, dtype=torch.complex64), y, m)  # fft2c(out) * m == y * m
    """

    def __init__(self, mode: str = "hard") -> None:
        super().__init__()
        if mode not in DC_PROJECTIONS:
            raise ValueError(f"dc_projection must be one of {DC_PROJECTIONS}, got {mode!r}.")
        self.mode = mode
        self.weight = nn.Parameter(torch.ones(1)) if mode == "soft" else None

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        k = fft2c(image)
        if self.weight is None:
            k = torch.where(mask > 0, kspace, k)
        else:
            k = k - self.weight * mask * (k - kspace)
        return ifft2c(k)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class DCGradientStep(nn.Module):
    """Exact data-term gradient step on the features of an image-resolution stage.

    ``x_k = z0 + to_image(f)`` (complex, 2 channels), ``g = F^H(M ⊙ F(x_k) - y)``, ``f <- f - rho * embed(g)``.
    ``embed`` starts at zero, so a freshly built DC network starts where the blind one does; ``rho`` is learned.

    Args:
        dim: channels of the stage features.
        step_size_init: initial ``rho``.
    """

    def __init__(self, dim: int, step_size_init: float = 1.0) -> None:
        super().__init__()
        self.to_image = nn.Conv2d(dim, 2, kernel_size=1)
        self.embed = nn.Conv2d(2, dim, kernel_size=3, padding=1)
        nn.init.zeros_(self.embed.weight)
        nn.init.zeros_(self.embed.bias)
        self.step_size = nn.Parameter(torch.tensor(float(step_size_init)))

    def forward(self, feats: torch.Tensor, measured: dict[str, torch.Tensor]) -> torch.Tensor:
        """``feats`` (B, C, Hp, Wp), padded; ``measured``: ``z0``, ``kspace``, ``mask`` at the unpadded (H, W)."""
        z0, kspace, mask = measured["z0"], measured["kspace"], measured["mask"]
        h, w = z0.shape[-2:]
        x = z0 + _channels_to_complex(self.to_image(feats)[..., :h, :w])
        grad = ifft2c(mask * fft2c(x) - kspace)  # y is zero outside the mask, so M y = y
        grad = complex_to_channels(grad).to(feats.dtype)
        ph, pw = feats.shape[-2] - h, feats.shape[-1] - w
        if ph or pw:
            grad = F.pad(grad, (0, pw, 0, ph))  # the padded border carries no measurement
        return feats - self.step_size * self.embed(grad.contiguous(memory_format=torch.channels_last))


class _ComplexRefiner(nn.Module):
    """The refinement model of one cascade: a MONAI ``BasicUNet`` on the (real, imaginary) image.

    Like MONAI's ``ComplexUnet`` it normalises each sample's real and imaginary parts by their std, but (a) with a
    floor, so blank slices (zero image, std 0) give a zero refinement instead of NaN, (b) without adding the mean
    back and with a zero-initialised last layer, so a fresh cascade is the identity (VarNetBlock subtracts the
    refinement from the k-space).
    """

    def __init__(self, features: Sequence[int]) -> None:
        super().__init__()
        self.unet = BasicUNet(spatial_dims=2, in_channels=2, out_channels=2, features=tuple(int(f) for f in features))
        nn.init.zeros_(self.unet.final_conv.weight)
        nn.init.zeros_(self.unet.final_conv.bias)
        self.pad_factor = 16  # BasicUNet's four 2x poolings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 1, H, W, 2) (MONAI's complex layout) -> the refinement, same shape."""
        z = x[:, 0].permute(0, 3, 1, 2)  # (B, 2, H, W)
        mean = z.mean(dim=(2, 3), keepdim=True)
        std = z.std(dim=(2, 3), unbiased=False, keepdim=True).amax(dim=1, keepdim=True).clamp_min(1e-6)
        z, pads = divisible_pad_t((z - mean) / std, k=self.pad_factor)
        z = inverse_divisible_pad_t(self.unet(z), pads) * std
        return z.permute(0, 2, 3, 1)[:, None].contiguous()


class DCCascades(nn.Module):
    """``num_cascades`` single-coil VarNet blocks (MONAI ``VarNetBlock``) on a complex image estimate.

    Each block does ``k <- k - w * M ⊙ (k - y) - F(refine(F^-1 k))`` (soft DC with a learned weight, then a
    ``BasicUNet`` refinement in the image domain); with one coil and unit sensitivity MONAI's sensitivity
    expand/reduce are the plain centred orthonormal FFT pair, the convention of ``scripts.transforms.kspace``.
    Fresh blocks are the identity on a consistent estimate (zero-initialised refinement, and the soft DC term is
    zero where the estimate already equals the measurements).

    Args:
        num_cascades: number of blocks.
        features: the six ``BasicUNet`` widths of each block.

    Forward: ``image`` (B, 1, H, W) complex, ``kspace`` (B, 1, H, W) complex, ``mask`` (B, 1, H, W) float.
    Returns the (B, 1, H, W) complex image (not projected: the caller ends with its own DC projection).

    Example::

        >>> cascades = DCCascades(2, (8, 8, 16, 32, 64, 8))
        >>> out = cascades(image, kspace, mask)  # == image while the cascades are fresh and image is consistent
    """

    def __init__(self, num_cascades: int, features: Sequence[int] = (8, 8, 16, 32, 64, 8)) -> None:
        super().__init__()
        if int(num_cascades) < 1:
            raise ValueError(f"num_cascades must be >= 1, got {num_cascades}.")
        if len(features) != 6:
            raise ValueError(f"features needs the six BasicUNet widths, got {list(features)}.")
        self.blocks = nn.ModuleList([VarNetBlock(_ComplexRefiner(features)) for _ in range(int(num_cascades))])

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # FFTs and the normalisation in float32 whatever the autocast context (half-precision FFTs need power-of-2
        # sizes on CUDA and lose the small unmeasured coefficients)
        with torch.autocast(image.device.type, enabled=False):
            k = single_coil_cascades(self.blocks, torch.view_as_real(fft2c(image.to(torch.complex64))), kspace, mask)
            return ifft2c(torch.view_as_complex(k.contiguous()))


def single_coil_cascades(
    blocks: Iterable[nn.Module], k: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Runs MONAI ``VarNetBlock`` s with one coil of unit sensitivity, so that their sensitivity expand/reduce are the
    plain centred FFT pair.

    ``k``: the starting k-space in MONAI's (B, 1, H, W, 2) real/imaginary layout; ``kspace`` (B, 1, H, W) complex
    measurements; ``mask`` (B, 1, H, W). Returns the last block's k-space, (B, 1, H, W, 2).
    """
    ref = torch.view_as_real(kspace.to(torch.complex64))
    sens = torch.zeros_like(ref)
    sens[..., 0] = 1.0
    sampled = mask[..., None] > 0
    for block in blocks:
        k = block(k, ref, sampled, sens)
    return k
