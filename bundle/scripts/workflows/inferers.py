"""Slice-by-slice inference of a 2D network over 3D volumes (or directly on 2D images).

MONAI's ``SliceInferer`` stitches outputs like a sliding window, which needs every output to be spatial; VL-DUN's
dict output also holds per-image logits (modality, degradation). :class:`SliceBySliceInferer` is the equivalent
for that case: it moves the slice axis into the batch, runs the network on ``sw_batch_size`` slices at a time,
keeps the spatial outputs (``output_keys``) and puts the slices back, so a (B, C, H, W, D) volume gives
(B, K, H, W, D) outputs. 4D input (B, C, H, W) is passed to the network as it is. Works with networks returning
a tensor or a dict, and with MONAI Label's ``inferer(x[None], network)`` call. Keyword arguments that are tensors
shaped like the input volume (B, C', H, W, D) (e.g. the measured ``kspace`` and ``mask`` of data consistency) are
sliced along with it; other arguments are passed to every call unchanged.
``progress=True`` shows a bar over the slices of each volume (tqdm, as ``SlidingWindowInferer(progress=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import optional_import

from ..flags import as_bool

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["SliceBySliceInferer"]


class SliceBySliceInferer(Inferer):
    """Run a 2D network over the slices of 3D inputs.

    Args:
        spatial_dim: the spatial axis (0, 1 or 2 of H, W, D; -1 = 2) along which slices are taken (default: the last).
        sw_batch_size: number of slices per forward pass.
        output_keys: for dict outputs, the keys to keep (each must be (N, K, H, W)); ``None`` keeps the outputs
            that are 4D tensors.
        cpu_output: gather outputs on the CPU (saves device memory for large volumes).
        progress: show a progress bar over the slices of each volume (needs tqdm; silently off without it).
    """

    def __init__(
        self,
        spatial_dim: int = -1,
        sw_batch_size: int = 8,
        output_keys: Sequence[str] | None = ("seg", "restored"),
        cpu_output: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dim not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1 or 2 (or -3..-1), got {spatial_dim}.")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
        self.spatial_dim = spatial_dim % 3
        self.sw_batch_size = int(sw_batch_size)
        self.output_keys = None if output_keys is None else tuple(output_keys)
        self.cpu_output = cpu_output
        self.progress = as_bool(progress, "progress") and has_tqdm

    def _select(self, out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return out
        if not isinstance(out, Mapping):
            raise TypeError(f"network output must be a tensor or a dict, got {type(out).__name__}.")
        if self.output_keys is None:
            return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and v.ndim == 4}
        missing = [k for k in self.output_keys if k not in out]
        kept = {k: out[k] for k in self.output_keys if k in out}
        if not kept:
            raise KeyError(
                f"network output has none of {list(self.output_keys)} (keys: {sorted(out)}); missing {missing}."
            )
        return kept

    @staticmethod
    def _with_meta(y: torch.Tensor, like: Any) -> torch.Tensor:
        """``y`` as a MetaTensor carrying ``like``'s metadata (affine, file name, batch flag), if ``like`` has any."""
        if not isinstance(like, MetaTensor):
            return y
        out = MetaTensor(y.as_tensor() if isinstance(y, MetaTensor) else y)
        out.copy_meta_from(like)
        return out

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if x.ndim == 4:
            out = self._select(network(x, *args, **kwargs))
            if isinstance(out, torch.Tensor):
                return self._with_meta(out, inputs)
            return {k: self._with_meta(v, inputs) for k, v in out.items()}
        if x.ndim != 5:
            raise ValueError(f"SliceBySliceInferer expects (B, C, H, W) or (B, C, H, W, D), got {tuple(x.shape)}.")
        axis = 2 + self.spatial_dim
        b, n = x.shape[0], x.shape[axis]

        def to_planes(t: torch.Tensor) -> torch.Tensor:
            return t.movedim(axis, 1).reshape(
                b * n, t.shape[1], *[s for i, s in enumerate(t.shape[2:], 2) if i != axis]
            )

        def sliced(v: Any) -> bool:
            return isinstance(v, torch.Tensor) and v.ndim == 5 and v.shape[0] == b and v.shape[2:] == x.shape[2:]

        planes = to_planes(x)
        plane_kwargs = {
            k: to_planes(v.as_tensor() if isinstance(v, MetaTensor) else v) for k, v in kwargs.items() if sliced(v)
        }
        chunks: list[Any] = []
        bar = tqdm(total=planes.shape[0], unit="slice", leave=False, desc="slices") if self.progress else None
        for start in range(0, planes.shape[0], self.sw_batch_size):
            stop = start + self.sw_batch_size
            call_kwargs = {**kwargs, **{k: v[start:stop] for k, v in plane_kwargs.items()}}
            out = self._select(network(planes[start:stop], *args, **call_kwargs))
            if bar is not None:
                bar.update(min(self.sw_batch_size, planes.shape[0] - start))
            if self.cpu_output:
                out = out.cpu() if isinstance(out, torch.Tensor) else {k: v.cpu() for k, v in out.items()}
            chunks.append(out)
        if bar is not None:
            bar.close()

        def stack(parts: list[torch.Tensor]) -> torch.Tensor:
            y = torch.cat(parts, dim=0)  # (B*n, K, h, w)
            y = y.reshape(b, n, *y.shape[1:]).movedim(1, axis)
            return self._with_meta(y, inputs)

        if isinstance(chunks[0], torch.Tensor):
            return stack(chunks)
        return {k: stack([c[k] for c in chunks]) for k in chunks[0]}
