"""ACDC as distributed: ``patientXXX/patientXXX_frameYY.nii.gz`` + ``..._gt.nii.gz`` anywhere under the input
folder (``training/`` and ``testing/`` of the official release included); ``Info.cfg`` adds group, ED/ES phase,
height, weight."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .._readers import DataPreparationError
from ._base import Case, Found, LayoutOptions, apply_options, identity_map, require_dir, suffix

logger = logging.getLogger(__name__)

ACDC_LABELS = {"0": "background", "1": "right_ventricle", "2": "myocardium", "3": "left_ventricle"}


def _read_info_cfg(path: Path) -> dict[str, str]:
    out = {}
    try:
        for line in path.read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out[k.strip()] = v.strip()
    except OSError as e:
        raise DataPreparationError(f"unreadable {path}: {e}") from e
    return out


def _num(s: str | None) -> float | str:
    if s is None:
        return ""
    try:
        return float(s)
    except ValueError:
        return s


def find_acdc_cases(input_dir: str | os.PathLike, options: LayoutOptions = LayoutOptions()) -> Found:
    """ACDC frames and their ``_gt`` labels, searched recursively; patient = ``patientXXX``, modality MRI.

    ``options.modality``, ``labels`` (renames the classes) and ``patient_regex`` override the ACDC defaults.
    """
    root = Path(input_dir)
    require_dir(root, "input")
    pat = re.compile(r"^(patient\d+)_frame(\d+)(_gt)?\.nii(\.gz)?$")
    problems: list[str] = []
    images: dict[str, Path] = {}
    gts: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            m = pat.match(f)
            if not m or f.startswith("."):
                continue
            cid = f"{m.group(1)}_frame{m.group(2)}"
            target = gts if m.group(3) else images
            if cid in target:
                problems.append(f"duplicate ACDC file for {cid}: {target[cid]} and {Path(dirpath) / f}")
            target[cid] = Path(dirpath) / f
    if not images:
        raise DataPreparationError(
            f"empty folder: no ACDC frames (patientXXX/patientXXX_frameYY.nii.gz) found under {root}"
        )
    cases = []
    info_cache: dict[Path, dict[str, str]] = {}
    for cid, img in sorted(images.items()):
        pid, frame = cid.split("_frame")
        gt = gts.get(cid)
        if gt is None:
            problems.append(f"missing label for image {img}: expected {img.parent / (cid + '_gt' + suffix(img.name))}")
        cfg_path = img.parent / "Info.cfg"
        if cfg_path not in info_cache:
            info_cache[cfg_path] = _read_info_cfg(cfg_path) if cfg_path.is_file() else {}
        cfg = info_cache[cfg_path]
        phase = ""
        for ph in ("ED", "ES"):
            if cfg.get(ph, "").strip().isdigit() and int(cfg[ph]) == int(frame):
                phase = ph
        meta = {
            "frame": int(frame),
            "phase": phase,
            "group": cfg.get("Group", ""),
            "height": _num(cfg.get("Height")),
            "weight": _num(cfg.get("Weight")),
            "nb_frames": _num(cfg.get("NbFrame")),
            "subset": img.parent.parent.name if img.parent.parent != root.parent else "",
        }
        cases.append(Case(cid, pid, img, gt, "MRI", meta))
    for orphan in sorted(set(gts) - set(images)):
        logger.warning("label without image (ignored): %s", gts[orphan])
    found = Found(cases, dict(ACDC_LABELS), identity_map(ACDC_LABELS), problems)
    return apply_options(found, options, identity_labels=True)
