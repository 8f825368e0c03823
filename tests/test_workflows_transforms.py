"""Workflow glue transforms (``scripts.workflows.slices`` / ``outputs``, old ``transforms`` path) and the slice-by-slice
inferer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandGaussianNoised

from scripts.transforms import KspaceUndersampled, sample_seed
from scripts.workflows.inferers import SliceBySliceInferer
from scripts.workflows.outputs import InverseIntensityMapd, RecordIntensityMapd, SplitPredictiond
from scripts.workflows.slices import FixedSeedd, RandSampleSlicesd, SampleSlicesd


def _volume(depth=10, fg_slices=(3, 4, 5)):
    img = torch.arange(2 * 3 * depth, dtype=torch.float32).reshape(1, 2, 3, depth)
    lab = torch.zeros(1, 2, 3, depth)
    for z in fg_slices:
        lab[0, 0, 0, z] = 2
    affine = torch.diag(torch.tensor([2.0, 3.0, 5.0, 1.0]))
    affine[:3, 3] = torch.tensor([10.0, 20.0, 30.0])
    meta = {"filename_or_obj": "/data/case_07.nii.gz"}
    return {
        "image": MetaTensor(img, affine=affine, meta=dict(meta)),
        "label": MetaTensor(lab, affine=affine, meta=dict(meta)),
    }


def test_random_slices_are_slices_of_the_volume_and_prefer_foreground():
    d = _volume()
    t = RandSampleSlicesd(["image", "label"], num_samples=20, pos_fraction=1.0).set_random_state(0)
    out = t(d)
    assert len(out) == 20
    for s in out:
        z = s["slice_index"]
        assert z in (3, 4, 5), "pos_fraction=1 must only draw foreground slices"
        assert torch.equal(s["image"].as_tensor(), d["image"][..., z].as_tensor())
        assert s["image"].shape == (1, 2, 3)
        assert s["sample_id"] == f"case_07_s{z:03d}"
        # in-plane affine: spacing 2, 3 and the origin of the kept axes
        expected = torch.tensor([[2.0, 0, 10], [0, 3.0, 20], [0, 0, 1]], dtype=torch.float64)
        assert torch.allclose(s["image"].affine, expected)
    # uniform sampling reaches background slices too, and the same seed repeats the draw
    t0 = RandSampleSlicesd(["image", "label"], num_samples=40, pos_fraction=0.0).set_random_state(1)
    idx = [s["slice_index"] for s in t0(d)]
    assert set(idx) - {3, 4, 5}
    t1 = RandSampleSlicesd(["image", "label"], num_samples=40, pos_fraction=0.0).set_random_state(1)
    assert idx == [s["slice_index"] for s in t1(d)]


def test_slices_along_other_axes_and_2d_passthrough():
    d = _volume()
    out = SampleSlicesd(["image", "label"], num_slices=None, axis=0, label_key=None)(d)
    assert len(out) == 2 and out[1]["image"].shape == (1, 3, 10)
    assert torch.equal(out[1]["image"].as_tensor(), d["image"][:, 1].as_tensor())
    flat = {"image": MetaTensor(torch.rand(1, 8, 9), meta={"filename_or_obj": "x/slice_3.png"})}
    (res,) = RandSampleSlicesd("image", num_samples=3)(flat)
    assert res["image"] is flat["image"] and res["sample_id"] == "slice_3"
    with pytest.raises(ValueError, match="2D or 3D"):
        SampleSlicesd("image")({"image": torch.zeros(1, 2, 2, 2, 2)})


def test_uniform_slices_cover_the_foreground_extent():
    d = _volume(depth=30, fg_slices=range(10, 21))
    idx = [s["slice_index"] for s in SampleSlicesd(["image", "label"], num_slices=3)(d)]
    assert idx == [12, 15, 18]
    all_idx = [s["slice_index"] for s in SampleSlicesd(["image", "label"], num_slices=None)(d)]
    assert all_idx == list(range(10, 21))
    empty = _volume(depth=5, fg_slices=())
    assert [s["slice_index"] for s in SampleSlicesd(["image", "label"])(empty)] == [0, 1, 2, 3, 4]


def test_fixed_seed_depends_on_the_sample_not_the_order():
    noise = RandGaussianNoised("image", prob=1.0, std=1.0)
    t = FixedSeedd(noise, seed=5)
    a = {"image": torch.zeros(1, 4, 4), "sample_id": "a_s001"}
    b = {"image": torch.zeros(1, 4, 4), "sample_id": "b_s001"}
    ra1, rb1 = t(dict(a))["image"], t(dict(b))["image"]
    rb2, ra2 = t(dict(b))["image"], t(dict(a))["image"]
    assert torch.equal(ra1, ra2) and torch.equal(rb1, rb2)
    assert not torch.allclose(ra1, rb1)
    assert not torch.allclose(FixedSeedd(noise, seed=6)(dict(a))["image"], ra1)
    with pytest.raises(TypeError):
        FixedSeedd(SplitPredictiond())


def test_fixed_seed_is_the_kspace_seed_of_the_sample():
    """FixedSeedd around the plain k-space transform draws the masks of KspaceUndersampled's own fixed seeds."""
    img = torch.rand(1, 16, 16)
    plain = KspaceUndersampled(center_fractions=[0.08], accelerations=[4.0], target_key=None)
    own = KspaceUndersampled(
        center_fractions=[0.08], accelerations=[4.0], target_key=None, seed_key="sample_id", fixed_seed=2024
    )
    t = FixedSeedd(plain, seed=2024)
    for sid in ("case_07_s003", "case_07_s004", "other_s000"):
        d = {"image": img, "sample_id": sid}
        assert t.seed_of(d) == sample_seed(2024, sid)
        assert torch.equal(t(dict(d))["mask"], own(dict(d))["mask"])
    # no sample id: the file's base name (3D volumes in inference.json), as KspaceUndersampled(fixed_seed=...)
    vol = MetaTensor(torch.rand(1, 16, 16, 3), meta={"filename_or_obj": "/in/case_01.nii.gz"})
    own3 = KspaceUndersampled(spatial_dims=3, target_key=None, fixed_seed=7)
    t3 = FixedSeedd(KspaceUndersampled(spatial_dims=3, target_key=None), seed=7)
    assert t3.seed_of({"image": vol}) == sample_seed(7, "case_01.nii.gz")
    assert torch.equal(t3({"image": vol})["mask"], own3({"image": vol})["mask"])
    with pytest.raises(ValueError, match="sample_id"):
        t({"image": img})


def test_old_module_path_forwards_with_a_warning_naming_the_new_one():
    from monai.bundle import ConfigParser

    import scripts.workflows.transforms as old

    for name, new in [("SampleSlicesd", "slices"), ("FixedSeedd", "slices"), ("SplitPredictiond", "outputs")]:
        with pytest.warns(FutureWarning, match=f"scripts.workflows.{new}.{name}"):
            assert getattr(old, name) is getattr(__import__(f"scripts.workflows.{new}", fromlist=[name]), name)
    with pytest.warns(FutureWarning, match="scripts.workflows.slices.SampleSlicesd"):
        cfg = ConfigParser({"t": {"_target_": "scripts.workflows.transforms.SampleSlicesd", "keys": "image"}})
        assert isinstance(cfg.get_parsed_content("t"), SampleSlicesd)
    with pytest.raises(AttributeError, match="scripts.transforms.sample_seed"):
        old.sample_seed  # noqa: B018


def test_intensity_map_recovers_raw_units():
    raw = torch.linspace(-1500, 1500, 1000).reshape(1, 10, 100)  # HU, partly outside the window
    norm = ((raw + 1000) / 2000).clamp(0, 1)
    d = RecordIntensityMapd("image")({"image": norm, "image_raw": raw})
    assert "image_raw" not in d
    a, b = d["intensity_map"].tolist()
    assert a == pytest.approx(1 / 2000) and b == pytest.approx(0.5)
    back = InverseIntensityMapd("restored")({"restored": norm.clone(), "intensity_map": d["intensity_map"]})
    inside = (raw > -1000) & (raw < 1000)
    assert torch.allclose(back["restored"][inside], raw[inside], atol=1e-2)
    # constant image: identity map, no division by zero
    const = RecordIntensityMapd("image")({"image": torch.zeros(1, 4, 4), "image_raw": torch.full((1, 4, 4), 7.0)})
    assert const["intensity_map"].tolist() == [1.0, 0.0]


def test_split_prediction():
    d = SplitPredictiond()({"pred": {"seg": 1, "restored": 2, "modality_logits": 3}, "image": 0})
    assert d == {"pred": 1, "restored": 2, "image": 0}
    assert SplitPredictiond()({"pred": 5})["pred"] == 5


class _DictNet(torch.nn.Module):
    """Per-slice operations only, so slice-by-slice inference can be checked exactly."""

    def forward(self, x):
        return {
            "seg": torch.cat([x, 2 * x, x.flip(-1)], dim=1),
            "restored": x + x.mean(dim=(1, 2, 3), keepdim=True),
            "modality_logits": x.mean(dim=(2, 3)),
        }


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("sw", [1, 3, 64])
def test_slice_by_slice_inferer_matches_a_loop_over_slices(axis, sw):
    x = torch.rand(2, 1, 5, 6, 7)
    net = _DictNet()
    out = SliceBySliceInferer(spatial_dim=axis, sw_batch_size=sw)(x, net)
    assert set(out) == {"seg", "restored"}
    ax = 2 + axis % 3
    for b in range(2):
        for i in range(x.shape[ax]):
            ref = net(x[b : b + 1].select(ax, i))
            for k in ("seg", "restored"):
                assert torch.allclose(out[k][b : b + 1].select(ax, i), ref[k], atol=1e-6), (k, b, i)
    assert out["seg"].shape == (2, 3, 5, 6, 7)


def test_slice_inferer_2d_tensor_outputs_and_meta():
    net = _DictNet()
    x2 = torch.rand(3, 1, 8, 8)
    assert torch.equal(SliceBySliceInferer()(x2, net)["restored"], net(x2)["restored"])
    seg_only = SliceBySliceInferer()(MetaTensor(torch.rand(1, 1, 4, 4, 3)), lambda t: net(t)["seg"])
    assert isinstance(seg_only, MetaTensor) and seg_only.shape == (1, 3, 4, 4, 3)
    with pytest.raises(KeyError):
        SliceBySliceInferer(output_keys=["nothing"])(x2, net)
    with pytest.raises(ValueError):
        SliceBySliceInferer()(torch.rand(2, 2), net)
    assert np.isfinite(float(seg_only.sum()))


def test_fixed_seed_masks_do_not_depend_on_cache_threads():
    """CacheDataset fills its cache from several threads; each sample's mask must still follow its own seed."""
    from monai.data import CacheDataset

    from scripts.transforms import ModalityKspaceUndersampled
    from scripts.workflows.slices import FixedSeedd

    fixed = FixedSeedd(ModalityKspaceUndersampled(keys="image", target_key=None), seed=3)
    gen = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.rand(1, 48, 48, generator=gen), "modality": i % 2, "sample_id": f"c{i}"} for i in range(48)
    ]
    sequential = [fixed(dict(d))["mask"] for d in items]
    cached = CacheDataset(items, transform=fixed, num_workers=8, progress=False)
    assert all(torch.equal(torch.as_tensor(cached[i]["mask"]), torch.as_tensor(m)) for i, m in enumerate(sequential))


def test_slice_inferer_slices_volume_shaped_keyword_arguments_with_the_input():
    from scripts.workflows.inferers import SliceBySliceInferer

    seen = []

    def net(x, kspace=None, mask=None, scale=1.0):
        assert kspace.shape == x.shape and mask.shape == x.shape
        seen.append(x.shape[0])
        return {"seg": x + kspace.real * mask * scale, "restored": x}

    x = torch.rand(1, 1, 6, 5, 7)
    k = torch.complex(torch.rand_like(x), torch.rand_like(x))
    m = (torch.rand_like(x) > 0.5).float()
    out = SliceBySliceInferer(sw_batch_size=3)(x, net, kspace=k, mask=m, scale=2.0)
    assert seen == [3, 3, 1]
    torch.testing.assert_close(out["seg"], x + k.real * m * 2.0)
