"""fastMRI single-coil HDF5 reading, zero-filling, cropping, normalisation, bad files and the volume metrics."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from scripts.data.fastmri import FastMRIError, FastMRIOutputd, FastMRIScreen, LoadFastMRId, center_crop, read_fastmri
from scripts.transforms.kspace import ifft2c
from scripts.workflows.volume_metrics import volume_metrics
from tests.fastmri_files import write_fastmri


def _mask(w: int = 40) -> np.ndarray:
    m = np.zeros(w, bool)
    m[::4] = True
    m[w // 2 - 3 : w // 2 + 3] = True
    return m


@pytest.mark.parametrize("as_attr", [False, True])
def test_zero_filled_input_is_the_ifft_of_the_masked_kspace_scaled_by_the_volume_percentile(tmp_path, as_attr):
    path = tmp_path / "case.h5"
    ref = write_fastmri(path, mask=_mask(), mask_as_attr=as_attr)
    d = LoadFastMRId()({"image": str(path)})
    expected = ifft2c(torch.from_numpy(ref["kspace"]) * torch.from_numpy(_mask()).float()).abs()  # (S, H, W)
    scale = float(np.percentile(expected.numpy(), 99.5))
    assert d["scale"] == pytest.approx(scale, rel=1e-6)
    assert d["image"].shape == (1, 48, 40, 3) and d["kspace"].shape == (1, 48, 40, 3) and d["kspace"].is_complex()
    torch.testing.assert_close(d["image"][0].permute(2, 0, 1), expected / scale, atol=1e-5, rtol=1e-4)
    # the k-space is scaled by the same factor: the zero-filled image of the network's k-space is the input image
    torch.testing.assert_close(ifft2c(d["kspace"][0].permute(2, 0, 1)).abs(), expected / scale, atol=1e-5, rtol=1e-4)
    assert torch.equal(d["mask"][0, 0, :, 0], torch.from_numpy(_mask()).float())
    assert "file" in d["fastmri"] and np.diag(d["image"].affine.numpy())[:3].tolist() == [0.5, 0.5, 3.0]


def test_mask_from_non_zero_columns_drawn_mask_and_refusal_on_undersampled_files(tmp_path):
    full, under = tmp_path / "full.h5", tmp_path / "under.h5"
    write_fastmri(full)
    write_fastmri(under, mask=_mask(), target=False)
    h5 = under.with_name("nomask.h5")
    with h5py.File(under) as f, h5py.File(h5, "w") as g:
        g["kspace"] = f["kspace"][()]  # undersampled k-space without its mask
    assert LoadFastMRId()({"image": str(full)})["mask"].min() == 1  # fully sampled
    assert torch.equal(LoadFastMRId()({"image": str(h5)})["mask"][0, 0, :, 0], torch.from_numpy(_mask()).float())
    drawn = LoadFastMRId(undersample=True, accelerations=[4], center_fractions=[0.08])
    a, b = drawn({"image": str(full)}), drawn({"image": str(full)})
    assert torch.equal(a["mask"], b["mask"]) and 0.2 < float(a["mask"].mean()) < 0.35  # seeded per file, ~4x
    assert torch.all(a["kspace"][a["mask"] == 0] == 0)
    with pytest.raises(FastMRIError, match="already undersampled"):
        drawn({"image": str(under)})


def test_crop_to_the_recon_matrix_scale_undone_and_header_or_full_size(tmp_path):
    path = tmp_path / "case.h5"
    ref = write_fastmri(path)
    assert read_fastmri(path)["recon_size"] == (24, 24)
    d = LoadFastMRId()({"image": str(path)})
    d["restored"] = d["image"].clone()
    d["pred"] = torch.zeros(1, 48, 40, 3)
    out = FastMRIOutputd(output_dir=tmp_path / "out")(d)
    assert out["restored"].shape == (1, 24, 24, 3) and out["pred"].shape == (1, 24, 24, 3)
    target = center_crop(np.abs(ref["image"]), (24, 24))  # fully sampled: zero-filled = |image|
    np.testing.assert_allclose(out["restored"][0].permute(2, 0, 1).numpy(), target, rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(target, read_fastmri(path)["target"])
    assert (tmp_path / "out" / "case_fastmri.json").is_file()
    write_fastmri(tmp_path / "nohdr.h5", recon=None)
    assert read_fastmri(tmp_path / "nohdr.h5")["recon_size"] == (48, 40)


def test_bad_files_are_named_with_what_is_wrong(tmp_path):
    missing, fourd, real, text = (tmp_path / n for n in ("nokspace.h5", "multicoil.h5", "real.h5", "text.h5"))
    with h5py.File(missing, "w") as f:
        f["reconstruction_esc"] = np.zeros((2, 4, 4), np.float32)
    with h5py.File(fourd, "w") as f:
        f["kspace"] = np.zeros((2, 3, 8, 8), np.complex64)
    with h5py.File(real, "w") as f:
        f["kspace"] = np.zeros((2, 8, 8), np.float32)
    text.write_text("not hdf5")
    with pytest.raises(FastMRIError, match=rf"{missing}: no 'kspace' dataset \(found: \['reconstruction_esc'\]\)"):
        read_fastmri(missing)
    with pytest.raises(FastMRIError, match=rf"{fourd}: 'kspace' has shape \(2, 3, 8, 8\) \(multi-coil.*single-coil"):
        read_fastmri(fourd)
    with pytest.raises(FastMRIError, match=rf"{real}: 'kspace' is float32, not complex"):
        read_fastmri(real)
    with pytest.raises(FastMRIError, match=rf"{text}: cannot be read as HDF5"):
        read_fastmri(text)
    good = tmp_path / "good.h5"
    write_fastmri(good)
    screen = FastMRIScreen([{"image": str(p)} for p in (good, missing, fourd, real, text)])
    assert screen.good == [{"image": str(good)}] and len(screen.errors) == 4
    assert all(str(p) in e for p, e in zip((missing, fourd, real, text), screen.errors))


def test_volume_metrics_two_conventions():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.random((1, 16, 16, 3)).astype(np.float32)) * 5e-4
    m = volume_metrics(target + 1e-5 * torch.from_numpy(rng.standard_normal(target.shape).astype(np.float32)), target)
    mse = 1e-5**2
    assert m["val_psnr_volume"] == pytest.approx(10 * np.log10(float(target.max()) ** 2 / mse), abs=0.2)
    assert m["val_psnr"] == pytest.approx(m["val_psnr_volume"], abs=1.0)  # per-slice maxima ~ the volume max here
    assert 0.9 < m["val_ssim"] <= 1 and 0.9 < m["val_ssim_volume"] <= 1
    assert volume_metrics(target, target)["val_ssim_volume"] == pytest.approx(1.0)
