"""The two task heads of VL-DUN (paper Fig. 2): the restoration head and the segmentation head.

Both read the final 2C feature map of the unfolded network. Their layers keep the state-dict keys the network had
when the heads were plain layers (``rec_head.weight``, ``rec_head_imag.weight``, ``seg_head.0.weight`` ...
``seg_head.6.bias``), so checkpoints saved before these classes existed load unchanged.
"""

from __future__ import annotations

from monai.networks.layers.utils import get_norm_layer
from torch import nn

__all__ = ["RecHead", "SegHead"]


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
        if isinstance(norm, list):
            norm = tuple(norm)
        super().__init__(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1, bias=False),
            get_norm_layer(norm, spatial_dims=2, channels=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, bias=False),
            get_norm_layer(norm, spatial_dims=2, channels=hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, kernel_size=1, bias=True),
        )
