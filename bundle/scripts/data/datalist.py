"""MONAI decathlon-style datalists, shared by the converters (``prepare``) and the demo generator (``demo``).

- :func:`split_patients`: the reproducible patient-wise training/validation/test split of ``prepare``.
- :func:`datalist_item` / :func:`assemble_datalist` / :func:`write_datalist`: one item per case (``image``,
  ``label``, ``modality``, ``case_id``, ``metadata``), the datalist (header fields, ``numTraining`` /
  ``numValidation`` / ``numTest``, ``training``, ``validation`` and ``test`` when it has items, since MONAI's
  ``load_decathlon_datalist`` cannot read an empty one), written atomically as indented JSON.
- :func:`harmonise`: one key set and value type per ``metadata`` key, so that batches collate.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._nifti import atomic_write_bytes
from ._readers import DataPreparationError

__all__ = ["SPLITS", "assemble_datalist", "datalist_item", "harmonise", "split_patients", "write_datalist"]

#: the datalist's split lists, in their order in the file
SPLITS = ("training", "validation", "test")


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
def datalist_item(image: str, label: str, modality: str, case_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """One datalist entry (paths as they go into the file)."""
    return {"image": image, "label": label, "modality": modality, "case_id": case_id, "metadata": metadata}


def assemble_datalist(header: Mapping[str, Any], items: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The datalist: ``header``'s fields, then the counts and the split lists of ``items`` (``(split, item)``
    pairs, in order; ``split`` one of :data:`SPLITS`). ``test`` is left out when empty."""
    lists: dict[str, list[dict[str, Any]]] = {k: [] for k in SPLITS}
    for split, item in items:
        lists[split].append(item)
    datalist: dict[str, Any] = {
        **header,
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        "training": lists["training"],
        "validation": lists["validation"],
    }
    if lists["test"]:  # monai's load_decathlon_datalist cannot read an empty "test" list
        datalist["test"] = lists["test"]
    return datalist


def write_datalist(path: str | os.PathLike, datalist: Mapping[str, Any]) -> None:
    """Write ``datalist`` to ``path`` as indented JSON, atomically (a reader never sees a partial file)."""
    atomic_write_bytes(path, (json.dumps(datalist, indent=2) + "\n").encode())


def harmonise(items: list[dict[str, Any]]) -> None:
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
