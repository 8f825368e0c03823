"""Load any prepared dataset as 2D slices at S x S, following ``../shared/design/benchmark-protocol.md``.

Sources (``load_slices(source, size)``):

- a **2D slice folder** ``<dir>/images/*.png`` + ``<dir>/labels/*.png`` (the layout of ``../shared/data/acdc``):
  it is turned into a datalist in memory by ``scripts.data.prepare.prepare_datalist("slices", ...)``, with the
  options of ``scripts.data.prepare.SLICE_PRESETS`` (``acdc``, ``covid``, ``covid-multiclass``) when the folder
  is one of the shared evaluation sets (or ``preset=`` names one), so the split is the protocol's;
- a **datalist JSON** (MONAI decathlon style, as written by ``python -m scripts.data.prepare``): ``training`` +
  ``validation`` items train, ``test`` items (or ``validation`` when there is no ``test`` list) are the test
  part. Items may be 2D PNG slices or 3D NIfTI volumes; volumes are cut into 2D slices along ``slice_axis``.

Every slice is resized to S x S (scikit-image ``resize``; images: bilinear with anti-aliasing, labels: nearest)
and the image is then min-max scaled to [0, 1] per slice (a constant slice becomes zeros).
Test slices are ordered by (case id, slice number); their position in that order is the ``slice index`` of the
protocol's fixed-mask seed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SliceSet",
    "LoadedDataset",
    "load_slices",
    "preprocess_slice",
    "guess_preset",
    "read_image",
    "validation_split",
]


@dataclass
class SliceSet:
    """Preprocessed slices of one split: ``images`` (N, S, S) float32 in [0, 1], ``labels`` (N, S, S) int64."""

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    modalities: list[str]
    groups: list[str] = field(default_factory=list)  # patient (or case) of each slice, for paired statistics

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class LoadedDataset:
    name: str
    source: str
    train: SliceSet
    test: SliceSet
    class_names: list[str]  # index = class id, [0] = background
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def modality(self) -> str:
        mods = sorted(set(self.train.modalities) | set(self.test.modalities))
        return mods[0] if len(mods) == 1 else "/".join(mods)


def guess_preset(folder: str | os.PathLike) -> str | None:
    """``scripts.data.prepare.SLICE_PRESETS`` entry for a shared evaluation folder, from its name."""
    name = Path(folder).resolve().name.lower()
    if name == "acdc" or name.startswith("acdc"):
        return "acdc"
    if name.startswith("covid"):
        return "covid"
    return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """PNG (as stored, 2D) or NIfTI (with scaling) as a float32/int numpy array."""
    p = str(path)
    if p.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asanyarray(nib.load(p).dataobj)
    from PIL import Image

    with Image.open(p) as im:
        arr = np.array(im)
    if arr.ndim == 3:  # RGB(A) PNG: luminance of the colour channels
        arr = arr[..., :3].astype(np.float32).mean(-1)
    return arr


def preprocess_slice(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Protocol preprocessing of one 2D slice: resize to ``size``² (bilinear + anti-aliasing / nearest), min-max.

    scikit-image ``resize``: images with ``order=1, anti_aliasing=True`` (Gaussian pre-filter with reflected
    borders, so a constant image stays constant), labels with ``order=0`` (nearest, no new values); both use the
    same pixel-centre alignment, so image and label stay registered.
    """
    from skimage.transform import resize

    img = resize(np.asarray(image, dtype=np.float64), (size, size), order=1, mode="reflect", anti_aliasing=True)
    lab = resize(np.asarray(label), (size, size), order=0, mode="edge", anti_aliasing=False, preserve_range=True)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi - lo > 1e-12 * max(1.0, abs(hi)) else np.zeros_like(img)
    return img.astype(np.float32), np.rint(lab).astype(np.int64)


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _datalist_from_folder(folder: Path, preset: str | None, modality: str | None) -> dict[str, Any]:
    from scripts.data.prepare import SLICE_PRESETS, prepare_datalist

    preset = preset or guess_preset(folder)
    kw: dict[str, Any] = dict(SLICE_PRESETS.get(preset, {})) if preset else {}
    if modality:
        kw["modality"] = modality
    if not kw.get("modality"):
        raise ValueError(
            f"{folder}: a slice folder that is not one of the shared sets needs a modality (--modality MRI|CT) "
            f"or a preset (one of {sorted(SLICE_PRESETS)})."
        )
    # protocol: everything that is not test trains (the benchmark selects no checkpoint, so no validation part)
    return prepare_datalist("slices", folder, None, val_fraction=0.0, **kw)


def _label_lut(datalist: Mapping[str, Any]) -> dict[int, int] | None:
    if not datalist.get("label_remap_required"):
        return None
    return {int(k): int(v) for k, v in datalist.get("label_map", {}).items()}


def _slices_of_item(item: Mapping[str, Any], base: Path, slice_axis: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    def _abs(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    img = read_image(_abs(item["image"]))
    lab = read_image(_abs(item["label"]))
    cid = str(item.get("case_id") or Path(str(item["image"])).name.split(".")[0])
    img, lab = np.squeeze(img), np.squeeze(lab)
    if img.shape != lab.shape:
        raise ValueError(f"{item['image']}: image {img.shape} and label {lab.shape} shapes differ.")
    if img.ndim == 2:
        return [(cid, img, lab)]
    if img.ndim != 3:
        raise ValueError(f"{item['image']}: expected a 2D slice or a 3D volume, got shape {img.shape}.")
    img, lab = np.moveaxis(img, slice_axis, 0), np.moveaxis(lab, slice_axis, 0)
    return [(f"{cid}_z{z:03d}", img[z], lab[z]) for z in range(img.shape[0])]


def _build(items: Sequence[Mapping[str, Any]], base: Path, size: int, slice_axis: int, lut, default_mod: str):
    rows = []
    for item in items:
        mod = str(item.get("modality") or default_mod)
        meta = item.get("metadata") if isinstance(item.get("metadata"), Mapping) else {}
        group = str(meta.get("patient_id") or item.get("case_id") or Path(str(item["image"])).name.split(".")[0])
        for sid, img, lab in _slices_of_item(item, base, slice_axis):
            rows.append((sid, img, lab, mod, group))
    rows.sort(key=lambda r: _natural_key(r[0]))
    images, labels = [], []
    for _, img, lab, _, _ in rows:
        if lut is not None:
            out = np.zeros(lab.shape, np.int64)
            for src, dst in lut.items():
                out[lab == src] = dst
            lab = out
        im, lb = preprocess_slice(img, lab, size)
        images.append(im)
        labels.append(lb)
    if not rows:
        return SliceSet(np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.int64), [], [], [])
    return SliceSet(
        np.stack(images), np.stack(labels), [r[0] for r in rows], [r[3] for r in rows], [r[4] for r in rows]
    )


def load_slices(
    source: str | os.PathLike,
    size: int,
    preset: str | None = None,
    modality: str | None = None,
    name: str | None = None,
    slice_axis: int = -1,
) -> LoadedDataset:
    """Load a slice folder or a datalist JSON as preprocessed train / test slices (see the module docstring)."""
    src = Path(source)
    if src.is_dir():
        datalist = _datalist_from_folder(src, preset, modality)
        base = src
        default_name = src.resolve().name
    elif src.is_file() and src.suffix.lower() == ".json":
        datalist = json.loads(src.read_text())
        base = src.resolve().parent
        default_name = src.stem
    else:
        raise FileNotFoundError(f"{source}: not a slice folder (images/ + labels/) nor a datalist JSON.")
    train_items = list(datalist.get("training", [])) + list(datalist.get("validation", []))
    test_items = list(datalist.get("test", []))
    if not test_items:  # a datalist without a test list: its validation part is the held-out part
        train_items = list(datalist.get("training", []))
        test_items = list(datalist.get("validation", []))
    if not train_items or not test_items:
        raise ValueError(f"{source}: need both training and test items (got {len(train_items)} / {len(test_items)}).")
    mods = datalist.get("modality")
    default_mod = modality or (next(iter(mods.values())) if isinstance(mods, Mapping) and mods else "MRI")
    lut = _label_lut(datalist)
    train = _build(train_items, base, size, slice_axis, lut, default_mod)
    test = _build(test_items, base, size, slice_axis, lut, default_mod)
    labels = datalist.get("labels")
    if isinstance(labels, Mapping) and labels:
        k = max(int(i) for i in labels) + 1
        class_names = [str(labels.get(str(i), f"class_{i}")) for i in range(k)]
    else:
        k = int(max(train.labels.max(), test.labels.max())) + 1
        class_names = ["background"] + [f"class_{i}" for i in range(1, k)]
    k_seen = int(max(train.labels.max(), test.labels.max())) + 1
    if k_seen > len(class_names):
        raise ValueError(f"{source}: label value {k_seen - 1} is outside the declared classes {class_names}.")
    info = {
        "train_cases": len(train_items),
        "test_cases": len(test_items),
        "train_slices": len(train),
        "test_slices": len(test),
        "split": datalist.get("split", {}),
    }
    return LoadedDataset(name or default_name, str(source), train, test, class_names, info)


def _subset(s: SliceSet, keep: Sequence[int]) -> SliceSet:
    idx = list(keep)
    return SliceSet(
        s.images[idx],
        s.labels[idx],
        [s.ids[i] for i in idx],
        [s.modalities[i] for i in idx],
        [s.groups[i] for i in idx] if s.groups else [],
    )


def validation_split(data: LoadedDataset, every: int = 5) -> LoadedDataset:
    """Hold out every ``every``-th training patient (natural order of patient ids) as the evaluation part.

    Settings (loss weights, budgets) are chosen on this split, so that the test patients are only used for the
    final tables. The test slices are not touched.
    """
    groups = data.train.groups or data.train.ids
    names = sorted(set(groups), key=_natural_key)
    if len(names) < 2:
        raise ValueError(f"{data.source}: a validation split needs at least 2 training patients, got {len(names)}.")
    held = set(names[:: max(int(every), 2)])
    val = [i for i, g in enumerate(groups) if g in held]
    train = [i for i, g in enumerate(groups) if g not in held]
    info = dict(data.info, split_part="validation", validation_patients=sorted(held, key=_natural_key))
    info.update(train_slices=len(train), test_slices=len(val))
    return LoadedDataset(
        data.name, data.source, _subset(data.train, train), _subset(data.train, val), data.class_names, info
    )
