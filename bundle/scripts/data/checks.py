"""Checks of the cases a layout finder found, before they go into a datalist: readable, untruncated files (headers
only), matching image/label shapes, single-channel labels, label values within the declared classes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._readers import DataPreparationError, ImageInfo, label_values, read_info
from .layouts import Case

__all__ = ["raise_problems", "validate_cases"]

logger = logging.getLogger(__name__)


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


def raise_problems(problems: Sequence[str], where: Path, limit: int = 50) -> None:
    """Raise one :class:`DataPreparationError` listing ``problems`` (the first ``limit``) found in ``where``."""
    if not problems:
        return
    shown = "\n".join(f"  - {p}" for p in problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    raise DataPreparationError(f"{len(problems)} problem(s) in {where}:\n{shown}{more}")
