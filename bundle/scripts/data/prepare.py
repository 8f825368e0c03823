"""Turn common dataset layouts into a MONAI datalist JSON with a patient-wise train/validation/test split.

Layouts (``python -m scripts.data.prepare <layout> --input DIR --output FILE.json``, run from ``bundle/``):

- ``msd`` / ``nnunet``: ``imagesTr/`` + ``labelsTr/`` (+ ``dataset.json``). nnU-Net v2 channel suffixes
  (``case_0000.nii.gz``) are recognised and ``--channel`` picks one; labels and modality come from
  ``dataset.json`` (MSD ``labels``/``modality`` or nnU-Net v2 ``labels``/``channel_names``).
- ``acdc``: ``patientXXX/patientXXX_frameYY.nii.gz`` + ``..._gt.nii.gz`` anywhere under the input folder
  (``training/`` and ``testing/`` of the official release included); ``Info.cfg`` adds group, ED/ES phase,
  height, weight.
- ``brats``: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``; ``--sequence`` picks the image.
  Label 4 (enhancing tumour) is class 3; the map ``{"0": 0, "1": 1, "2": 2, "4": 3}`` is recorded, and
  ``--remap-dir`` writes remapped label copies so the datalist can be used without a label-mapping transform.
- ``slices``: ``images/*.png`` + ``labels/*.png`` with equal stems (like ``../shared/data/acdc``); the patient
  id comes from ``--patient-regex``; an optional ``manifest.csv`` is attached as metadata. ``--preset acdc``,
  ``covid`` and ``covid-multiclass`` fill in the options for the shared evaluation sets.

Every case is checked: a label exists for each image, image and label shapes agree (read from headers), files
are readable and not truncated, and label values belong to the declared classes. All problems are reported
together in one :class:`DataPreparationError` naming the files.

The split is patient-wise and reproducible: patients are ordered by ``sha256(f"{seed}:{patient_id}")`` and the
first ones go to test, the next ones to validation (so the order of the others does not depend on which other
patients exist). ``--test-ids`` (patient ids or
their trailing numbers, e.g. ``013``) or ``--test-pattern`` (glob on case or patient id, e.g. ``'test_*'``)
fix the test set instead.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._nifti import atomic_write_bytes, save_nifti_deterministic
from ._readers import (
    DataPreparationError,
    ImageInfo,
    is_supported,
    label_values,
    read_array,
    read_info,
    strip_suffix,
)

__all__ = [
    "ACDC_LABELS",
    "BRATS_LABELS",
    "BRATS_LABEL_MAP",
    "LAYOUTS",
    "SLICE_PRESETS",
    "Case",
    "DataPreparationError",
    "find_acdc_cases",
    "find_brats_cases",
    "find_msd_cases",
    "find_slice_cases",
    "main",
    "normalize_modality",
    "parse_labels",
    "prepare_datalist",
    "split_patients",
    "validate_cases",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("msd", "nnunet", "acdc", "brats", "slices")

ACDC_LABELS = {"0": "background", "1": "right_ventricle", "2": "myocardium", "3": "left_ventricle"}
BRATS_LABELS = {"0": "background", "1": "necrotic_tumour_core", "2": "peritumoral_edema", "3": "enhancing_tumour"}
BRATS_LABEL_MAP = {"0": 0, "1": 1, "2": 2, "4": 3}
BRATS_SEQUENCES = ("t1", "t1ce", "t2", "flair")

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

_MR_NAMES = {
    "MR", "MRI", "T1", "T1W", "T1CE", "T1GD", "T1C", "T2", "T2W", "FLAIR", "ADC", "DWI", "HBV", "PD", "PDW",
    "BSSFP", "SSFP", "CINE", "DCE", "SWI", "T2STAR", "MAGNITUDE",
}  # fmt: skip


def normalize_modality(name: str) -> str:
    """Map a modality/sequence/channel name to the bundle's modality classes: ``"MRI"`` or ``"CT"``.

    MR sequence names (T1, T2, FLAIR, ADC, bSSFP, ...) become ``"MRI"``; CT names become ``"CT"``. Anything
    else raises ``DataPreparationError`` (pass ``--modality`` explicitly).
    """
    key = re.sub(r"[^A-Z0-9]", "", str(name).upper())
    if key in ("CT", "CTA", "HU") or key.startswith("CT"):
        return "CT"
    if key in _MR_NAMES or key.startswith("MR"):
        return "MRI"
    raise DataPreparationError(f"cannot tell whether modality {name!r} is MRI or CT; pass --modality MRI|CT")


def parse_labels(spec: str | Mapping | None) -> dict[str, str] | None:
    """Labels from ``"0:background,1:RV"``, a JSON object string/file, or a mapping; keys become ``str(int)``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        s = spec.strip()
        if os.path.isfile(s):
            s = Path(s).read_text()
        if s.startswith("{"):
            spec = json.loads(s)
        else:
            spec = dict(part.split(":", 1) for part in s.split(",") if part.strip())
    out: dict[str, str] = {}
    for k, v in dict(spec).items():
        try:
            out[str(int(str(k).strip()))] = str(v).strip()
        except ValueError as e:
            raise DataPreparationError(f"label keys must be integers, got {k!r} in {spec!r}") from e
    if "0" not in out:
        out = {"0": "background", **out}
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


@dataclass
class Case:
    """One image/label pair found in a layout, before validation."""

    case_id: str
    patient_id: str
    image: Path
    label: Path | None
    modality: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Found:
    cases: list[Case]
    labels: dict[str, str]
    label_map: dict[str, int]
    problems: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataPreparationError(f"{what} folder not found: {path}")


def _patient_of(case_id: str, regex: str | None, problems: list[str], where: Path) -> str:
    if not regex:
        return case_id
    m = re.search(regex, case_id)
    if not m:
        problems.append(f"{where}: name {case_id!r} does not match --patient-regex {regex!r}")
        return case_id
    return m.group(1) if m.groups() else m.group(0)


def _identity_map(labels: Mapping[str, str]) -> dict[str, int]:
    return {k: int(k) for k in labels}


# ----------------------------------------------------------------------------------------------- layouts
def find_msd_cases(
    input_dir: str | os.PathLike,
    channel: int = 0,
    modality: str | None = None,
    labels: Mapping[str, str] | str | None = None,
    patient_regex: str | None = None,
) -> _Found:
    """MSD / nnU-Net: ``imagesTr/`` + ``labelsTr/`` (+ ``dataset.json``); hidden files (``._x``) are ignored."""
    root = Path(input_dir)
    _require_dir(root, "input")
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    _require_dir(img_dir, "imagesTr")
    problems: list[str] = []
    ds: dict[str, Any] = {}
    ds_path = root / "dataset.json"
    if ds_path.is_file():
        try:
            ds = json.loads(ds_path.read_text())
        except ValueError as e:
            raise DataPreparationError(f"unreadable dataset.json {ds_path}: {e}") from e
    # labels: MSD {"0": "background"}; nnU-Net v2 {"background": 0}
    lab = parse_labels(labels)
    if lab is None:
        raw = ds.get("labels")
        if not raw:
            raise DataPreparationError(
                f"no 'labels' in {ds_path} (or no dataset.json): pass --labels '0:background,1:...'"
            )
        if all(str(k).strip().lstrip("-").isdigit() for k in raw):
            lab = parse_labels(raw)
        else:
            inv = {}
            for name, val in raw.items():
                if not isinstance(val, int):
                    raise DataPreparationError(
                        f"{ds_path}: label {name!r} -> {val!r} is a region-based label (nnU-Net v2 regions are not "
                        "supported); pass --labels with plain class values"
                    )
                inv[str(val)] = name
            lab = parse_labels(inv)
    assert lab is not None
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
    if modality:
        mod = normalize_modality(modality)
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
            problems.append(f"missing label for image {img}: expected {lab_dir / (cid + _suffix(chans[channel]))}")
        meta = {"num_channels": len(chans)}
        if ch_name is not None:
            meta["channel_name"] = str(ch_name)
        if nnunet:
            meta["channel"] = channel
        cases.append(
            Case(cid, _patient_of(cid, patient_regex, problems, img), img, lab_dir / lf if lf else None, mod, meta)
        )
    for orphan in sorted(set(label_files) - set(by_case)):
        logger.warning("label without image (ignored): %s", lab_dir / label_files[orphan])
    n_decl = ds.get("numTraining")
    if isinstance(n_decl, int) and n_decl != len(by_case):
        logger.warning("%s declares numTraining=%d but %s holds %d cases", ds_path, n_decl, img_dir, len(by_case))
    extra = {k: ds[k] for k in ("name", "description", "reference", "licence", "release") if k in ds}
    if ch_name is not None:
        extra["channel_name"] = str(ch_name)
    return _Found(cases, lab, _identity_map(lab), problems, extra)


def _suffix(name: str) -> str:
    return name[len(strip_suffix(name)) :]


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


def find_acdc_cases(input_dir: str | os.PathLike) -> _Found:
    """ACDC as distributed: ``patientXXX/patientXXX_frameYY.nii.gz`` + ``_gt``, searched recursively."""
    root = Path(input_dir)
    _require_dir(root, "input")
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
            problems.append(f"missing label for image {img}: expected {img.parent / (cid + '_gt' + _suffix(img.name))}")
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
    return _Found(cases, dict(ACDC_LABELS), _identity_map(ACDC_LABELS), problems)


def find_brats_cases(input_dir: str | os.PathLike, sequence: str = "t1ce") -> _Found:
    """BraTS 2021: ``<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz``; the image is ``--sequence``."""
    root = Path(input_dir)
    _require_dir(root, "input")
    sequence = sequence.lower()
    if sequence not in BRATS_SEQUENCES:
        raise DataPreparationError(f"unknown BraTS sequence {sequence!r}; choose one of {list(BRATS_SEQUENCES)}")
    pat = re.compile(r"^(?P<subj>.+)_(?P<kind>t1|t1ce|t2|flair|seg)\.nii(\.gz)?$")
    subjects: dict[str, dict[str, Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            m = pat.match(f)
            if m and not f.startswith("."):
                subjects.setdefault(m.group("subj"), {})[m.group("kind")] = Path(dirpath) / f
    if not subjects:
        raise DataPreparationError(
            f"empty folder: no BraTS files (<subject>/<subject>_{{t1,t1ce,t2,flair,seg}}.nii.gz) found under {root}"
        )
    problems: list[str] = []
    cases = []
    for subj, files in sorted(subjects.items()):
        folder = next(iter(files.values())).parent
        img = files.get(sequence)
        if img is None:
            problems.append(
                f"missing {sequence} image for BraTS subject {subj}: expected {folder / f'{subj}_{sequence}.nii.gz'}"
            )
            continue
        seg = files.get("seg")
        if seg is None:
            problems.append(f"missing label for image {img}: expected {folder / f'{subj}_seg.nii.gz'}")
        meta = {"sequence": sequence, "sequences_available": ",".join(k for k in BRATS_SEQUENCES if k in files)}
        cases.append(Case(f"{subj}_{sequence}", subj, img, seg, "MRI", meta))
    return _Found(cases, dict(BRATS_LABELS), dict(BRATS_LABEL_MAP), problems)


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


def find_slice_cases(
    input_dir: str | os.PathLike,
    modality: str,
    labels: Mapping[str, str] | str | None = None,
    patient_regex: str | None = None,
    images_dir: str = "images",
    labels_dir: str = "labels",
    manifest: str | os.PathLike | None = "auto",
) -> _Found:
    """2D slices: ``images/<stem>.png`` + ``labels/<stem>.png``; patient id from ``patient_regex`` (group 1).

    ``manifest``: ``"auto"`` attaches ``<input>/manifest.csv`` when present (joined on its ``stem`` column, else
    its first column), a path attaches that file, ``None`` attaches nothing. Without ``labels`` the classes are
    ``0..max`` of the values found (named ``class_<k>``).
    """
    root = Path(input_dir)
    _require_dir(root, "input")
    img_dir, lab_dir = root / images_dir, root / labels_dir
    _require_dir(img_dir, "images")
    problems: list[str] = []
    files = sorted(f for f in os.listdir(img_dir) if is_supported(f))
    if not files:
        raise DataPreparationError(f"empty folder: no images (*.png, *.nii.gz, *.nii) in {img_dir}")
    mod = normalize_modality(modality)
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
            problems.append(f"missing label for image {img}: expected {lab_dir / (stem + _suffix(f))}")
        meta: dict[str, Any] = {}
        if man_cols:
            row = man_rows.get(stem)
            missing_rows += row is None
            meta["manifest"] = dict(row) if row is not None else dict.fromkeys(man_cols, "")
        cases.append(
            Case(stem, _patient_of(stem, patient_regex, problems, img), img, lab_dir / lf if lf else None, mod, meta)
        )
    if missing_rows:
        logger.warning("%d of %d images have no row in %s", missing_rows, len(files), man_path)
    for orphan in sorted(set(label_files) - {strip_suffix(f) for f in files}):
        logger.warning("label without image (ignored): %s", lab_dir / label_files[orphan])
    lab = parse_labels(labels)
    extra: dict[str, Any] = {}
    if lab is None:
        extra["infer_labels"] = True
        lab = {"0": "background"}
    return _Found(cases, lab, _identity_map(lab), problems, extra)


# ----------------------------------------------------------------------------------------------- checks
def _spatial(info: ImageInfo, is_label: bool) -> tuple[int, ...]:
    shape = info.shape
    if info.spacing is not None:  # NIfTI: x, y, z (+ channels / time)
        shape = shape[:3] if len(shape) > 3 and (is_label is False or all(s == 1 for s in shape[3:])) else shape
    elif not is_label:  # PNG: rows, cols (+ colour bands of an RGB image)
        shape = shape[:2]
    return shape


def validate_cases(
    cases: Sequence[Case], allowed_values: Iterable[int] | None, check_values: bool = True
) -> tuple[dict[str, dict[str, Any]], list[str], set[int]]:
    """Check every case; returns ``(per-case header info, problems, label values seen)``.

    Problems: unreadable/corrupt/truncated files, label and image of different spatial shape, multi-channel
    labels, and (with ``check_values``) label values outside ``allowed_values`` (skipped when that is ``None``).
    """
    allowed = None if allowed_values is None else {int(v) for v in allowed_values}
    infos: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    seen: set[int] = set()
    for c in cases:
        try:
            ii = read_info(c.image)
        except DataPreparationError as e:
            problems.append(str(e))
            continue
        rec: dict[str, Any] = {"shape": list(ii.shape)}
        if ii.spacing is not None:
            rec["spacing"] = [round(s, 6) for s in ii.spacing]
        infos[c.case_id] = rec
        if c.label is None:
            continue
        try:
            li = read_info(c.label)
        except DataPreparationError as e:
            problems.append(str(e))
            continue
        if li.spacing is None and len(li.shape) > 2:
            problems.append(
                f"label {c.label} has {li.shape[2]} channels (mode {li.mode}); "
                "expected a single-channel class-index image"
            )
            continue
        if _spatial(ii, False) != _spatial(li, True):
            problems.append(f"shape mismatch: image {c.image} is {ii.shape} but label {c.label} is {li.shape}")
            continue
        if (
            ii.spacing is not None
            and li.spacing is not None
            and not np.allclose(ii.spacing, li.spacing, rtol=1e-3, atol=1e-3)
        ):
            logger.warning("spacing differs: image %s %s vs label %s %s", c.image, ii.spacing, c.label, li.spacing)
        if check_values:
            try:
                vals = label_values(c.label)
            except DataPreparationError as e:
                problems.append(str(e))
                continue
            seen.update(int(v) for v in vals)
            if allowed is not None:
                bad = sorted(set(int(v) for v in vals) - allowed)
                if bad:
                    problems.append(f"label {c.label} has values {bad} outside the declared classes {sorted(allowed)}")
    return infos, problems, seen


def _raise_problems(problems: Sequence[str], where: Path, limit: int = 50) -> None:
    if not problems:
        return
    shown = "\n".join(f"  - {p}" for p in problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    raise DataPreparationError(f"{len(problems)} problem(s) in {where}:\n{shown}{more}")


# ----------------------------------------------------------------------------------------------- split
def _count(fraction: float, n: int) -> int:
    if fraction <= 0 or n <= 0:
        return 0
    k = int(math.floor(fraction * n + 0.5))
    return max(k, 1) if n >= 3 else k


def _resolve_ids(tokens: Sequence[str], patients: Sequence[str]) -> set[str]:
    chosen: set[str] = set()
    pset = set(patients)
    for tok in (str(t).strip() for t in tokens):
        if not tok:
            continue
        if tok in pset:
            chosen.add(tok)
            continue
        matches = []
        if tok.isdigit():
            for p in patients:
                m = re.search(r"(\d+)$", p)
                if m and int(m.group(1)) == int(tok):
                    matches.append(p)
        if len(matches) != 1:
            example = ", ".join(sorted(patients)[:3])
            what = "no patient" if not matches else f"several patients ({', '.join(matches)})"
            raise DataPreparationError(f"test id {tok!r} matches {what}; patient ids look like: {example}")
        chosen.add(matches[0])
    return chosen


def split_patients(
    patients: Sequence[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    test_ids: Sequence[str] | None = None,
    test_pattern: str | None = None,
    cases_by_patient: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Patient id -> ``"training" | "validation" | "test"``.

    Patients are ordered by ``sha256(f"{seed}:{id}")``. Test: ``test_ids`` (exact ids, or numbers matching an
    id's trailing digits) and/or ``test_pattern`` (glob on patient id or any of its case ids); otherwise the
    first ``round(test_fraction * n)`` patients. Validation: the next ``round(val_fraction * n)`` of the rest.
    Each non-zero fraction yields at least one patient when there are 3 or more patients.
    """
    pats = sorted(set(patients))
    if not pats:
        raise DataPreparationError("no patients to split")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise DataPreparationError("val/test fractions must be in [0, 1)")
    order = sorted(pats, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    n = len(pats)
    if test_ids or test_pattern:
        test = _resolve_ids(test_ids or [], pats)
        if test_pattern:
            by_pat = [
                p for p in pats
                if fnmatch.fnmatchcase(p, test_pattern)
                or any(fnmatch.fnmatchcase(c, test_pattern) for c in (cases_by_patient or {}).get(p, ()))
            ]  # fmt: skip
            if not by_pat:
                raise DataPreparationError(f"--test-pattern {test_pattern!r} matches no case or patient id")
            test.update(by_pat)
    else:
        test = set(order[: _count(test_fraction, n)])
    rest = [p for p in order if p not in test]
    val = set(rest[: _count(val_fraction, n)])
    if len(rest) - len(val) < 1:
        raise DataPreparationError(
            f"the split leaves no training patient ({n} patients, {len(test)} test, {len(val)} val)"
        )
    return {p: "test" if p in test else "validation" if p in val else "training" for p in pats}


# ----------------------------------------------------------------------------------------------- datalist
def _harmonise(items: list[dict[str, Any]]) -> None:
    """Give every item's ``metadata`` the same keys and one value type per key (so batches collate)."""
    metas = [it["metadata"] for it in items]
    keys = sorted({k for m in metas for k in m})
    for k in keys:
        vals = [m.get(k, None) for m in metas]
        kinds = {type(v) for v in vals}
        if len(kinds) > 1 and not kinds <= {int, float}:
            for m in metas:
                v = m.get(k)
                m[k] = "" if v is None else v if isinstance(v, dict) else str(v)
        elif kinds <= {int, float} and float in kinds:
            for m in metas:
                m[k] = float(m[k])


def _remap_labels(cases: Sequence[Case], label_map: Mapping[str, int], out_dir: Path) -> None:
    lut = {int(k): int(v) for k, v in label_map.items()}
    import nibabel as nib

    for c in cases:
        assert c.label is not None
        arr = np.asarray(read_array(c.label))
        out = np.zeros(arr.shape, np.uint8)
        for src, dst in lut.items():
            out[arr == src] = dst
        dst_path = out_dir / f"{c.patient_id}_seg.nii.gz"
        affine = nib.load(str(c.label)).affine
        save_nifti_deterministic(dst_path, out, affine, descrip="labels remapped by scripts.data.prepare")
        c.meta["label_original"] = str(c.label)
        c.label = dst_path


def prepare_datalist(
    layout: str,
    input_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    modality: str | None = None,
    labels: Mapping[str, str] | str | None = None,
    patient_regex: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    test_ids: Sequence[str] | str | None = None,
    test_pattern: str | None = None,
    check_values: bool = True,
    absolute_paths: bool = False,
    channel: int = 0,
    sequence: str = "t1ce",
    remap_dir: str | os.PathLike | None = None,
    images_dir: str = "images",
    labels_dir: str = "labels",
    manifest: str | os.PathLike | None = "auto",
) -> dict[str, Any]:
    """Find, check and split the cases of ``layout`` under ``input_dir``; return (and write) the datalist.

    Paths in the datalist are relative to the folder of ``output`` (MONAI's ``load_decathlon_datalist``
    default base dir), or absolute with ``absolute_paths`` or when ``output`` is ``None``. Raises
    :class:`DataPreparationError` listing every problem found. See the module docstring for the layouts.
    """
    t0 = time.perf_counter()
    layout = layout.lower()
    root = Path(input_dir)
    if isinstance(test_ids, str):
        test_ids = [t for t in re.split(r"[,\s]+", test_ids) if t]
    if layout in ("msd", "nnunet"):
        found = find_msd_cases(root, channel=channel, modality=modality, labels=labels, patient_regex=patient_regex)
    elif layout == "acdc":
        found = find_acdc_cases(root)
    elif layout == "brats":
        found = find_brats_cases(root, sequence=sequence)
    elif layout == "slices":
        if not modality:
            raise DataPreparationError("the slices layout needs --modality MRI|CT (or a --preset)")
        found = find_slice_cases(root, modality, labels, patient_regex, images_dir, labels_dir, manifest)
    else:
        raise DataPreparationError(f"unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    if layout in ("acdc", "brats") and modality:
        mod = normalize_modality(modality)
        for c in found.cases:
            c.modality = mod
    if labels is not None and layout in ("acdc", "brats"):  # rename the classes; the values stay
        found.labels = parse_labels(labels) or found.labels
        if layout == "acdc":
            found.label_map = _identity_map(found.labels)
    problems = list(found.problems)
    if patient_regex and layout in ("acdc", "brats"):  # the other layouts apply it while finding the cases
        for c in found.cases:
            c.patient_id = _patient_of(c.case_id, patient_regex, problems, c.image)
    counts = Counter(c.case_id for c in found.cases)
    dup = {cid for cid, n in counts.items() if n > 1}
    problems += [f"duplicate case id {d!r}" for d in sorted(dup)]
    infer = bool(found.extra.pop("infer_labels", False))
    allowed = None if infer else [int(k) for k in found.label_map]
    infos, more, seen = validate_cases([c for c in found.cases if c.case_id not in dup], allowed, check_values)
    problems += more
    _raise_problems(problems, root)
    if infer:
        if not check_values:
            raise DataPreparationError(
                "without --labels the classes are read from the label files: drop --no-check-values"
            )
        found.labels = {str(v): ("background" if v == 0 else f"class_{v}") for v in range(max(seen | {0}) + 1)}
        found.label_map = _identity_map(found.labels)
    by_patient: dict[str, list[str]] = {}
    for c in found.cases:
        by_patient.setdefault(c.patient_id, []).append(c.case_id)
    split = split_patients(list(by_patient), val_fraction, test_fraction, seed, test_ids, test_pattern, by_patient)
    relabelled = False
    if remap_dir is not None and any(int(k) != v for k, v in found.label_map.items()):
        _remap_labels(found.cases, found.label_map, Path(remap_dir))
        relabelled = True

    out_path = Path(output) if output is not None else None
    base = None if (absolute_paths or out_path is None) else os.path.dirname(os.path.abspath(out_path))

    def _p(path: Path) -> str:
        ap = os.path.abspath(path)
        return ap if base is None else os.path.relpath(ap, base)

    lists: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for c in found.cases:
        assert c.label is not None
        meta = {"patient_id": c.patient_id, "source": f"{layout}:{os.path.relpath(c.image, root)}"}
        meta.update(infos[c.case_id])
        meta.update(c.meta)
        lists[split[c.patient_id]].append(
            {"image": _p(c.image), "label": _p(c.label), "modality": c.modality, "case_id": c.case_id, "metadata": meta}
        )
    all_items = lists["training"] + lists["validation"] + lists["test"]
    _harmonise(all_items)
    mods = sorted({c.modality for c in found.cases})
    identity = all(int(k) == v for k, v in found.label_map.items())
    ndim = {len(it["metadata"]["shape"]) for it in all_items}
    datalist: dict[str, Any] = {
        "name": found.extra.pop("name", f"{layout} datalist of {root.name}"),
        "description": found.extra.pop("description", f"prepared by scripts.data.prepare from the {layout} layout"),
        **found.extra,
        "layout": layout,
        "input_dir": os.path.abspath(root),
        "tensorImageSize": "2D" if ndim == {2} else "3D",
        "modality": {str(i): m for i, m in enumerate(mods)},
        "labels": found.labels,
        "num_classes": max(int(k) for k in found.labels) + 1,
        "label_map": {k: int(v) for k, v in found.label_map.items()},
        "label_remap_required": not identity and not relabelled,
        "split": {
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": None if (test_ids or test_pattern) else test_fraction,
            "test_ids": sorted(p for p, s in split.items() if s == "test") if (test_ids or test_pattern) else None,
            "test_pattern": test_pattern,
            "patients": {k: sorted(p for p, s in split.items() if s == k) for k in lists},
        },
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        "training": lists["training"],
        "validation": lists["validation"],
    }
    if lists["test"]:  # monai's load_decathlon_datalist fails on an empty "test" list
        datalist["test"] = lists["test"]
    if relabelled:
        datalist["labels_remapped_to"] = str(Path(remap_dir).resolve())
    if out_path is not None:
        atomic_write_bytes(out_path, (json.dumps(datalist, indent=2) + "\n").encode())
    logger.info(
        "%s: %d cases from %d patients -> training %d cases / %d patients, validation %d / %d, test %d / %d (%.1f s)",
        out_path or "datalist",
        len(all_items),
        len(by_patient),
        *(x for k in lists for x in (len(lists[k]), len(datalist["split"]["patients"][k]))),
        time.perf_counter() - t0,
    )
    return datalist


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--input", required=True, help="dataset folder")
    common.add_argument("--output", required=True, help="datalist JSON to write")
    common.add_argument("--modality", default=None, help="MRI or CT (default: from the layout / dataset.json)")
    common.add_argument("--labels", default=None, help="class names: '0:background,1:RV,...', JSON, or a JSON file")
    common.add_argument("--patient-regex", default=None, help="regex on the case id; group 1 (or the match) = patient")
    common.add_argument("--val-fraction", type=float, default=0.1, help="share of patients for validation (0.1)")
    common.add_argument("--test-fraction", type=float, default=None, help="share of patients for test (0.2)")
    common.add_argument("--seed", type=int, default=0, help="split seed (0)")
    common.add_argument("--test-ids", default=None, help="comma-separated test patient ids or numbers, e.g. 013,024")
    common.add_argument("--test-pattern", default=None, help="glob on case/patient ids for the test set, e.g. 'test_*'")
    common.add_argument("--no-check-values", action="store_true", help="skip reading label voxels (faster)")
    common.add_argument("--absolute-paths", action="store_true", help="write absolute paths")
    common.add_argument("-q", "--quiet", action="store_true")
    p = argparse.ArgumentParser(
        prog="python -m scripts.data.prepare",
        description="Convert a dataset layout into a MONAI datalist JSON (see bundle/docs/data.md).",
    )
    sub = p.add_subparsers(dest="layout", required=True)
    for name in ("msd", "nnunet"):
        s = sub.add_parser(name, parents=[common], help="imagesTr/ + labelsTr/ + dataset.json")
        s.add_argument("--channel", type=int, default=0, help="nnU-Net channel (_0000 suffix) to use (0)")
    s = sub.add_parser("acdc", parents=[common], help="patientXXX/patientXXX_frameYY.nii.gz + _gt")
    s = sub.add_parser("brats", parents=[common], help="BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}")
    s.add_argument("--sequence", default="t1ce", choices=BRATS_SEQUENCES, help="image sequence (t1ce)")
    s.add_argument("--remap-dir", default=None, help="write labels with 4 -> 3 here and point the datalist to them")
    s = sub.add_parser("slices", parents=[common], help="images/*.png + labels/*.png with equal stems")
    s.add_argument("--preset", choices=sorted(SLICE_PRESETS), default=None, help="options for ../shared/data sets")
    s.add_argument("--images-dir", default="images")
    s.add_argument("--labels-dir", default=None, help="label folder name (labels)")
    s.add_argument(
        "--manifest", default="auto", help="CSV of per-slice metadata ('auto': <input>/manifest.csv; 'none')"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    kw: dict[str, Any] = {
        "modality": a.modality,
        "labels": a.labels,
        "patient_regex": a.patient_regex,
        "val_fraction": a.val_fraction,
        "test_fraction": 0.2 if a.test_fraction is None else a.test_fraction,
        "seed": a.seed,
        "test_ids": a.test_ids,
        "test_pattern": a.test_pattern,
        "check_values": not a.no_check_values,
        "absolute_paths": a.absolute_paths,
    }
    if a.layout in ("msd", "nnunet"):
        kw["channel"] = a.channel
    elif a.layout == "brats":
        kw.update(sequence=a.sequence, remap_dir=a.remap_dir)
    elif a.layout == "slices":
        preset = dict(SLICE_PRESETS.get(a.preset or "", {}))
        explicit_split = a.test_ids or a.test_pattern or a.test_fraction is not None
        for key in ("modality", "labels", "patient_regex"):
            if kw[key] is None and key in preset:
                kw[key] = preset[key]
        if not explicit_split:
            kw["test_ids"] = preset.get("test_ids")
            kw["test_pattern"] = preset.get("test_pattern")
        kw.update(
            images_dir=a.images_dir,
            labels_dir=a.labels_dir or preset.get("labels_dir", "labels"),
            manifest=None if str(a.manifest).lower() == "none" else a.manifest,
        )
    try:
        prepare_datalist(a.layout, a.input, a.output, **kw)
    except DataPreparationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
