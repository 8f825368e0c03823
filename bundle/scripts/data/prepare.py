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

Each layout is a finder in :mod:`scripts.data.layouts` (one signature, registered in ``LAYOUTS``); the checks
are in :mod:`scripts.data.checks`, the split and the datalist writer (shared with the demo generator) in
:mod:`scripts.data.datalist`. Every case is checked: a label exists for each image, image and label shapes agree
(read from headers), files are readable and not truncated, and label values belong to the declared classes. All
problems are reported
together in one :class:`DataPreparationError` naming the files.

The split is patient-wise and reproducible: patients are ordered by ``sha256(f"{seed}:{patient_id}")`` and the
first ones go to test, the next ones to validation (so the order of the others does not depend on which other
patients exist). ``--test-ids`` (patient ids or
their trailing numbers, e.g. ``013``) or ``--test-pattern`` (glob on case or patient id, e.g. ``'test_*'``)
fix the test set instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._nifti import save_nifti_deterministic
from ._readers import DataPreparationError, read_array
from .checks import raise_problems, validate_cases
from .datalist import SPLITS, assemble_datalist, datalist_item, harmonise, split_patients, write_datalist
from .layouts import (
    BRATS_LABEL_MAP,
    BRATS_SEQUENCES,
    LAYOUTS,
    SLICE_PRESETS,
    Case,
    LayoutOptions,
    get_finder,
    normalize_modality,
    parse_labels,
)

# the layouts' names that callers of this module use (finders and options: scripts.data.layouts)
__all__ = [
    "BRATS_LABEL_MAP",
    "LAYOUTS",
    "SLICE_PRESETS",
    "DataPreparationError",
    "main",
    "normalize_modality",
    "parse_labels",
    "prepare_datalist",
    "split_patients",
    "validate_cases",
]

logger = logging.getLogger(__name__)


def _identity(label_map: Mapping[str, int]) -> bool:
    return all(int(k) == v for k, v in label_map.items())


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

    The layout options (``modality`` ... ``manifest``, see :class:`LayoutOptions`) go to the layout's finder.
    Paths in the datalist are relative to the folder of ``output`` (MONAI's ``load_decathlon_datalist``
    default base dir), or absolute with ``absolute_paths`` or when ``output`` is ``None``. Raises
    :class:`DataPreparationError` listing every problem found. See the module docstring for the layouts.
    """
    t0 = time.perf_counter()
    layout = layout.lower()
    root = Path(input_dir)
    if isinstance(test_ids, str):
        test_ids = [t for t in re.split(r"[,\s]+", test_ids) if t]
    options = LayoutOptions(modality, labels, patient_regex, channel, sequence, images_dir, labels_dir, manifest)
    found = get_finder(layout)(root, options)
    problems = list(found.problems)
    counts = Counter(c.case_id for c in found.cases)
    dup = {cid for cid, n in counts.items() if n > 1}
    problems += [f"duplicate case id {d!r}" for d in sorted(dup)]
    allowed = None if found.infer_labels else [int(k) for k in found.label_map]
    infos, more, seen = validate_cases([c for c in found.cases if c.case_id not in dup], allowed, check_values)
    problems += more
    raise_problems(problems, root)
    if found.infer_labels:
        if not check_values:
            raise DataPreparationError(
                "without --labels the classes are read from the label files: drop --no-check-values"
            )
        found.labels = {str(v): ("background" if v == 0 else f"class_{v}") for v in range(max(seen | {0}) + 1)}
        found.label_map = {k: int(k) for k in found.labels}
    by_patient: dict[str, list[str]] = {}
    for c in found.cases:
        by_patient.setdefault(c.patient_id, []).append(c.case_id)
    split = split_patients(list(by_patient), val_fraction, test_fraction, seed, test_ids, test_pattern, by_patient)
    relabelled = False
    if remap_dir is not None and not _identity(found.label_map):
        _remap_labels(found.cases, found.label_map, Path(remap_dir))
        relabelled = True

    out_path = Path(output) if output is not None else None
    base = None if (absolute_paths or out_path is None) else os.path.dirname(os.path.abspath(out_path))

    def _p(path: Path) -> str:
        ap = os.path.abspath(path)
        return ap if base is None else os.path.relpath(ap, base)

    items = []
    for c in found.cases:
        assert c.label is not None
        meta = {"patient_id": c.patient_id, "source": f"{layout}:{os.path.relpath(c.image, root)}"}
        meta.update(infos[c.case_id])
        meta.update(c.meta)
        items.append((split[c.patient_id], datalist_item(_p(c.image), _p(c.label), c.modality, c.case_id, meta)))
    harmonise([it for _, it in items])
    ndim = {len(it["metadata"]["shape"]) for _, it in items}
    fixed_test = bool(test_ids or test_pattern)
    header: dict[str, Any] = {
        "name": found.extra.pop("name", f"{layout} datalist of {root.name}"),
        "description": found.extra.pop("description", f"prepared by scripts.data.prepare from the {layout} layout"),
        **found.extra,
        "layout": layout,
        "input_dir": os.path.abspath(root),
        "tensorImageSize": "2D" if ndim == {2} else "3D",
        "modality": {str(i): m for i, m in enumerate(sorted({c.modality for c in found.cases}))},
        "labels": found.labels,
        "num_classes": max(int(k) for k in found.labels) + 1,
        "label_map": {k: int(v) for k, v in found.label_map.items()},
        "label_remap_required": not _identity(found.label_map) and not relabelled,
        "split": {
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": None if fixed_test else test_fraction,
            "test_ids": sorted(p for p, s in split.items() if s == "test") if fixed_test else None,
            "test_pattern": test_pattern,
            "patients": {k: sorted(p for p, s in split.items() if s == k) for k in SPLITS},
        },
    }
    datalist = assemble_datalist(header, items)
    if relabelled:
        datalist["labels_remapped_to"] = str(Path(remap_dir).resolve())
    if out_path is not None:
        write_datalist(out_path, datalist)
    logger.info(
        "%s: %d cases from %d patients -> training %d cases / %d patients, validation %d / %d, test %d / %d (%.1f s)",
        out_path or "datalist",
        len(items),
        len(by_patient),
        *(x for k in SPLITS for x in (len(datalist.get(k, [])), len(header["split"]["patients"][k]))),
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
