"""Tiny synthetic fastMRI-style single-coil HDF5 files for the tests (a phantom with a smooth phase; no real data)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

HEADER = (
    '<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
    "<encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize>"
    "<fieldOfView_mm><x>{fh}</x><y>{fw}</y><z>3.0</z></fieldOfView_mm></encodedSpace>"
    "<reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>"
    "<fieldOfView_mm><x>{rh}</x><y>{rw}</y><z>3.0</z></fieldOfView_mm></reconSpace></encoding></ismrmrdHeader>"
)


def phantom(slices: int = 3, shape: tuple[int, int] = (48, 40), seed: int = 0) -> np.ndarray:
    """(slices, H, W) complex64 image: ellipses of different intensities per slice, with a smooth phase."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    out = np.zeros((slices, h, w), np.complex64)
    for s in range(slices):
        img = np.zeros((h, w), np.float32)
        for _ in range(4):
            cy, cx, ry, rx = (
                rng.uniform(-0.3, 0.3),
                rng.uniform(-0.3, 0.3),
                rng.uniform(0.1, 0.4),
                rng.uniform(0.1, 0.4),
            )
            img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] += rng.uniform(0.2, 1.0)
        out[s] = img * np.exp(1j * (0.5 * yy + 0.3 * xx))
    return out * 1e-4  # raw k-space units are far from [0, 1]


def write_fastmri(
    path: str | Path,
    slices: int = 3,
    shape: tuple[int, int] = (48, 40),
    recon: tuple[int, int] | None = (24, 24),
    mask: np.ndarray | None = None,
    mask_as_attr: bool = False,
    target: bool = True,
    seed: int = 0,
) -> dict:
    """Write a file; returns its image, k-space and mask (the k-space is stored masked when a mask is given)."""
    from scripts.transforms.kspace import fft2c

    image = phantom(slices, shape, seed)
    kspace = fft2c(torch.from_numpy(image)).numpy().astype(np.complex64)
    if mask is not None:
        kspace = kspace * mask[None, None, :].astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if mask is not None:
            if mask_as_attr:
                f.attrs["mask"] = mask
            else:
                f.create_dataset("mask", data=mask)
        if recon is not None:
            h, w = shape
            f.create_dataset(
                "ismrmrd_header",
                data=HEADER.format(
                    H=h, W=w, fh=h * 0.5, fw=w * 0.5, h=recon[0], w=recon[1], rh=recon[0] * 0.5, rw=recon[1] * 0.5
                ),
            )
            if target:
                h0, w0 = (h - recon[0]) // 2, (w - recon[1]) // 2
                f.create_dataset("reconstruction_esc", data=np.abs(image)[:, h0 : h0 + recon[0], w0 : w0 + recon[1]])
        f.attrs["acquisition"] = "CORPD_FBK"
    return {"image": image, "kspace": kspace, "mask": mask}
