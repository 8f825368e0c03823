"""Named VL-DUN sizes (``paper``, ``small``, ``tiny``), :func:`preset_config` and :func:`preset_arguments`.

A preset is a dict of :class:`~scripts.networks.VLDUN` constructor arguments; the constructor itself knows nothing
of presets (its defaults are the ``small`` preset's values). ``VLDUN.from_preset(name, **overrides)`` builds one from
:func:`preset_arguments`: the config layer's entry, where command-line strings and old argument names are handled.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

from ..flags import as_bool

__all__ = ["BOOL_ARGS", "DEFAULT_PRESET", "PRESETS", "RENAMED_ARGS", "preset_arguments", "preset_config"]

#: boolean constructor arguments: ``from_preset`` converts the command line's strings, the constructor refuses them
BOOL_ARGS = tuple(
    "bias low_res_gdfn use_clip_prior tune_clip freq_decouple seg_head rec_head stage_heads data_consistency "
    "return_stages dc_to_seg".split()
)
#: old argument names -> new ones (``from_preset`` maps them, with a FutureWarning)
RENAMED_ARGS = {"use_seg_head": "seg_head", "use_rec_head": "rec_head"}

#: Named configurations. ``paper``: the paper-sized network (22.77M trainable parameters without CLIP, Table 5).
#: ``small``: for CPU demos and experiments at 64-128 px (K = 7 stages, one MDPMM each, expand 1, d_state 8: the
#: selective scan dominates CPU time, and this halves it against expand 2 with a refinement stage; measured in
#: benchmarks/results/cost.md). ``tiny``: the smallest sensible net, for unit tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "dim": 48,
        "num_blocks": [2, 3, 4, 3],
        "num_refinement_blocks": 2,
        "heads": [1, 2, 4, 8],
        "d_state": 16,
        "expand": 2.0,
        "clip_model": "ViT-B-32",
        "seg_hidden": 64,
    },
    "small": {
        "dim": 16,
        "num_blocks": [1, 1, 1, 1],
        "num_refinement_blocks": 0,
        "heads": [1, 1, 2, 4],
        "d_state": 8,
        "expand": 1.0,
        "clip_model": "vldun-clip-small",
        "seg_hidden": 32,
    },
    "tiny": {
        "dim": 8,
        "num_blocks": [1, 1, 1, 1],
        "num_refinement_blocks": 0,
        "heads": [1, 1, 1, 1],
        "d_state": 4,
        "expand": 1.0,
        "clip_model": "vldun-clip-tiny",
        "seg_hidden": 8,
    },
}

#: The preset whose values are the constructor's defaults (and ``from_preset``'s default name).
DEFAULT_PRESET = "small"


def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments of a preset (``paper``, ``small``, ``tiny``) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown VL-DUN preset {name!r}; choose one of {sorted(PRESETS)}.")
    cfg = copy.deepcopy(PRESETS[name])
    cfg.update(overrides)
    return cfg


def preset_arguments(name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of ``VLDUN.from_preset(name, **overrides)``: the old names ``use_seg_head`` /
    ``use_rec_head`` mapped to ``seg_head`` / ``rec_head`` (with a ``FutureWarning`` at the caller of ``from_preset``),
    boolean overrides given as strings converted (:func:`scripts.flags.as_bool`, which rejects other spellings), then
    :func:`preset_config`."""
    overrides = dict(overrides)
    for old, new in RENAMED_ARGS.items():
        if old in overrides:
            if new in overrides:
                raise ValueError(f"VLDUN: {old!r} is the old name of {new!r}; give only {new!r}.")
            warnings.warn(f"VLDUN argument {old!r} is renamed {new!r}; use {new!r}.", FutureWarning, stacklevel=3)
            overrides[new] = overrides.pop(old)
    for key in BOOL_ARGS:
        if key in overrides:
            overrides[key] = as_bool(overrides[key], key)
    return preset_config(name, **overrides)
