"""Helpers for the MONAI Label and packaging tests: a fast copy of the bundle and tiny synthetic studies.

``make_tiny_bundle(dst)`` copies ``bundle/`` (code, configs, docs; no weights, caches or run outputs) and rewrites
its ``inference.json`` / ``train.json`` to the ``tiny`` network preset and small training settings, then writes
untrained weights (``models/model.pt``, plain ``state_dict``). ``write_study(folder, ...)`` writes small synthetic
NIfTI volumes from the demo phantom generator (never real data).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
NAME = "vldun_mri_ct_segmentation"

#: overrides that make the bundle fast enough for CPU tests (top-level ids of the configs)
TINY_INFER = {"preset": "tiny", "slice_batch_size": 16, "num_threads": None}
TINY_TRAIN = {
    "preset": "tiny",
    "patch_size": [32, 32],
    "train_slices_per_volume": 2,
    "val_slices_per_volume": 2,
    "batch_size": 4,
    "num_workers": 0,
    "cache_rate": 0.0,
    "progress_bar": False,
    "epochs": 1,
}


def make_tiny_bundle(
    dst: str | os.PathLike,
    infer_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    weights: bool = True,
) -> Path:
    """Copy the repository's bundle to ``dst`` with the tiny settings; returns ``dst``."""
    dst = Path(dst)
    shutil.copytree(
        BUNDLE,
        dst,
        ignore=shutil.ignore_patterns("eval", "runs", ".cache", "mlruns", "__pycache__", "*.pt", "*.ts", "*.pt.json"),
    )
    for fname, over in (
        ("inference.json", {**TINY_INFER, **(infer_overrides or {})}),
        ("train.json", {**TINY_TRAIN, **(train_overrides or {})}),
    ):
        path = dst / "configs" / fname
        if not path.is_file():
            continue
        cfg = json.loads(path.read_text())
        for k, v in over.items():
            if k in cfg:
                cfg[k] = v
        path.write_text(json.dumps(cfg, indent=4))
    if weights:
        write_weights(dst)
    return dst


def network_state(bundle_dir: str | os.PathLike, config: str = "inference.json", seed: int = 0) -> dict:
    """A freshly initialised ``network_def`` state_dict of the bundle (built in a subprocess, so the test process
    never imports the copy's ``scripts`` package)."""
    import torch

    out = Path(bundle_dir) / "models" / f".init_{seed}.pt"
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); torch.manual_seed(int(sys.argv[3]));"
        "from monai.bundle import ConfigParser;"
        "p = ConfigParser(); p.read_config(sys.argv[1] + '/configs/' + sys.argv[4]); p['bundle_root'] = sys.argv[1];"
        "net = p.get_parsed_content('network_def', instantiate=True);"
        "torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, sys.argv[2])"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code, str(bundle_dir), str(out), str(seed), config], check=True, env=env)
    state = torch.load(out, weights_only=True)
    out.unlink()
    return state


def write_weights(bundle_dir: str | os.PathLike, state: dict | None = None, seed: int = 0) -> Path:
    """Write ``models/model.pt`` (plain state_dict, atomic) for the bundle copy, and its provenance record
    ``models/model.pt.json`` (the weights' sha256, as training writes it), without which the packager refuses it."""
    import torch

    state = network_state(bundle_dir, seed=seed) if state is None else state
    path = Path(bundle_dir) / "models" / "model.pt"
    tmp = path.with_name(".model.pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    record = {"saved_by": "tests/tiny_bundle.py (untrained)", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    path.with_name("model.pt.json").write_text(json.dumps(record))
    return path


def head_key(state: Mapping[str, Any], prefix: str) -> str:
    """Name of the last conv weight under ``prefix`` (e.g. ``seg_head.``) of a VL-DUN state_dict."""
    keys = [k for k in state if k.startswith(prefix) and k.endswith(".weight") and state[k].ndim == 4]
    if not keys:
        raise KeyError(f"no conv weights under {prefix!r}")
    return keys[-1]


def constant_head_state(state: Mapping[str, Any], seg_class: int | None = None, identity_restore: bool = False) -> dict:
    """A copy of ``state`` whose segmentation head outputs ``seg_class`` everywhere (last conv: zero weights, one-hot
    bias) and/or whose restoration head outputs zero (so ``restored`` = the network input, via the global
    residual)."""
    out = {k: v.clone() for k, v in state.items()}
    if seg_class is not None:
        w = head_key(out, "seg_head.")
        out[w].zero_()
        b = w[: -len("weight")] + "bias"
        out[b].zero_()
        out[b][seg_class] = 10.0
    if identity_restore:
        for k in [k for k in out if k.startswith("rec_head.")]:
            out[k].zero_()
    return out


def write_study(
    folder: str | os.PathLike,
    names: Sequence[str] = ("img0",),
    shape: Sequence[int] = (32, 32, 6),
    modality: str = "MRI",
    labels_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Write synthetic phantom volumes ``<folder>/<name>.nii.gz`` (and their labels into ``labels_dir`` when given,
    same file names). Returns ``{name: {"image": path, "label": path|None, "image_array", "label_array",
    "affine"}}``."""
    sys.path.insert(0, str(BUNDLE))
    try:
        from scripts.data._nifti import make_affine, save_nifti_deterministic
        from scripts.data.demo import generate_phantom
    finally:
        sys.path.remove(str(BUNDLE))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(names):
        img, lab, spacing, _ = generate_phantom(modality, seed=seed, index=i, shape=tuple(shape))
        aff = make_affine(spacing, img.shape)
        ipath = folder / f"{name}.nii.gz"
        save_nifti_deterministic(ipath, img, aff)
        lpath = None
        if labels_dir is not None:
            lpath = Path(labels_dir) / f"{name}.nii.gz"
            lpath.parent.mkdir(parents=True, exist_ok=True)
            save_nifti_deterministic(lpath, lab.astype(np.uint8), aff)
        out[name] = {"image": ipath, "label": lpath, "image_array": img, "label_array": lab, "affine": aff}
    return out
