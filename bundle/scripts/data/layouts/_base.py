"""What every layout finder shares: the :class:`Case` / :class:`Found` records, the :class:`LayoutOptions` they
take, modality and label parsing, and small path helpers."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._readers import DataPreparationError, strip_suffix

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


@dataclass(frozen=True)
class LayoutOptions:
    """The options a layout finder may use (each finder reads the ones that apply to it; see ``docs/data.md``).

    Args:
        modality: ``MRI``/``CT`` or a sequence name; overrides the layout's (required for ``slices``).
        labels: class names (``"0:background,1:RV"``, JSON, a JSON file or a mapping); ``msd``: replaces
            ``dataset.json``'s; ``acdc``/``brats``: renames the classes; ``slices``: without it the classes are
            read from the label files.
        patient_regex: patient id = group 1 (or the match) of this regex searched in the case id.
        channel: ``msd``/``nnunet``: the nnU-Net channel (``_0000`` suffix).
        sequence: ``brats``: the image sequence (``t1``, ``t1ce``, ``t2``, ``flair``).
        images_dir, labels_dir: ``slices``: folder names under the input.
        manifest: ``slices``: ``"auto"`` (``<input>/manifest.csv`` when present), a CSV path, or ``None``.
    """

    modality: str | None = None
    labels: Mapping[str, str] | str | None = None
    patient_regex: str | None = None
    channel: int = 0
    sequence: str = "t1ce"
    images_dir: str = "images"
    labels_dir: str = "labels"
    manifest: str | os.PathLike | None = "auto"


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
class Found:
    """What a layout finder returns: the cases, the classes (``labels``, and ``label_map`` from the values in the
    files to class indices), the problems found so far, and datalist header fields (``extra``). With
    ``infer_labels`` the classes are to be read from the label files."""

    cases: list[Case]
    labels: dict[str, str]
    label_map: dict[str, int]
    problems: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    infer_labels: bool = False


#: a layout finder: input folder + options -> the cases found (raises DataPreparationError when nothing is usable)
Finder = Callable[[Path, LayoutOptions], Found]


def require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataPreparationError(f"{what} folder not found: {path}")


def patient_of(case_id: str, regex: str | None, problems: list[str], where: Path) -> str:
    """The patient id of ``case_id`` per ``regex`` (group 1, or the whole match); a mismatch is a problem."""
    if not regex:
        return case_id
    m = re.search(regex, case_id)
    if not m:
        problems.append(f"{where}: name {case_id!r} does not match --patient-regex {regex!r}")
        return case_id
    return m.group(1) if m.groups() else m.group(0)


def apply_options(found: Found, options: LayoutOptions, identity_labels: bool) -> Found:
    """For layouts with fixed patients, modality and classes (ACDC, BraTS): ``--modality`` replaces the modality,
    ``--labels`` renames the classes (``identity_labels``: the label map follows the new names) and
    ``--patient-regex`` re-derives the patient ids (its problems come after the finder's)."""
    if options.modality:
        mod = normalize_modality(options.modality)
        for c in found.cases:
            c.modality = mod
    if options.labels is not None:  # rename the classes; the values stay
        found.labels = parse_labels(options.labels) or found.labels
        if identity_labels:
            found.label_map = identity_map(found.labels)
    if options.patient_regex:
        for c in found.cases:
            c.patient_id = patient_of(c.case_id, options.patient_regex, found.problems, c.image)
    return found


def identity_map(labels: Mapping[str, str]) -> dict[str, int]:
    return {k: int(k) for k in labels}


def suffix(name: str) -> str:
    return name[len(strip_suffix(name)) :]
