"""Per-modality intensity normalisation and modality ids."""

from __future__ import annotations

from pathlib import Path

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


def _restore(raw, restored_norm, modality="CT", **kwargs):
    """Normalise ``raw`` as inference.json does, record the map, then map ``restored_norm`` back."""
    from scripts.transforms import RestoreInputUnitsd
    from scripts.workflows.outputs import RecordIntensityMapd

    d = {"image": raw, "image_raw": raw.clone(), "modality": modality}
    d = ModalityNormalized()(d)
    d = RecordIntensityMapd(delete_raw=False)(d)
    d["restored"] = restored_norm(d["image"]) if callable(restored_norm) else restored_norm
    out = RestoreInputUnitsd(**kwargs)(d)
    assert "image_raw" not in out
    return out["restored"]


def test_restored_ct_keeps_what_the_window_cut_and_stays_within_the_input_range():
    hu = torch.tensor([[[-1024.0, -600.0, 0.0, 400.0, 999.0, 3071.0]]])
    # an identity restoration gives the input back exactly, including above and below the -1000..1000 HU window
    np.testing.assert_allclose(_restore(hu, lambda n: n.clone()), hu, atol=1e-3)
    # a restoration that overshoots: de-normalised inside the window (-0.3 -> -1600 HU), clipped to the input range
    over = torch.tensor([[[0.1, -0.3, 0.5, 1.4, 0.9, 1.0]]])
    out = _restore(hu, over)
    np.testing.assert_allclose(out[0, 0].tolist(), [-1024.0, -1024.0, 0.0, 1800.0, 800.0, 3071.0], atol=1e-2)
    plain = _restore(hu, over, clip_to_input=False, pass_through_cut=False)
    assert float(plain.max()) < 3071 and float(plain.min()) < -1024  # what the old linear inverse gave


def test_restored_mri_is_clipped_to_the_input_range_and_a_constant_image_comes_back():
    rng = np.random.RandomState(0)
    raw = torch.as_tensor(rng.randint(0, 224, size=(1, 16, 16)).astype(np.float32))
    out = _restore(raw, lambda n: n * 1.2 - 0.1, modality="MRI")  # overshoots both ends, as a network may
    assert float(out.min()) >= 0.0 and float(out.max()) <= 223.0
    const = torch.full((1, 8, 8), 100.0)
    np.testing.assert_allclose(_restore(const, lambda n: n.clone(), modality="MRI"), const)
    meta = MetaTensor(raw.clone(), meta={"filename_or_obj": "m.nii"})
    kept = _restore(meta, lambda n: n.clone(), modality="MRI")
    assert isinstance(kept, MetaTensor) and kept.dtype == torch.float32


def test_hounsfield_data_processed_as_mri_get_a_warning_naming_the_file(caplog):
    hu = MetaTensor(torch.linspace(-1024, 1500, 400).reshape(1, 20, 20), meta={"filename_or_obj": "/d/chest.nii.gz"})
    with caplog.at_level("WARNING", logger="scripts.transforms.intensity"):
        ModalityNormalized()({"image": hu, "modality": "MRI"})
    assert any("chest.nii.gz" in r.message and "looks like CT" in r.message for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="scripts.transforms.intensity"):
        ModalityNormalized()({"image": hu, "modality": "CT"})
        ModalityNormalized()({"image": torch.rand(1, 20, 20) * 900, "modality": "MRI"})
        ModalityNormalized(ct_hint_below=None)({"image": hu, "modality": "MRI"})
    assert not caplog.records, caplog.text


def test_inference_config_gives_ct_back_in_hounsfield_units(tmp_path):
    """inference.json's own pre- and postprocessing, with an identity restoration in place of the network."""
    import nibabel as nib
    from monai.bundle import ConfigParser

    bundle = Path(__file__).resolve().parents[1] / "bundle"
    hu = np.linspace(-1024, 3071, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(path))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle), "modality": "CT", "output_dir": str(tmp_path / "out")})
    d = parser.get_parsed_content("preprocessing")({"image": str(path)})
    d["pred"] = {"seg": torch.zeros((4, 8, 8, 3)), "restored": d["image"].clone()}
    post = parser.get_parsed_content("postprocessing")
    out = post(d)
    restored = np.asarray(nib.load(out["result"]["restored"]).dataobj)
    np.testing.assert_allclose(restored, hu, atol=0.05)
