"""Known-operator data consistency: exactness of the hard projection, the blind path unchanged, the DC modules."""

import pytest
import torch

from scripts.networks import VLDUN, DCCascades, DCGradientStep, KspaceDataConsistency
from scripts.networks.data_consistency import check_measurements, complex_to_channels
from scripts.transforms.kspace import KspaceUndersample, fft2c, ifft2c
from scripts.workflows.engines import PrepareVLDUNBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def _measure(b=2, h=24, w=20, acc=4.0, seed=0):
    torch.manual_seed(seed)
    clean = torch.rand(b, 1, h, w)
    us = KspaceUndersample(accelerations=(acc,), center_fractions=(0.08,)).set_random_state(seed)
    degraded = us(clean)
    return clean, degraded, us.kspace, us.mask


def _net(**kw):
    torch.manual_seed(0)
    return VLDUN.from_preset("tiny", num_classes=3, scan_backend="chunked", **kw)


def _perturb(net, seed=1):
    """Random weights everywhere (the zero-initialised heads would make every output the zero-filled image)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("cascades", [0, 2])
def test_hard_dc_keeps_the_measured_samples_and_fills_the_rest(cascades):
    clean, degraded, kspace, mask = _measure()
    net = _perturb(_net(data_consistency=True, dc_projection="hard", dc_cascades=cascades)).eval()
    with torch.no_grad():
        out = net(degraded, kspace=kspace, mask=mask)
    k_out = fft2c(out["restored_complex"])
    measured = mask.expand_as(k_out) > 0
    scale = kspace.abs().max()
    assert torch.allclose(k_out[measured], kspace[measured], atol=1e-6 * scale, rtol=0)
    # the unmeasured samples are the network's, not the zero filling
    assert k_out[~measured].abs().max() > 1e-3 * scale
    assert torch.allclose(out["restored"], out["restored_complex"].abs())


@pytest.mark.parametrize("cascades", [0, 2])
def test_fresh_dc_network_starts_at_its_input_projected_onto_the_measurements(cascades):
    """The zero-initialised rec head adds nothing: the output is the input image with its measured k-space samples
    replaced by the exact ones, which is no farther from the clean image than the input (the blind network starts
    at its input; both modes share the residual on the input image). Fresh cascades are the identity on top."""
    for seed in range(3):
        clean, degraded, kspace, mask = _measure(seed=seed)
        net = _net(data_consistency=True, dc_cascades=cascades).eval()
        with torch.no_grad():
            out = net(degraded, kspace=kspace, mask=mask)
        projected = ifft2c(mask * kspace + (1 - mask) * fft2c(degraded.to(torch.complex64)))
        assert torch.allclose(out["restored_complex"], projected, atol=1e-5)
        assert torch.allclose(out["restored"], projected.abs(), atol=1e-5)
        assert torch.mean((out["restored"] - clean) ** 2) <= torch.mean((degraded - clean) ** 2)


def test_dc_off_is_bit_identical_to_the_network_without_the_feature():
    _, degraded, kspace, mask = _measure()
    plain = _perturb(_net()).eval()
    with_dc = _net(data_consistency=True).eval()
    missing, unexpected = with_dc.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".dc." in k or k.startswith(("rec_head_imag", "dc_")) for k in missing)
    assert not any("dc" in k for k in plain.state_dict())  # the blind network's checkpoints are unchanged
    with torch.no_grad():
        ref = plain(degraded)
        blind = with_dc(degraded)  # no measurements: the paper's blind setting
        ignored = plain(degraded, kspace=kspace, mask=mask)  # a network built without DC ignores them
    for key in ("restored", "seg", "modality_logits", "degradation_logits"):
        assert torch.equal(ref[key], blind[key]) and torch.equal(ref[key], ignored[key])


def test_soft_dc_moves_towards_the_measurements_by_its_weight():
    _, _, kspace, mask = _measure()
    image = torch.randn(kspace.shape, dtype=torch.complex64)
    soft, hard = KspaceDataConsistency("soft"), KspaceDataConsistency("hard")
    assert torch.allclose(soft(image, kspace, mask), hard(image, kspace, mask), atol=1e-5)  # weight 1 = hard
    with torch.no_grad():
        soft.weight.zero_()
    assert torch.allclose(soft(image, kspace, mask), image, atol=1e-5)
    with pytest.raises(ValueError, match="dc_projection"):
        KspaceDataConsistency("exact")


def test_gradient_step_is_the_exact_data_term_gradient():
    _, _, kspace, mask = _measure(b=1)
    step = DCGradientStep(dim=3)
    with torch.no_grad():
        step.embed.weight.zero_()
        step.embed.bias.zero_()
        step.embed.weight[:2, :2, 1, 1] = torch.eye(2)  # embed = identity on the first two channels
    feats = torch.randn(1, 3, 24, 24)  # padded to 24 columns; the measurements are 24 x 20
    z0 = ifft2c(kspace)
    out = step(feats, {"z0": z0, "kspace": kspace, "mask": mask})
    x = z0 + torch.complex(*step.to_image(feats)[:, :, :, :20].unbind(1)).unsqueeze(1)
    expected = complex_to_channels(ifft2c(mask * fft2c(x) - kspace))
    assert torch.allclose(feats[:, :2, :, :20] - out[:, :2, :, :20], step.step_size * expected, atol=1e-5)
    assert torch.equal(out[:, 2], feats[:, 2])  # channel the embedding does not write
    assert torch.equal(out[..., 20:], feats[..., 20:])  # the padded border carries no measurement


def test_dc_parts_learn():
    clean, degraded, kspace, mask = _measure()
    net = _net(data_consistency=True).train()
    out = net(degraded, kspace=kspace, mask=mask)
    # the zero-initialised rec heads pass no gradient to the trunk on the first step; the seg head does
    (((out["restored"] - clean) ** 2).mean() + out["seg"].square().mean()).backward()
    assert net.rec_head_imag.weight.grad.abs().sum() > 0
    for name in ("enc1", "dec1"):
        assert net.stages[name].dc.embed.weight.grad.abs().sum() > 0
    assert net.stages["enc2"].dc is None  # only the image-resolution stages


def test_cascades_are_varnet_blocks_on_the_projected_image():
    """Each cascade is ``k - w M (k - y) - F(refine(F^-1 k))``: with the refinement switched off and w = 0.5 a
    cascade halves the distance of the measured samples to y and leaves the others alone."""
    _, _, kspace, mask = _measure()
    image = torch.randn(kspace.shape, dtype=torch.complex64)
    cascades = DCCascades(1, (4, 4, 4, 4, 4, 4))
    with torch.no_grad():
        cascades.blocks[0].dc_weight.fill_(0.5)
    out = fft2c(cascades(image, kspace, mask))
    k = fft2c(image)
    m = mask.expand_as(k) > 0
    assert torch.allclose(out[m], k[m] - 0.5 * (k[m] - kspace[m]), atol=1e-5)
    assert torch.allclose(out[~m], k[~m], atol=1e-5)
    with pytest.raises(ValueError, match="num_cascades"):
        DCCascades(0)
    with pytest.raises(ValueError, match="six"):
        DCCascades(1, (8, 16))


def test_cascades_learn_and_survive_a_blank_slice():
    clean, degraded, kspace, mask = _measure()
    net = _net(data_consistency=True, dc_cascades=1).train()
    out = net(degraded, kspace=kspace, mask=mask)
    ((out["restored"] - clean) ** 2).mean().backward()
    assert net.dc_cascades.blocks[0].model.unet.final_conv.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():  # outside the body: zero image, zero k-space (std 0 in the cascade's normalisation)
        blank = net(torch.zeros_like(degraded), kspace=torch.zeros_like(kspace), mask=mask)
    assert torch.isfinite(blank["restored"]).all() and torch.isfinite(blank["seg"]).all()
    blind = _net(data_consistency=True, dc_cascades=1).eval()
    assert blind.dc_cascades is not None and _net(dc_cascades=1).dc_cascades is None  # only with DC


def test_dc_to_seg_starts_as_the_blind_seg_head_and_learns():
    _, degraded, kspace, mask = _measure()
    plain = _perturb(_net(data_consistency=True, dc_cascades=1)).eval()
    fed = _net(data_consistency=True, dc_cascades=1, dc_to_seg="true")  # the command line's string
    missing, _ = fed.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["dc_seg_embed.weight", "dc_seg_embed.bias"]
    fed.eval()
    with torch.no_grad():
        assert torch.equal(
            plain(degraded, kspace=kspace, mask=mask)["seg"], fed(degraded, kspace=kspace, mask=mask)["seg"]
        )
        with torch.no_grad():
            fed.dc_seg_embed.weight.fill_(0.1)
        assert not torch.equal(
            plain(degraded, kspace=kspace, mask=mask)["seg"], fed(degraded, kspace=kspace, mask=mask)["seg"]
        )
        assert torch.equal(plain(degraded)["seg"], fed(degraded)["seg"])  # blind batches do not use it
    fed.train()
    fed(degraded, kspace=kspace, mask=mask)["seg"].square().mean().backward()
    assert fed.dc_seg_embed.weight.grad.abs().sum() > 0
    grad = fed.dc_cascades.blocks[0].model.unet.final_conv.weight.grad
    assert grad is None or grad.abs().sum() == 0  # segmentation reads the restoration but does not train it


def test_two_channel_kspace_equals_complex():
    _, degraded, kspace, mask = _measure()
    net = _perturb(_net(data_consistency=True)).eval()
    with torch.no_grad():
        a = net(degraded, kspace=kspace, mask=mask)["restored"]
        b = net(degraded, kspace=complex_to_channels(kspace), mask=mask)["restored"]
    assert torch.allclose(a, b)


def test_bad_measurements_are_named():
    _, degraded, kspace, mask = _measure()
    net = _net(data_consistency=True).eval()
    with pytest.raises(ValueError, match="both `kspace` and `mask`"):
        net(degraded, kspace=kspace)
    with pytest.raises(ValueError, match="does not match the input image"):
        net(degraded, kspace=kspace[..., :-2], mask=mask[..., :-2])
    bad = kspace.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_measurements(bad, mask, degraded)
    with pytest.raises(ValueError, match="real/imaginary channels"):
        check_measurements(torch.rand(2, 3, 24, 20), mask, degraded)
    with pytest.raises(ValueError, match="rec head"):
        VLDUN.from_preset("tiny", data_consistency=True, rec_head=False)


def test_prepare_batch_passes_the_measurements_to_the_network():
    _, degraded, kspace, mask = _measure()
    batch = {"image": degraded, "target": degraded, "kspace": kspace, "mask": mask}
    image, targets, args, kwargs = PrepareVLDUNBatch(network_keys=("kspace", "mask"))(batch)
    assert set(targets) == {"target"} and args == () and set(kwargs) == {"kspace", "mask"}
    assert torch.equal(kwargs["kspace"], kspace)
    assert len(PrepareVLDUNBatch()(batch)) == 2  # blind by default
    torch.manual_seed(0)
    dropped = [PrepareVLDUNBatch(network_keys=("kspace", "mask"), measurement_dropout=0.5)(batch)[3] for _ in range(40)]
    assert 5 < sum(1 for kw in dropped if not kw) < 35
    with pytest.raises(KeyError, match="kspace_key"):
        PrepareVLDUNBatch(network_keys=("kspace", "mask"))({"image": degraded})
    with pytest.raises(ValueError, match="measurement_dropout"):
        PrepareVLDUNBatch(measurement_dropout=1.5)


def test_the_pre_dc_estimate_is_what_the_rec_head_gives_and_what_the_projection_hides():
    """``restored_pre_dc`` is the rec head's estimate before the projection (input + real part of the correction,
    the image the same weights give blind). With every sample measured, the hard projection makes the final image
    the measurements whatever the rec head says, so only the pre-DC estimate trains the rec head there: the term
    that keeps it from drifting between the blind batches of measurement dropout. Evaluation and the blind network
    have no such output (their dicts are unchanged)."""
    clean, degraded, kspace, _ = _measure()
    full = torch.ones_like(degraded)
    full_kspace = fft2c(clean.to(torch.complex64))
    net = _perturb(_net(data_consistency=True, dc_projection="hard")).train()
    out = net(degraded, kspace=full_kspace, mask=full)
    real = net.rec_head(out["shared"])[..., : degraded.shape[-2], : degraded.shape[-1]]
    torch.testing.assert_close(out["restored_pre_dc"], degraded + real)
    grad_final = torch.autograd.grad(out["restored"].square().sum(), net.rec_head.weight, retain_graph=True)[0]
    grad_pre = torch.autograd.grad(out["restored_pre_dc"].square().sum(), net.rec_head.weight)[0]
    assert float(grad_final.abs().max()) < 1e-6 * float(grad_pre.abs().max())
    assert "restored_pre_dc" not in net.eval()(degraded, kspace=full_kspace, mask=full)
    assert "restored_pre_dc" not in net.train()(degraded)  # blind: the restored image is that estimate already
