"""Small NIfTI helpers shared by the demo generator and the converters.

``save_nifti_deterministic`` writes ``.nii.gz`` files whose bytes depend only on the array, the affine and the
zlib build: the gzip header carries no timestamp (``mtime=0``) and no file name, unlike ``nibabel.save``.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

#: gzip compression level of the files we write (fixed, so that bytes are reproducible)
GZIP_LEVEL = 6

# the process umask (read once): files written via a temporary file get the permissions open() would give
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def make_affine(spacing: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Diagonal affine with the given voxel spacing (mm) and the volume centre at the world origin."""
    aff = np.eye(4)
    for i, (s, n) in enumerate(zip(spacing, shape)):
        aff[i, i] = float(s)
        aff[i, 3] = -0.5 * (int(n) - 1) * float(s)
    return aff


def nifti_bytes(array: np.ndarray, affine: np.ndarray, descrip: str = "") -> bytes:
    """Uncompressed single-file NIfTI-1 bytes of ``array`` (dtype kept) with ``affine`` as sform and qform."""
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr = img.header
    hdr.set_xyzt_units(xyz="mm", t="sec")
    if descrip:
        hdr["descrip"] = descrip.encode("ascii")[:79]
    return img.to_bytes()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_nifti_deterministic(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, descrip: str = "") -> None:
    """Save ``array`` as NIfTI (``.nii`` or ``.nii.gz`` by suffix) with reproducible bytes."""
    raw = nifti_bytes(array, affine, descrip)
    if str(path).endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0)
    atomic_write_bytes(path, raw)
