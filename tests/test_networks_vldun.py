"""VL-DUN: outputs, sizes, gradients, determinism, ablation switches, presets."""

import hashlib
import inspect
import json

import pytest
import torch

from scripts.networks import PRESETS, VLDUN, RecHead, SegHead, preset_config
from scripts.prompts import DEGRADATION_PROMPTS, MODALITIES
from scripts.transforms.kspace import fft2c

PAPER_PARAMS = 22.77e6  # Table 5


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kw):
    torch.manual_seed(0)
    return VLDUN.from_preset("tiny", **kw)


# the smallest explicit configuration: used where the image is large (odd-size round trip)
MICRO = {
    "dim": 4,
    "num_blocks": [1, 0, 0, 0],
    "num_refinement_blocks": 0,
    "heads": [1, 1, 1, 1],
    "d_state": 2,
    "expand": 1.0,
    "clip_model": "vldun-clip-tiny",
    "seg_hidden": 4,
}


def test_output_dict_shapes():
    net = _tiny(num_classes=3)
    out = net(torch.rand(2, 1, 32, 24))
    # in training the dict also holds the features both heads read (the joint loss balances the tasks there)
    assert set(out) == {"restored", "seg", "modality_logits", "degradation_logits", "shared"}
    assert out["shared"].shape[:2] == (2, net.rec_head.in_channels)
    with torch.no_grad():
        assert set(net.eval()(torch.rand(2, 1, 32, 24))) == set(out) - {"shared"}
    net.train()
    assert out["restored"].shape == (2, 1, 32, 24)
    assert out["seg"].shape == (2, 3, 32, 24)
    assert out["modality_logits"].shape == (2, len(MODALITIES))
    assert out["degradation_logits"].shape == (2, len(DEGRADATION_PROMPTS))
    assert len(net.stages) == 7 and net.stage_names[-1] == "dec1"  # tiny: no refinement stage


def test_odd_size_round_trip():
    torch.manual_seed(0)
    net = VLDUN(**MICRO).eval()
    x = torch.rand(1, 1, 250, 198)
    with torch.no_grad():
        out = net(x)
    assert out["restored"].shape == (1, 1, 250, 198)
    assert out["seg"].shape == (1, 4, 250, 198)
    assert torch.isfinite(out["restored"]).all() and torch.isfinite(out["seg"]).all()


def test_global_residual_makes_a_zero_rec_head_return_the_input():
    net = _tiny()
    with torch.no_grad():
        net.rec_head.weight.zero_()
    x = torch.rand(1, 1, 19, 13)
    assert torch.equal(net(x)["restored"], x)


def test_output_switch():
    net = _tiny(output="seg").eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        seg = net(x)
        assert isinstance(seg, torch.Tensor) and seg.shape == (1, 4, 16, 16)
        net.set_output("restored")
        rec = net(x)
        assert isinstance(rec, torch.Tensor) and rec.shape == (1, 1, 16, 16)
        net.set_output("dict")
        out = net(x)
    assert torch.allclose(out["seg"], seg) and torch.allclose(out["restored"], rec)
    with pytest.raises(ValueError):
        net.set_output("logits")
    with pytest.raises(ValueError):
        _tiny(seg_head=False, output="seg")


def test_gradients_reach_every_trainable_parameter():
    net = _tiny(stage_heads=True, return_stages=True)
    out = net(torch.rand(2, 1, 16, 16))
    assert len(out["stages"]) == len(net.stages)
    assert all(s.shape == (2, 1, 16, 16) for s in out["stages"])
    loss = out["restored"].mean() + out["seg"].square().mean() + sum(s.mean() for s in out["stages"])
    loss = loss + out["modality_logits"].square().mean() + out["degradation_logits"].square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing, missing
    assert any(n.startswith("clip_prior.visual.") for n, p in net.named_parameters() if p.requires_grad)


def test_return_stages_needs_stage_heads():
    net = _tiny(return_stages=True)
    with pytest.raises(ValueError, match="stage_heads"):
        net(torch.rand(1, 1, 16, 16))


def test_determinism_and_batch_independence():
    a, b = _tiny().eval(), _tiny().eval()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.rand(2, 1, 24, 16)
    with torch.no_grad():
        o1, o2, o3 = a(x), a(x), b(x)
        single = a(x[1:])
    for k in o1:
        assert torch.equal(o1[k], o2[k]) and torch.equal(o1[k], o3[k]), k
        assert torch.allclose(o1[k][1:], single[k], atol=1e-5), k  # no mixing across the batch


def test_output_depends_on_the_input():
    net = _tiny().eval()
    with torch.no_grad():
        a, b = net(torch.zeros(1, 1, 16, 16)), net(torch.rand(1, 1, 16, 16))
    for k in a:
        assert (a[k] - b[k]).abs().max() > 1e-6, k


def test_ablation_switches_remove_modules():
    full = _tiny()
    n_full = full.num_parameters()

    no_clip = _tiny(use_clip_prior=False)
    assert no_clip.clip_prior is None and no_clip.num_parameters() < n_full
    out = no_clip(torch.rand(1, 1, 16, 16))
    assert "modality_logits" not in out and "degradation_logits" not in out

    frozen = _tiny(tune_clip=False)
    assert frozen.num_parameters() == n_full  # the encoder is not counted either way
    assert frozen.num_parameters(include_clip_encoder=True) < full.num_parameters(include_clip_encoder=True)
    assert not any(p.requires_grad for p in frozen.clip_prior.visual.parameters())

    no_fd = _tiny(freq_decouple=False)
    assert no_fd.num_parameters() < n_full
    assert not any(hasattr(m, "fuse") for m in no_fd.modules() if type(m).__name__ == "MDPMM")

    no_seg = _tiny(seg_head=False)
    assert no_seg.seg_head is None and no_seg.num_parameters() < n_full
    assert "seg" not in no_seg(torch.rand(1, 1, 16, 16))

    no_rec = _tiny(rec_head=False)
    assert no_rec.rec_head is None and no_rec.num_parameters() < n_full
    assert "restored" not in no_rec(torch.rand(1, 1, 16, 16))

    with pytest.raises(ValueError):
        _tiny(seg_head=False, rec_head=False)
    # the old use_* spellings still build (from_preset maps them, with a FutureWarning naming the new key)
    with pytest.warns(FutureWarning, match="'use_seg_head' is renamed 'seg_head'"):
        assert _tiny(use_seg_head=False).num_parameters() == no_seg.num_parameters()
    with pytest.warns(FutureWarning, match="'use_rec_head' is renamed 'rec_head'"):
        assert _tiny(use_rec_head=False).rec_head is None
    with pytest.raises(ValueError, match="give only 'seg_head'"):
        _tiny(use_seg_head=False, seg_head=True)


def test_presets_are_plain_json_values():
    for name in PRESETS:
        cfg = preset_config(name)
        assert json.loads(json.dumps(cfg)) == cfg
    net = VLDUN(**json.loads(json.dumps(preset_config("tiny", num_classes=2))))
    assert net(torch.rand(1, 1, 16, 16))["seg"].shape[1] == 2
    with pytest.raises(ValueError, match="unknown VL-DUN preset"):
        preset_config("huge")


def test_paper_preset_parameter_count():
    """Trainable parameters without the CLIP encoder within 3% of the paper's 22.77M (construction only)."""
    torch.manual_seed(0)
    net = VLDUN.from_preset("paper")
    n = net.num_parameters()
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.03, n
    assert net.stage_names == ("enc1", "enc2", "enc3", "latent", "dec3", "dec2", "dec1", "refine")  # K = 8
    assert net.stage_dims == (48, 96, 192, 384, 192, 96, 96, 96)
    assert net.clip_prior.embed_dim == 512  # ViT-B-32
    # the CLIP visual encoder is trained (paper) but not part of the 22.77M
    assert net.num_parameters(include_clip_encoder=True) - n == sum(
        p.numel() for p in net.clip_prior.visual.parameters()
    )


def test_small_preset_runs_and_is_the_default():
    torch.manual_seed(0)
    net = VLDUN.from_preset("small")
    assert net.num_parameters() < 3e6
    out = net(torch.rand(1, 1, 32, 32))
    assert out["restored"].shape == (1, 1, 32, 32)
    torch.manual_seed(0)
    default = VLDUN()
    assert default.arch == net.arch and default.num_parameters() == net.num_parameters()
    # the constructor's size defaults are the small preset's values (presets are merged only in from_preset)
    defaults = {k: p.default for k, p in inspect.signature(VLDUN).parameters.items()}
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items() if k in PRESETS["small"]} == (
        PRESETS["small"]
    )
    assert net.preset == "small" and default.preset is None


def test_constructor_takes_bools_and_from_preset_converts_cli_strings():
    with pytest.raises(TypeError, match="freq_decouple must be a bool, got the string 'false'"):
        VLDUN(**MICRO, freq_decouple="false")
    net = VLDUN.from_preset("tiny", freq_decouple="false", seg_head="no", stage_heads="true")
    assert not net.freq_decouple and net.seg_head is None and net.has_stage_heads


#: sha256 of the sorted "key:shape" lines of the state dicts that the code before heads.py / MambaConfig saved
#: (VLDUN.from_preset("tiny", **overrides)); a changed key or shape breaks every checkpoint trained before
OLD_STATE_DICT_LAYOUTS = {
    "a4abc9357637abb2": ({}, 399),
    "f86b1f60b8fb7d56": ({"data_consistency": True, "stage_heads": True, "num_classes": 3}, 424),
    "4bc4a0a6e813a074": ({"use_clip_prior": False, "freq_decouple": False, "seg_head": False}, 344),
    "ed545ffcbd8a1623": ({"rec_head": False}, 398),
}
#: the head keys of the data-consistency network above, as that code saved them
OLD_HEAD_KEYS = {
    "rec_head.weight": (1, 16, 3, 3),
    "rec_head_imag.weight": (1, 16, 3, 3),
    "seg_head.0.weight": (8, 16, 3, 3),
    "seg_head.1.weight": (8,),
    "seg_head.1.running_var": (8,),
    "seg_head.1.num_batches_tracked": (),
    "seg_head.3.weight": (8, 8, 3, 3),
    "seg_head.4.bias": (8,),
    "seg_head.6.weight": (3, 8, 1, 1),
    "seg_head.6.bias": (3,),
    "stages.enc1.dc.step_size": (),
    "stages.enc1.dc.embed.weight": (8, 2, 3, 3),
    "stage_decoders.enc1.weight": (1, 8, 3, 3),
}


@pytest.mark.parametrize("digest", sorted(OLD_STATE_DICT_LAYOUTS))
def test_checkpoints_of_the_old_layout_still_load(digest):
    overrides, n_keys = OLD_STATE_DICT_LAYOUTS[digest]
    torch.manual_seed(0)
    net = VLDUN.from_preset("tiny", **overrides)
    state = net.state_dict()
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    assert len(state) == n_keys and hashlib.sha256(text.encode()).hexdigest()[:16] == digest
    if overrides.get("data_consistency"):
        assert {k: tuple(state[k].shape) for k in OLD_HEAD_KEYS} == OLD_HEAD_KEYS
        assert isinstance(net.rec_head, RecHead) and isinstance(net.seg_head, SegHead)
    # a state dict of that layout (other values) loads strictly and is what the network then holds
    torch.manual_seed(1)
    old = {k: torch.randn(v.shape).to(v.dtype) if v.is_floating_point() else v.clone() for k, v in state.items()}
    net.load_state_dict(old, strict=True)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in old.items())


def test_preset_argument_and_explicit_overrides():
    torch.manual_seed(0)
    a = VLDUN.from_preset("tiny", dim=4, num_modalities=3)
    assert a.arch["dim"] == 4 and a.arch["d_state"] == PRESETS["tiny"]["d_state"]
    assert a.stage_dims[0] == 4
    assert a(torch.rand(1, 1, 16, 16))["modality_logits"].shape == (1, 3)
    with pytest.raises(ValueError, match="num_modalities"):
        VLDUN.from_preset("tiny", num_modalities=3, modalities=["MRI", "CT"])


def test_metatensor_input_runs_on_plain_tensors_and_keeps_metadata():
    from monai.data import MetaTensor

    net = _tiny().eval()
    plain = torch.rand(2, 1, 16, 16)
    affine = torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0], dtype=torch.float64))
    x = MetaTensor(plain.clone(), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    seen = []
    net.stages["enc1"].register_forward_pre_hook(lambda mod, args: seen.append(type(args[0])))
    with torch.no_grad():
        ref, out = net(plain), net(x)
    # inside the network every op runs on plain tensors (MetaTensor dispatch made the CPU scan ~5x slower)
    assert seen == [torch.Tensor, torch.Tensor]
    for key in ("restored", "seg"):
        assert isinstance(out[key], MetaTensor) and torch.equal(out[key].affine, affine)
        assert out[key].meta["filename_or_obj"] == "case.nii.gz"
        assert torch.allclose(out[key].as_tensor(), ref[key])
    assert type(out["modality_logits"]) is torch.Tensor


def test_scan_backends_agree_and_old_layout_checkpoints_load():
    """The fused numba path and the chunked path give the same network outputs and gradients on the same weights;
    a state dict in plain NCHW memory (as saved before the channels-last layout) loads and gives the same outputs."""
    from scripts.networks.selective_scan_numba import numba_available

    if not numba_available():
        pytest.skip("numba is not installed")
    torch.manual_seed(0)
    fast = VLDUN.from_preset("tiny", scan_backend="numba").double().eval()
    slow = VLDUN.from_preset("tiny", scan_backend="chunked").double().eval()
    old_layout = {k: v.contiguous() for k, v in fast.state_dict().items()}
    assert any(not v.is_contiguous() for v in fast.state_dict().values())  # the 4D weights are channels-last
    slow.load_state_dict(old_layout)
    x = torch.rand(2, 1, 24, 16, dtype=torch.float64)
    a, b = fast(x), slow(x)
    for key in ("restored", "seg"):
        assert a[key].is_contiguous()
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-9)
    ga = torch.autograd.grad(a["restored"].square().sum() + a["seg"].sum(), list(fast.parameters()), allow_unused=True)
    gb = torch.autograd.grad(b["restored"].square().sum() + b["seg"].sum(), list(slow.parameters()), allow_unused=True)
    for (name, _), u, v in zip(fast.named_parameters(), ga, gb):
        if u is not None:
            torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-9, msg=name)


@pytest.mark.parametrize("norm", [["instance", {"affine": True}], ("group", {"num_groups": 4}), "instance"])
def test_a_per_sample_seg_norm_segments_alike_in_training_and_evaluation(norm):
    """Batch norm evaluates with running statistics, so a slice's logits depend on the mode and, in training, on the
    other slices of the batch; a per-sample norm (the JSON list form included) gives one answer either way."""
    x = torch.rand(3, 1, 24, 16)
    bn = _tiny()
    per_sample = _tiny(seg_norm=norm)
    assert isinstance(bn.seg_head[1], torch.nn.BatchNorm2d)
    assert not isinstance(per_sample.seg_head[1], torch.nn.BatchNorm2d)
    assert not any("running" in k for k in per_sample.seg_head.state_dict())
    with torch.no_grad():
        seg = {mode: {} for mode in ("train", "eval")}
        for name, net in (("bn", bn), ("per_sample", per_sample)):
            net.train()
            seg["train"][name], single = net(x)["seg"], net(x[:1])["seg"]
            seg["eval"][name] = net.eval()(x)["seg"]
            if name == "per_sample":
                assert torch.allclose(seg["train"][name][:1], single, atol=1e-5)
            else:
                assert not torch.allclose(seg["train"][name][:1], single, atol=1e-3)
    assert torch.allclose(seg["train"]["per_sample"], seg["eval"]["per_sample"], atol=1e-5)
    assert not torch.allclose(seg["train"]["bn"], seg["eval"]["bn"], atol=1e-3)


UNET_SEG = {"seg_decoder": "unet", "seg_unet_features": [4, 4, 8, 8, 16, 4], "seg_norm": ["instance", {"affine": True}]}


def _read_features(net):
    """Give the ``"unet"`` seg head's first convolution non-zero weights on the features (they start at zero), as
    the first optimiser step does."""
    if net.seg_decoder == "unet":
        with torch.no_grad():
            net.seg_head.conv_0.conv_0.conv.weight[:, 1:].normal_(0, 0.1)
    return net


def test_a_fresh_unet_seg_head_is_the_image_unet_and_learns_to_read_the_features():
    """Fresh, the head's logits depend on the restored image alone (the feature weights of its first convolution are
    zero), so the joint network starts as the sequential pipeline; the seg loss still trains those weights, and once
    they move the features reach the logits and the seg gradient reaches the trunk."""
    net = _tiny(**UNET_SEG)
    first = net.seg_head.conv_0.conv_0.conv.weight
    assert torch.count_nonzero(first[:, 1:]) == 0 and torch.count_nonzero(first[:, :1]) > 0
    x = torch.rand(2, 1, 32, 32)
    out = net(x)
    # the features cannot matter: the same image with other features (another trunk) gives the same logits
    other = _tiny(**UNET_SEG)
    with torch.no_grad():
        other.patch_embed.weight.normal_(0, 1.0)
        other.seg_head.load_state_dict(net.seg_head.state_dict())
    torch.testing.assert_close(other(x)["seg"], out["seg"])
    grad_first, grad_trunk = torch.autograd.grad(
        out["seg"].square().sum(), [first, net.patch_embed.weight], allow_unused=True
    )
    assert torch.count_nonzero(grad_first[:, 1:]) > 0  # the feature weights learn
    assert grad_trunk is None or torch.count_nonzero(grad_trunk) == 0  # nothing reaches the trunk yet
    opt = torch.optim.SGD(net.seg_head.parameters(), lr=0.1)
    opt.zero_grad()
    net(x)["seg"].square().sum().backward()
    opt.step()
    grad_trunk = torch.autograd.grad(net(x)["seg"].square().sum(), net.patch_embed.weight)[0]
    assert torch.count_nonzero(grad_trunk) > 0


@pytest.mark.parametrize("dc", [False, True])
def test_the_unet_seg_head_reads_the_restored_image_without_training_it(dc):
    """The ``"unet"`` seg head sees the restored image (changing it changes the logits) but the segmentation loss
    must not reach the restoration through it: the rec head's gradient from the seg loss alone is zero, while the
    shared trunk still gets one."""
    kw = {**UNET_SEG, "data_consistency": dc, "dc_cascades": 1 if dc else 0, "dc_cascade_features": [4] * 6}
    net = _tiny(**kw)
    assert net.seg_head.conv_0.conv_0.conv.in_channels == 1 + 2 * net.arch["dim"]  # image + the 2C features
    with torch.no_grad():  # a rec head that changes the image (it starts at zero: the output would be the input)
        net.rec_head.weight.normal_(0, 0.1)
        _read_features(net)
    x = torch.rand(2, 1, 36, 34)  # not a multiple of 8 or 16: both the network's and the UNet's padding act
    extra = {}
    if dc:
        mask = torch.zeros(2, 1, 36, 34)
        mask[..., ::3] = 1
        extra = {"kspace": fft2c(x.to(torch.complex64)) * mask, "mask": mask}
    out = net(x, **extra)
    assert out["seg"].shape == (2, 4, 36, 34) and out["restored"].shape == (2, 1, 36, 34)
    params = [net.rec_head.weight, net.patch_embed.weight]
    grads = torch.autograd.grad(out["seg"].square().sum(), params, allow_unused=True)
    assert grads[0] is None and torch.count_nonzero(grads[1]) > 0
    with torch.no_grad():
        net.rec_head.weight.mul_(2)
        assert not torch.allclose(net(x, **extra)["seg"], out["seg"])


def test_the_unet_seg_head_without_a_rec_head_reads_the_input_and_conv_is_the_default():
    net = _tiny(**UNET_SEG, rec_head=False)
    x = torch.rand(2, 1, 32, 32)
    assert net(x)["seg"].shape == (2, 4, 32, 32) and "restored" not in net(x)
    default = _tiny()
    assert default.seg_decoder == "conv" and isinstance(default.seg_head, SegHead)
    assert sorted(default.seg_head.state_dict()) == sorted(_tiny(seg_decoder="conv").seg_head.state_dict())
    with pytest.raises(ValueError, match="seg_decoder must be one of"):
        _tiny(seg_decoder="transformer")
    with pytest.raises(ValueError, match="six BasicUNet widths"):
        _tiny(seg_decoder="unet", seg_unet_features=[4, 4, 8])


@pytest.mark.parametrize("decoder", ["unet", "image_unet"])
def test_seg_unet_dropout_regularises_the_unet_head_in_training_only(decoder):
    """``seg_unet_dropout`` puts MONAI's dropout after every convolution of the UNet seg head: training forwards of
    one input differ, evaluation is deterministic and equal to the same weights without dropout; the restoration
    (no dropout) is the same in both modes."""
    kw = {**UNET_SEG, "seg_decoder": decoder}
    net, plain = _tiny(**kw, seg_unet_dropout=0.3), _tiny(**kw)
    drops = [m for m in net.seg_head.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.3 for m in drops)
    assert all(m.p == 0.0 for m in plain.seg_head.modules() if isinstance(m, torch.nn.Dropout))
    _read_features(net)
    plain.load_state_dict(net.state_dict())  # dropout has no parameters: the same weights load
    x = torch.rand(2, 1, 32, 32)
    net.train()
    first, second = net(x), net(x)
    assert not torch.allclose(first["seg"], second["seg"])
    torch.testing.assert_close(first["restored"], second["restored"])
    net.eval()
    plain.eval()
    torch.testing.assert_close(net(x)["seg"], plain(x)["seg"])
    torch.testing.assert_close(net(x)["seg"], net(x)["seg"])


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_seg_unet_dropout_outside_0_1_is_refused(p):
    with pytest.raises(ValueError, match=r"seg_unet_dropout must be in \[0, 1\)"):
        _tiny(**UNET_SEG, seg_unet_dropout=p)


@pytest.mark.parametrize("dc", [False, True])
def test_the_image_unet_seg_head_is_the_sequential_pipeline_inside_the_network(dc):
    """``seg_decoder="image_unet"``: the seg UNet reads the detached restored (with measurements: consistent) image
    only; its logits are that UNet applied to the network's own restored output, no gradient of the seg loss reaches
    the trunk or the rec head, and the parts that only act on the features (the dc_to_seg feed, the ``shared``
    output for gradnorm balancing) are not built."""
    kw = {**UNET_SEG, "seg_decoder": "image_unet", "data_consistency": dc, "dc_to_seg": dc}
    kw.update({"dc_cascades": 1, "dc_cascade_features": [4] * 6} if dc else {})
    net = _tiny(**kw)
    assert net.seg_head.conv_0.conv_0.conv.in_channels == 1 and net.dc_seg_embed is None
    with torch.no_grad():  # a rec head that changes the image (it starts at zero: the output would be the input)
        net.rec_head.weight.normal_(0, 0.1)
    x = torch.rand(2, 1, 36, 34)
    extra = {}
    if dc:
        mask = torch.zeros(2, 1, 36, 34)
        mask[..., ::3] = 1
        extra = {"kspace": fft2c(x.to(torch.complex64)) * mask, "mask": mask}
    out = net.train()(x, **extra)
    assert "shared" not in out and out["seg"].shape == (2, 4, 36, 34)
    torch.testing.assert_close(out["seg"], net.seg_head(net._pad(out["restored"].detach()))[..., :36, :34])
    grads = torch.autograd.grad(
        out["seg"].square().sum(), [net.rec_head.weight, net.patch_embed.weight], allow_unused=True
    )
    assert grads == (None, None)
    blind = net.eval()(x)  # without measurements it segments the blind restored image
    torch.testing.assert_close(blind["seg"], net.seg_head(net._pad(blind["restored"]))[..., :36, :34])


@pytest.mark.parametrize("seg_decoder", ["conv", "unet"])
def test_seg_feature_grad_scales_only_the_segmentation_gradient_into_the_trunk(seg_decoder):
    kw = {**UNET_SEG, "seg_decoder": seg_decoder}
    x = torch.rand(2, 1, 32, 32)
    outs, grads = {}, {}
    for g in (1.0, 0.5, 0.0):
        net = _read_features(_tiny(**kw, seg_feature_grad=g))
        out = net(x)
        outs[g] = out["seg"].detach()
        seg_grad = torch.autograd.grad(out["seg"].square().sum(), net.patch_embed.weight, retain_graph=True)[0]
        rec_grad = torch.autograd.grad(out["restored"].sum(), net.rec_head.weight)[0]
        grads[g] = (seg_grad, rec_grad)
    for g in (0.5, 0.0):
        torch.testing.assert_close(outs[g], outs[1.0])  # forward values do not depend on the factor
        torch.testing.assert_close(grads[g][0], g * grads[1.0][0])
        torch.testing.assert_close(grads[g][1], grads[1.0][1])  # the restoration's own gradient is untouched
    assert torch.count_nonzero(grads[1.0][0]) > 0
    with pytest.raises(ValueError, match="seg_feature_grad must be in"):
        _tiny(seg_feature_grad=1.5)
