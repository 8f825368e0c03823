"""Built-in demo data: the synthetic phantoms of ``scripts.data.phantoms``, written once into a cache folder.

The main job trains on these volumes without any download. ``ensure_demo_data(root)`` generates them on first
use into a cache folder, writes a MONAI decathlon-style ``datalist.json`` and a ``demo_manifest.json`` (the
generation parameters and the SHA-256 of every file), and afterwards reuses them as long as the manifest
matches the requested parameters and the files are intact. What the phantoms look like and what their 4 label
classes mean: ``scripts/data/phantoms.py``.

CLI: ``python -m scripts.data.demo --root DIR [--num-cases 8] [--seed 0] [--force]`` (run from ``bundle/``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._nifti import atomic_write_bytes, make_affine, save_nifti_deterministic
from .datalist import assemble_datalist, datalist_item, write_datalist
from .phantoms import DEMO_LABEL_DESCRIPTIONS, DEMO_LABELS, DEMO_MODALITIES, DEMO_SPACING, generate_phantom

__all__ = [
    "DEMO_LABELS",
    "DEMO_LABEL_DESCRIPTIONS",
    "DEMO_MODALITIES",
    "DEMO_SPACING",
    "GENERATOR_VERSION",
    "default_demo_root",
    "ensure_demo_data",
    "generate_phantom",
    "main",
]

#: bump when the generator's output changes, so that caches made by an older version are regenerated
GENERATOR_VERSION = 2

DATALIST_NAME = "datalist.json"
MANIFEST_NAME = "demo_manifest.json"
ENV_ROOT = "VLDUN_DEMO_ROOT"


def default_demo_root() -> Path:
    """Cache folder used when no root is given: ``$VLDUN_DEMO_ROOT``, else ``<bundle>/.cache/demo_data``."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / ".cache" / "demo_data"


# ----------------------------------------------------------------------------------------------- cache
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Inter-process lock on ``root`` (POSIX ``flock``; a no-op where that is unavailable)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    if n < 3:
        return 0, 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    while n - n_test - n_val < 1:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _params(num_cases, seed, shape, modalities, val_fraction, test_fraction) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "num_cases": int(num_cases),
        "seed": int(seed),
        "shape": [int(s) for s in shape],
        "modalities": [m.upper() for m in modalities],
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
    }


def _cache_valid(root: Path, params: dict[str, Any]) -> bool:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params or not isinstance(manifest.get("files"), dict):
        return False
    for rel, digest in manifest["files"].items():
        p = root / rel
        if not p.is_file() or _sha256(p) != digest:
            return False
    return DATALIST_NAME in manifest["files"]


def _generate(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    shape = tuple(params["shape"])
    mods = params["modalities"]
    cases: list[dict[str, Any]] = []
    for k in range(params["num_cases"]):
        mod = mods[k % len(mods)]
        idx = k // len(mods)
        case_id = f"demo_{mod.lower()}_{idx:03d}"
        image, label, spacing, info = generate_phantom(mod, params["seed"], idx, shape)
        affine = make_affine(spacing, shape)
        img_rel, lab_rel = f"imagesTr/{case_id}.nii.gz", f"labelsTr/{case_id}.nii.gz"
        save_nifti_deterministic(root / img_rel, image, affine, descrip=f"VL-DUN demo {mod} phantom")
        save_nifti_deterministic(root / lab_rel, label, affine, descrip="VL-DUN demo label")
        cases.append(
            {
                "case_id": case_id,
                "modality": mod,
                "index": idx,
                "image": img_rel,
                "label": lab_rel,
                "spacing": [float(s) for s in spacing],
                "info": info,
            }
        )
    # split per modality: the last case(s) of each modality go to test, the ones before to validation
    split_of: dict[str, str] = {}
    for mod in mods:
        ids = [c["case_id"] for c in cases if c["modality"] == mod]
        n_val, n_test = _split_counts(len(ids), params["val_fraction"], params["test_fraction"])
        for i, cid in enumerate(ids):
            split_of[cid] = (
                "test" if i >= len(ids) - n_test else "validation" if i >= len(ids) - n_test - n_val else "training"
            )
    items = []
    for c in cases:
        meta = {"patient_id": c["case_id"], "source": "demo", "shape": list(shape), "spacing": c["spacing"]}
        items.append((split_of[c["case_id"]], datalist_item(c["image"], c["label"], c["modality"], c["case_id"], meta)))
    header: dict[str, Any] = {
        "name": "VL-DUN demo phantoms",
        "description": "Synthetic MRI-like (cardiac) and CT-like (chest) 3D phantoms generated by scripts.data.demo",
        "reference": "synthetic; see bundle/docs/data.md",
        "licence": "Apache-2.0 (synthetic data)",
        "tensorImageSize": "3D",
        "modality": {str(i): m for i, m in enumerate(mods)},
        "labels": dict(DEMO_LABELS),
        "label_descriptions": {m: DEMO_LABEL_DESCRIPTIONS[m] for m in mods},
        "num_classes": len(DEMO_LABELS),
        "generator": params,
    }
    write_datalist(root / DATALIST_NAME, assemble_datalist(header, items))
    files = {c[key]: _sha256(root / c[key]) for c in cases for key in ("image", "label")}
    files[DATALIST_NAME] = _sha256(root / DATALIST_NAME)
    return {
        "params": params,
        "files": files,
        "cases": {
            c["case_id"]: {"modality": c["modality"], "split": split_of[c["case_id"]], **c["info"]} for c in cases
        },
    }


def ensure_demo_data(
    root: str | os.PathLike | None = None,
    num_cases: int = 8,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 12),
    modalities: Sequence[str] = DEMO_MODALITIES,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    force: bool = False,
) -> str:
    """Generate the demo phantoms into ``root`` unless a valid cache is there; return ``<root>/datalist.json``.

    Args:
        root: cache folder (created if needed). ``None``: :func:`default_demo_root` (``$VLDUN_DEMO_ROOT`` or
            ``bundle/.cache/demo_data``, which git ignores).
        num_cases: total number of volumes; modalities alternate (case k has ``modalities[k % M]``).
        seed: random seed; the same seed gives byte-identical files.
        shape: volume shape ``(x, y, z)``; geometry scales with x and y.
        modalities: subset of ``("MRI", "CT")``.
        val_fraction, test_fraction: per-modality share of cases for validation and test (each at least one
            case when a modality has 3 or more cases; the last cases of each modality are test).
        force: regenerate even if the cache is valid.

    The cache is reused when ``demo_manifest.json`` records the same parameters and every file listed there
    exists with the recorded SHA-256; otherwise the folder's demo files are regenerated. Returns the path as
    ``str`` so it can go straight into a bundle config.
    """
    root = Path(root) if root is not None else default_demo_root()
    mods = [m.upper() for m in modalities]
    if not mods or any(m not in DEMO_MODALITIES for m in mods) or len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be distinct entries of {list(DEMO_MODALITIES)}, got {list(modalities)}")
    if int(num_cases) < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in [0, 1) with a sum below 1")
    params = _params(num_cases, seed, shape, mods, val_fraction, test_fraction)
    with _locked(root):
        if not force and _cache_valid(root, params):
            return str(root / DATALIST_NAME)
        # remove what an older manifest wrote (so stale cases do not linger), then regenerate
        with contextlib.suppress(OSError, ValueError):
            old = json.loads((root / MANIFEST_NAME).read_text())
            for rel in old.get("files", {}):
                p = (root / rel).resolve()
                if root.resolve() in p.parents and p.is_file():
                    p.unlink()
        (root / MANIFEST_NAME).unlink(missing_ok=True)
        for sub in ("imagesTr", "labelsTr"):
            if (root / sub).is_dir() and not any((root / sub).iterdir()):
                shutil.rmtree(root / sub)
        manifest = _generate(root, params)
        atomic_write_bytes(root / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())
    return str(root / DATALIST_NAME)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.data.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help=f"cache folder (default: ${ENV_ROOT} or bundle/.cache/demo_data)")
    p.add_argument("--num-cases", type=int, default=8, help="number of volumes, modalities alternate (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 12), metavar=("X", "Y", "Z"))
    p.add_argument("--modalities", nargs="+", default=list(DEMO_MODALITIES), choices=["MRI", "CT", "mri", "ct"])
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--force", action="store_true", help="regenerate even if a valid cache exists")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    path = ensure_demo_data(
        a.root, a.num_cases, a.seed, a.shape, a.modalities, a.val_fraction, a.test_fraction, force=a.force
    )
    dl = json.loads(Path(path).read_text())
    print(
        f"{path}: training {dl['numTraining']}, validation {dl['numValidation']}, test {dl['numTest']} "
        f"({time.perf_counter() - t0:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
