"""MSD / nnU-Net: ``imagesTr/`` + ``labelsTr/`` (+ ``dataset.json``).

nnU-Net v2 channel suffixes (``case_0000.nii.gz``) are recognised and ``channel`` picks one; labels and modality
come from ``dataset.json`` (MSD ``labels``/``modality`` or nnU-Net v2 ``labels``/``channel_names``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .._readers import DataPreparationError, is_supported, strip_suffix
from . import _base
from ._base import Case, Found, LayoutOptions, normalize_modality, parse_labels

logger = logging.getLogger(__name__)


def _read_dataset_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise DataPreparationError(f"unreadable dataset.json {path}: {e}") from e


def _labels(options: LayoutOptions, ds: dict[str, Any], ds_path: Path) -> dict[str, str]:
    """``--labels``, else ``dataset.json``'s: MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}``."""
    lab = parse_labels(options.labels)
    if lab is not None:
        return lab
    raw = ds.get("labels")
    if not raw:
        raise DataPreparationError(f"no 'labels' in {ds_path} (or no dataset.json): pass --labels '0:background,1:...'")
    if all(str(k).strip().lstrip("-").isdigit() for k in raw):
        return parse_labels(raw) or {}
    inv = {}
    for name, val in raw.items():
        if not isinstance(val, int):
            raise DataPreparationError(
                f"{ds_path}: label {name!r} -> {val!r} is a region-based label (nnU-Net v2 regions are not "
                "supported); pass --labels with plain class values"
            )
        inv[str(val)] = name
    return parse_labels(inv) or {}


def find_msd_cases(input_dir: str | os.PathLike, options: LayoutOptions = LayoutOptions()) -> Found:
    """MSD / nnU-Net: ``imagesTr/`` + ``labelsTr/`` (+ ``dataset.json``); hidden files (``._x``) are ignored.

    Uses ``options.channel``, ``modality``, ``labels`` and ``patient_regex``.
    """
    root = Path(input_dir)
    _base.require_dir(root, "input")
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    _base.require_dir(img_dir, "imagesTr")
    problems: list[str] = []
    ds_path = root / "dataset.json"
    ds = _read_dataset_json(ds_path)
    lab = _labels(options, ds, ds_path)
    channel, patient_regex = options.channel, options.patient_regex
    channel_names = ds.get("channel_names") or ds.get("modality") or {}
    files = sorted(f for f in os.listdir(img_dir) if is_supported(f))
    if not files:
        raise DataPreparationError(f"empty folder: no images (*.nii.gz, *.nii, *.png) in {img_dir}")
    stems = [strip_suffix(f) for f in files]
    label_files = {strip_suffix(f): f for f in os.listdir(lab_dir) if is_supported(f)} if lab_dir.is_dir() else {}
    # nnU-Net v2 channel suffixes: every image stem ends in _XXXX, and the stems are not themselves label names
    # (an MSD-style folder whose case names happen to end in 4 digits keeps its names)
    nnunet = all(re.search(r"_\d{4}$", s) for s in stems) and not all(s in label_files for s in stems)
    by_case: dict[str, dict[int, str]] = {}
    for f, s in zip(files, stems):
        cid, ch = (s[:-5], int(s[-4:])) if nnunet else (s, 0)
        by_case.setdefault(cid, {})[ch] = f
    ch_name = channel_names.get(str(channel))
    if options.modality:
        mod = normalize_modality(options.modality)
    elif ch_name is not None:
        mod = normalize_modality(ch_name)
    else:
        raise DataPreparationError(f"no modality for channel {channel} in {ds_path}; pass --modality MRI|CT")
    cases = []
    for cid, chans in sorted(by_case.items()):
        if channel not in chans:
            problems.append(f"{img_dir}: case {cid!r} has no channel {channel:04d} (found {sorted(chans)})")
            continue
        img = img_dir / chans[channel]
        lf = label_files.get(cid)
        if lf is None:
            problems.append(f"missing label for image {img}: expected {lab_dir / (cid + _base.suffix(chans[channel]))}")
        meta = {"num_channels": len(chans)}
        if ch_name is not None:
            meta["channel_name"] = str(ch_name)
        if nnunet:
            meta["channel"] = channel
        pid = _base.patient_of(cid, patient_regex, problems, img)
        cases.append(Case(cid, pid, img, lab_dir / lf if lf else None, mod, meta))
    for orphan in sorted(set(label_files) - set(by_case)):
        logger.warning("label without image (ignored): %s", lab_dir / label_files[orphan])
    n_decl = ds.get("numTraining")
    if isinstance(n_decl, int) and n_decl != len(by_case):
        logger.warning("%s declares numTraining=%d but %s holds %d cases", ds_path, n_decl, img_dir, len(by_case))
    extra = {k: ds[k] for k in ("name", "description", "reference", "licence", "release") if k in ds}
    if ch_name is not None:
        extra["channel_name"] = str(ch_name)
    return Found(cases, lab, _base.identity_map(lab), problems, extra)
