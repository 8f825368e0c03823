"""BraTS 2021: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``; ``sequence`` picks the image.

Label 4 (enhancing tumour) is class 3: the map ``{"0": 0, "1": 1, "2": 2, "4": 3}`` is recorded (``--remap-dir``
of ``scripts.data.prepare`` writes remapped label copies).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._readers import DataPreparationError
from ._base import Case, Found, LayoutOptions, apply_options, require_dir

BRATS_LABELS = {"0": "background", "1": "necrotic_tumour_core", "2": "peritumoral_edema", "3": "enhancing_tumour"}
BRATS_LABEL_MAP = {"0": 0, "1": 1, "2": 2, "4": 3}
BRATS_SEQUENCES = ("t1", "t1ce", "t2", "flair")


def find_brats_cases(input_dir: str | os.PathLike, options: LayoutOptions = LayoutOptions()) -> Found:
    """BraTS 2021: ``<subject>/<subject>_{t1,t1ce,t2,flair,seg}.nii.gz``; the image is ``options.sequence``.

    Patient = subject, modality MRI; ``options.modality``, ``labels`` (renames the classes; the label map stays)
    and ``patient_regex`` override them.
    """
    root = Path(input_dir)
    require_dir(root, "input")
    sequence = options.sequence.lower()
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
    found = Found(cases, dict(BRATS_LABELS), dict(BRATS_LABEL_MAP), problems)
    return apply_options(found, options, identity_labels=False)
