"""Loading ``models/model.pt`` into the network with messages that say what to do.

:class:`WeightsLoader` is MONAI's ``CheckpointLoader`` (same arguments, same loading) that first checks the file is
there (otherwise: how to train or where weights come from) and turns the state-dict mismatch of weights made for
another network (a page of missing and unexpected keys) into one sentence: which preset and number of classes the
weights were trained with, judged from their parameter shapes, and which ones the config builds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointLoader

from scripts.cli import fail
from scripts.networks import PRESETS

__all__ = ["WeightsLoader", "describe_weights", "guess_preset", "missing_weights_message", "mismatch_message"]

#: the first convolution of VL-DUN: its output channels are the preset's ``dim``
_DIM_KEY = "patch_embed.weight"


def guess_preset(state: Mapping[str, Any]) -> str | None:
    """The preset whose width (``dim``) the weights have, or ``None`` if they are not VL-DUN weights of a preset."""
    w = state.get(_DIM_KEY)
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        return None
    names = [n for n, cfg in PRESETS.items() if int(cfg["dim"]) == int(w.shape[0])]
    return names[0] if len(names) == 1 else None


def _num_classes(state: Mapping[str, Any]) -> int | None:
    convs = [k for k, v in state.items() if k.startswith("seg_head.") and k.endswith(".weight") and v.ndim == 4]
    return int(state[convs[-1]].shape[0]) if convs else None


def describe_weights(state: Mapping[str, Any]) -> str:
    """``"preset 'tiny' (dim 8), 4 classes"`` from the parameter shapes of a VL-DUN state dict."""
    preset = guess_preset(state)
    w = state.get(_DIM_KEY)
    dim = f"dim {int(w.shape[0])}" if isinstance(w, torch.Tensor) and w.ndim == 4 else "no patch_embed"
    classes = _num_classes(state)
    return (
        (f"preset {preset!r}" if preset else "no known preset")
        + f" ({dim}), "
        + (f"{classes} classes" if classes else "no segmentation head")
    )


def missing_weights_message(path: str | os.PathLike) -> str:
    return (
        f"no weights file {str(path)!r}. Train first (`python -m monai.bundle run training --config_file "
        "bundle/configs/train.json` writes bundle/models/model.pt), copy trained weights there (none are published "
        "yet: bundle/large_files.yml lists none), point --ckpt_path (inference) or --eval_ckpt (evaluation) at your "
        "file, or run the untrained network with --load_pretrain false (inference; its output is meaningless)."
    )


#: a MONAI ``BasicUNet``'s six widths, read from the output channels of these convolutions (under its prefix)
_BASIC_UNET_WIDTH_KEYS = (
    "conv_0.conv_0",
    "down_1.convs.conv_0",
    "down_2.convs.conv_0",
    "down_3.convs.conv_0",
    "down_4.convs.conv_0",
    "upcat_1.convs.conv_1",
)


def _basic_unet_widths(state: Mapping[str, Any], prefix: str) -> list[int] | None:
    """The ``features`` of the ``BasicUNet`` stored under ``prefix`` (``None`` if there is none)."""
    keys = [f"{prefix}{k}.conv.weight" for k in _BASIC_UNET_WIDTH_KEYS]
    if not all(isinstance(state.get(k), torch.Tensor) for k in keys):
        return None
    return [int(state[k].shape[0]) for k in keys]


def _cli_list(values: list[int]) -> str:
    """A list as one shell word the bundle CLI parses back into it: ``"[32,32,64]"``."""
    return f'"{json.dumps(values, separators=(",", ":"))}"'


def _dc_cascades(state: Mapping[str, Any]) -> int:
    blocks = {k.split(".")[2] for k in state if k.startswith("dc_cascades.blocks.")}
    return len(blocks)


def _dc_hints(state: Mapping[str, Any], own: Mapping[str, Any]) -> list[str]:
    """Command-line switches that build the known-operator parts the weights were trained with."""
    hint = []
    file_dc, net_dc = "rec_head_imag.weight" in state, "rec_head_imag.weight" in own
    if file_dc != net_dc:
        hint.append(f"--data_consistency {str(file_dc).lower()}")
    if file_dc and net_dc and _dc_cascades(state) != _dc_cascades(own):
        hint.append(f"--dc_cascades {_dc_cascades(state)}")
    file_feed, net_feed = "dc_seg_embed.weight" in state, "dc_seg_embed.weight" in own
    if file_dc and net_dc and file_feed != net_feed:
        hint.append(f"--dc_to_seg {str(file_feed).lower()}")
    cascade = "dc_cascades.blocks.0.model.unet."
    file_w, net_w = _basic_unet_widths(state, cascade), _basic_unet_widths(own, cascade)
    if file_w and net_w and file_w != net_w:
        hint.append(f"--dc_cascade_features {_cli_list(file_w)}")
    return hint


def _seg_norm(state: Mapping[str, Any]) -> str:
    """The ``--seg_norm`` value that builds the seg head's norm layers: batch norm keeps running statistics; a
    per-sample norm with an affine has weights only (instance, the one the docs and benchmark use)."""
    keys = [k for k in state if k.startswith("seg_head.")]
    if any(k.endswith("running_mean") for k in keys):
        return "batch"
    if any(k.endswith(".adn.N.weight") or k == "seg_head.1.weight" for k in keys):
        return "\"['instance', {'affine': True}]\""
    return "instance"


def _seg_decoder(state: Mapping[str, Any], unet_widths: list[int] | None) -> str:
    """``conv``, or which UNet head: ``image_unet`` reads the image channels only (1-3), ``unet`` the 2C >= 16
    feature channels too."""
    if unet_widths is None:
        return "conv"
    first = state["seg_head.conv_0.conv_0.conv.weight"]
    return "image_unet" if first.shape[1] <= 3 else "unet"


def _seg_hints(state: Mapping[str, Any], own: Mapping[str, Any]) -> list[str]:
    """Command-line switches that build the segmentation head the weights were trained with (decoder, widths,
    norm), so that weights trained with ``--seg_decoder unet`` name it instead of listing 50 keys."""
    if not any(k.startswith("seg_head.") for k in state) or not any(k.startswith("seg_head.") for k in own):
        return []
    hint = []
    file_unet, net_unet = _basic_unet_widths(state, "seg_head."), _basic_unet_widths(own, "seg_head.")
    file_decoder, net_decoder = _seg_decoder(state, file_unet), _seg_decoder(own, net_unet)
    if file_decoder != net_decoder:
        hint.append(f"--seg_decoder {file_decoder}")
    # a conv-head network does not show which UNet widths the config would build: name the file's
    if file_unet and file_unet != net_unet:
        hint.append(f"--seg_unet_features {_cli_list(file_unet)}")
    file_norm = _seg_norm(state)
    if file_norm != _seg_norm(own):
        hint.append(f"--seg_norm {file_norm}")
    return hint


def mismatch_message(
    path: str | os.PathLike, state: Mapping[str, Any], network: torch.nn.Module, preset: str | None = None
) -> str:
    own = network.state_dict()
    have, want = describe_weights(state), describe_weights(own)
    built = preset if preset else guess_preset(own)
    hint = []
    trained = guess_preset(state)
    if trained and trained != built:
        hint.append(f"--preset {trained}")
    if _num_classes(state) and _num_classes(state) != _num_classes(own):
        hint.append(f"--num_classes {_num_classes(state)}")
    hint += _dc_hints(state, own) + _seg_hints(state, own)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    return (
        f"the weights {str(path)!r} do not fit the network the config builds: the file has {have}, the config "
        f"builds {want}"
        + (f" (preset {built!r})" if built and built not in want else "")
        + f" [{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped parameters"
        + (
            f", e.g. {shapes[0]}: file {tuple(state[shapes[0]].shape)} vs network {tuple(own[shapes[0]].shape)}"
            if shapes
            else ""
        )
        + "]. "
        + (
            f"Run with {' '.join(hint)} to build the network these weights were trained for."
            if hint
            else "Use weights trained with this config (same preset and network overrides)."
        )
    )


class WeightsLoader(CheckpointLoader):
    """``CheckpointLoader`` with the checks of the module docstring. ``preset``: the preset the config builds (named
    in the message). Other arguments: MONAI's ``CheckpointLoader``."""

    def __init__(self, load_path: str, load_dict: dict, preset: str | None = None, **kwargs: Any) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        self.preset = preset

    def __call__(self, engine: Any) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            fail(FileNotFoundError(missing_weights_message(path)))
        try:
            super().__call__(engine)
        except RuntimeError as e:
            if "state_dict" not in str(e):
                raise
            network = next(m for m in self.load_dict.values() if isinstance(m, torch.nn.Module))
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, Mapping) else state
            fail(RuntimeError(mismatch_message(path, state, network, self.preset)))
