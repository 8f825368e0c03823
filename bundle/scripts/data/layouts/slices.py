"""2D slice folders: ``images/<stem>.png`` + ``labels/<stem>.png`` with equal stems (like ``../shared/data/acdc``).

The patient id comes from ``patient_regex``; an optional ``manifest.csv`` is attached as metadata.
:data:`SLICE_PRESETS` holds the options for the shared evaluation sets (``acdc``, ``covid``, ``covid-multiclass``).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from .._readers import DataPreparationError, is_supported, strip_suffix
from . import _base
from ._base import Case, Found, LayoutOptions, normalize_modality, parse_labels
from .acdc import ACDC_LABELS

logger = logging.getLogger(__name__)

#: options for the 2D-slice folders in ../shared/data (see docs/data.md and the benchmark protocol)
SLICE_PRESETS: dict[str, dict[str, Any]] = {
    "acdc": {
        "modality": "MRI",
        "patient_regex": r"^(patient\d+)",
        "labels": dict(ACDC_LABELS),
        "labels_dir": "labels",
        "test_ids": ["013", "024", "059", "066", "080", "093"],
    },
    "covid": {
        "modality": "CT",
        "patient_regex": None,
        "labels": {"0": "background", "1": "infection"},
        "labels_dir": "labels",
        "test_pattern": "test_*",
    },
    "covid-multiclass": {
        "modality": "CT",
        "patient_regex": None,
        "labels": {"0": "background", "1": "ground_glass_opacity", "2": "consolidation"},
        "labels_dir": "labels_multiclass",
        "test_pattern": "test_*",
    },
}


def _read_manifest(path: Path) -> tuple[str, dict[str, dict[str, str]]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise DataPreparationError(f"unreadable manifest {path}: {e}") from e
    if not rows:
        return "", {}
    cols = list(rows[0].keys())
    key = "stem" if "stem" in cols else cols[0]
    return key, {r[key]: {c: ("" if r[c] is None else str(r[c])) for c in cols if c != key} for r in rows}


def find_slice_cases(input_dir: str | os.PathLike, options: LayoutOptions = LayoutOptions()) -> Found:
    """2D slices: ``<images_dir>/<stem>.png`` + ``<labels_dir>/<stem>.png``; patient id from ``patient_regex``.

    ``options.modality`` is required. ``manifest``: ``"auto"`` attaches ``<input>/manifest.csv`` when present
    (joined on its ``stem`` column, else its first column), a path attaches that file, ``None`` attaches nothing.
    Without ``labels`` the classes are ``0..max`` of the values found (named ``class_<k>``; ``infer_labels``).
    """
    if not options.modality:
        raise DataPreparationError("the slices layout needs --modality MRI|CT (or a --preset)")
    manifest, patient_regex = options.manifest, options.patient_regex
    root = Path(input_dir)
    _base.require_dir(root, "input")
    img_dir, lab_dir = root / options.images_dir, root / options.labels_dir
    _base.require_dir(img_dir, "images")
    problems: list[str] = []
    files = sorted(f for f in os.listdir(img_dir) if is_supported(f))
    if not files:
        raise DataPreparationError(f"empty folder: no images (*.png, *.nii.gz, *.nii) in {img_dir}")
    mod = normalize_modality(options.modality)
    label_files = {strip_suffix(f): f for f in os.listdir(lab_dir) if is_supported(f)} if lab_dir.is_dir() else {}
    man_rows: dict[str, dict[str, str]] = {}
    man_cols: list[str] = []
    man_path = root / "manifest.csv" if manifest == "auto" else Path(manifest) if manifest else None
    if man_path is not None and (manifest != "auto" or man_path.is_file()):
        if not man_path.is_file():
            raise DataPreparationError(f"manifest not found: {man_path}")
        _, man_rows = _read_manifest(man_path)
        man_cols = list(next(iter(man_rows.values())).keys()) if man_rows else []
    cases = []
    missing_rows = 0
    for f in files:
        stem = strip_suffix(f)
        img = img_dir / f
        lf = label_files.get(stem)
        if lf is None:
            problems.append(f"missing label for image {img}: expected {lab_dir / (stem + _base.suffix(f))}")
        meta: dict[str, Any] = {}
        if man_cols:
            row = man_rows.get(stem)
            missing_rows += row is None
            meta["manifest"] = dict(row) if row is not None else dict.fromkeys(man_cols, "")
        pid = _base.patient_of(stem, patient_regex, problems, img)
        cases.append(Case(stem, pid, img, lab_dir / lf if lf else None, mod, meta))
    if missing_rows:
        logger.warning("%d of %d images have no row in %s", missing_rows, len(files), man_path)
    for orphan in sorted(set(label_files) - {strip_suffix(f) for f in files}):
        logger.warning("label without image (ignored): %s", lab_dir / label_files[orphan])
    lab = parse_labels(options.labels)
    if lab is None:
        return Found(cases, {"0": "background"}, {"0": 0}, problems, infer_labels=True)
    return Found(cases, lab, _base.identity_map(lab), problems)
