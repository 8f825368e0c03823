"""Per-modality intensity normalisation and modality ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from scripts.transforms import ModalityNormalized, ModalityToIndexd, normalize_intensity


def test_ct_window_maps_hounsfield_units():
    hu = np.array([[[-2000.0, -1000.0, 0.0, 1000.0, 3000.0]]], np.float32)
    out = ModalityNormalized()({"image": hu, "modality": "CT"})["image"]
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    out = ModalityNormalized(ct_window=(-160, 240))({"image": hu, "modality": 1})["image"]
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.4, 1.0, 1.0], atol=1e-6)


def test_mri_percentile_scaling_ignores_outliers():
    rng = np.random.RandomState(0)
    img = rng.uniform(100, 500, size=(1, 40, 40)).astype(np.float32)
    img[0, 0, :3] = 1e5  # three hot pixels
    d = ModalityNormalized(mode_key="norm")({"image": img, "modality": "MRI"})
    out = d["image"]
    assert d["norm"] == "percentile"
    assert out.min() == 0 and out.max() == 1
    assert np.percentile(out, 50) > 0.3, "min-max would squash the tissue range to ~0.004"
    mm = normalize_intensity(img, "minmax")[0]
    assert np.percentile(mm, 50) < 0.01


def test_minmax_for_png_slices_and_auto_detection():
    png = (np.arange(64, dtype=np.float32).reshape(1, 8, 8) * 3 + 10).astype(np.float32)  # 8-bit values
    for mod in ("MRI", "CT"):
        d = ModalityNormalized(mode_key="norm")({"image": png, "modality": mod})
        assert d["norm"] == "minmax"
        np.testing.assert_allclose(d["image"], (png - png.min()) / (png.max() - png.min()), atol=1e-6)
    unit = np.linspace(0.2, 0.7, 64, dtype=np.float32).reshape(1, 8, 8)
    assert ModalityNormalized(mode_key="n")({"image": unit, "modality": "MRI"})["n"] == "minmax"
    scanner = np.linspace(0, 3000.5, 64, dtype=np.float32).reshape(1, 8, 8)
    assert ModalityNormalized(mode_key="n")({"image": scanner, "modality": "MRI"})["n"] == "percentile"
    hu = np.linspace(-1024, 400, 64, dtype=np.float32).reshape(1, 8, 8)
    assert ModalityNormalized(mode_key="n")({"image": hu, "modality": "CT"})["n"] == "window"
    forced = ModalityNormalized(mode={"CT": "minmax", "MRI": "none"}, mode_key="n")
    assert forced({"image": hu, "modality": "CT"})["n"] == "minmax"
    np.testing.assert_array_equal(forced({"image": hu, "modality": "MRI"})["image"], hu)


@pytest.mark.parametrize("mode", ["auto", "window", "percentile", "minmax", "none"])
@pytest.mark.parametrize("value", [0.0, 7.0, -500.0])
def test_constant_images_are_finite_float32(mode, value):
    for mod in ("MRI", "CT"):
        x = MetaTensor(torch.full((1, 6, 5), value, dtype=torch.float64), meta={"filename_or_obj": "c.nii"})
        out = ModalityNormalized(mode=mode)({"image": x, "modality": mod})["image"]
        assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert out.meta["filename_or_obj"] == "c.nii"
        if mode in ("minmax", "percentile"):
            assert float(out.abs().max()) == 0.0


def test_bad_input_and_modality_ids():
    nan = MetaTensor(torch.tensor([[[1.0, float("nan")]]]), meta={"filename_or_obj": "/d/broken.png"})
    with pytest.raises(ValueError, match="broken.png"):
        ModalityNormalized()({"image": nan, "modality": "MRI"})
    with pytest.raises(ValueError, match="modality"):
        ModalityNormalized()({"image": np.ones((1, 2, 2))})
    water = {"image": np.zeros((1, 2, 2), np.float32)}
    assert ModalityNormalized(mode="window", default_modality="CT")(water)["image"].max() == 0.5
    with pytest.raises(ValueError, match="mode"):
        ModalityNormalized(mode="zscore")
    t = ModalityToIndexd()
    assert t({"modality": "mri"})["modality"] == 0 and t({"modality": "CT"})["modality"] == 1
    assert t({"modality": np.int64(1)})["modality"] == 1 and t({"modality": torch.tensor(0)})["modality"] == 0
    assert ModalityToIndexd(default="CT")({"image": 1})["modality"] == 1
    with pytest.raises(ValueError, match="unknown modality"):
        t({"modality": "PET"})
    with pytest.raises(KeyError):
        t({})
