"""Named VL-DUN sizes (``paper``, ``small``, ``tiny``) and :func:`preset_config`.

A preset is a dict of :class:`~scripts.networks.VLDUN` constructor arguments; the constructor itself knows nothing
of presets (its defaults are the ``small`` preset's values). ``VLDUN.from_preset(name, **overrides)`` builds one.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["DEFAULT_PRESET", "PRESETS", "preset_config"]

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
