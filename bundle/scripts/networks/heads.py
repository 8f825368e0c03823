"""The two task heads of VL-DUN (paper Fig. 2): the restoration head and the segmentation head.

Both read the final 2C feature map of the unfolded network. :class:`SegUNetHead` is the alternative segmentation
head (``seg_decoder="unet"``): a U-shaped decoder that reads the restored image with those features, or the restored
image alone (``seg_decoder="image_unet"``: restoration-then-segmentation inside one network). The paper's
heads keep the state-dict keys the network had when the heads were plain layers (``rec_head.weight``,
``rec_head_imag.weight``, ``seg_head.0.weight`` ... ``seg_head.6.bias``), so checkpoints saved before these classes
existed load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers.utils import get_norm_layer
from monai.networks.nets import BasicUNet
from torch import nn

__all__ = ["RecHead", "SegHead", "SegUNetHead", "SEG_DECODERS", "SEG_UNET_FEATURES"]

#: the segmentation heads ``VLDUN(seg_decoder=...)`` builds
SEG_DECODERS = ("conv", "unet", "image_unet")
#: the default ``SegUNetHead`` widths: those of the benchmark's segmentation UNet (MONAI ``BasicUNet``'s default)
SEG_UNET_FEATURES = (32, 32, 64, 128, 256, 32)


def _norm_spec(norm: str | tuple | list) -> str | tuple:
    """A MONAI norm spec; a list (what JSON configs give) is read as the ``(name, kwargs)`` tuple."""
    return tuple(norm) if isinstance(norm, list) else norm


class RecHead(nn.Conv2d):
    """Restoration head: Conv3x3 ``in_channels -> out_channels``, zero-initialised.

    VL-DUN adds its output to the degraded input (the global residual), so the untrained network returns its input:
    training moves away from the degraded image only where that lowers the loss, instead of from a random offset the
    first steps must undo. With data consistency a second ``RecHead`` gives the imaginary part of the complex
    estimate (zero at the start: the first output is the measured zero-filled image).

    Args:
        in_channels: channels of the features (2C).
        out_channels: channels of the restored image.
        bias: with a bias (zero-initialised too).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class SegHead(nn.Sequential):
    """Segmentation head: Conv3x3-Norm-ReLU, Conv3x3-Norm-ReLU, Conv1x1 -> ``num_classes`` logits.

    The default norm is batch norm (the head's layers, and so its state-dict keys, as they always were). Its
    evaluation uses running statistics averaged over the last ~10 training batches; when the batches come from two
    feature distributions (``measurement_dropout`` trains some batches blind, the others with data consistency),
    that average is neither. A per-sample norm (``("instance", {"affine": True})``, as MONAI's ``BasicUNet``; or
    ``("group", {"num_groups": 8})``) computes the same thing in training and evaluation.

    Args:
        in_channels: channels of the features (2C).
        num_classes: logit channels (background included).
        hidden: channels of the two hidden convolutions.
        norm: a MONAI norm spec (:func:`monai.networks.layers.utils.get_norm_layer`): a name or ``(name, kwargs)``;
            a list from a JSON config is read as that tuple.

    Example::

        >>> head = SegHead(32, num_classes=4, hidden=16, norm=["instance", {"affine": True}])
        >>> head(torch.randn(2, 32, 24, 24)).shape
        torch.Size([2, 4, 24, 24])
    """

    def __init__(
        self, in_channels: int, num_classes: int, hidden: int = 32, norm: str | tuple | list = "batch"
    ) -> None:
        norm = _norm_spec(norm)
        super().__init__(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1, bias=False),
            get_norm_layer(norm, spatial_dims=2, channels=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, bias=False),
            get_norm_layer(norm, spatial_dims=2, channels=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, kernel_size=1, bias=True),
        )


class SegUNetHead(BasicUNet):
    """Segmentation head with its own receptive field: a MONAI ``BasicUNet`` on the restored image and the features.

    The paper's :class:`SegHead` is two 3x3 convolutions, so everything it segments with must already be in the
    shared features, which the restoration loss shapes too; at our budgets its Dice stayed well below a segmentation
    UNet run on the restored image (the sequential baseline), the myocardium near 0. This head is that UNet inside
    the joint network: it reads ``cat(restored image, features)``, so its segmentation can use both the image and
    the unfolding's features. VL-DUN gives it the restored image detached: the segmentation loss trained through the
    image pulls it towards what segments, at the cost of PSNR (measured with ``dc_to_seg``); whether the seg loss
    reaches the shared features is ``VLDUN(seg_feature_grad=...)``. The first convolution's weights on the features
    start at zero, so a fresh head is exactly that segmentation UNet on the restored image and takes in the features
    as far as the seg loss finds them useful (the seg gradient reaches the trunk from the first optimiser step on).
    Measured so far only with kaiming-initialised feature weights (bundle README, *Performance*).

    Args:
        in_channels: channels of the features (2C; 0 for the image-only head of ``seg_decoder="image_unet"``).
        num_classes: logit channels (background included).
        image_channels: channels of the restored image concatenated in front of the features.
        features: the six ``BasicUNet`` widths.
        norm: a MONAI norm spec (a JSON list is read as ``(name, kwargs)``).
        dropout: ``BasicUNet``'s dropout probability after every convolution (training only). Built against the joint
            heads' fitting their training slices faster than the sequential pipeline's segmentation UNet yet validating
            lower; 0.1 lowered the ACDC validation Dice of both (bundle README, *Performance*), hence the default 0.

    Forward: ``(B, image_channels + in_channels, H, W)`` -> ``(B, num_classes, H, W)`` logits (any H, W: MONAI's
    up-sampling pads odd sizes).

    Example::

        >>> head = SegUNetHead(32, num_classes=4, features=(8, 8, 16, 32, 64, 8), norm="batch")
        >>> head(torch.randn(2, 1 + 32, 24, 24)).shape
        torch.Size([2, 4, 24, 24])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_channels: int = 1,
        features: Sequence[int] = SEG_UNET_FEATURES,
        norm: str | tuple | list = ("instance", {"affine": True}),
        dropout: float = 0.0,
    ) -> None:
        if len(features) != 6:
            raise ValueError(f"seg_unet_features needs the six BasicUNet widths, got {list(features)}.")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"seg_unet_dropout must be in [0, 1), got {dropout}.")
        super().__init__(
            spatial_dims=2,
            in_channels=image_channels + in_channels,
            out_channels=num_classes,
            features=tuple(int(f) for f in features),
            norm=_norm_spec(norm),
            dropout=float(dropout),
        )
        # kaiming init would give the 2C feature channels, which the restoration loss is still reshaping, 2C times
        # the image channel's share of the first layer's output: start from the image alone instead
        nn.init.zeros_(self.conv_0.conv_0.conv.weight[:, image_channels:])
