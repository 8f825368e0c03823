"""VLDUNLoss: each term is the loss it claims to be, weights add up, ablated outputs are skipped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scripts.workflows.losses import CharbonnierLoss, VLDUNLoss


def _batch(b=2, k=4, m=2, d=6, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = {
        "restored": torch.rand(b, 1, h, w, generator=g),
        "seg": torch.randn(b, k, h, w, generator=g),
        "modality_logits": torch.randn(b, m, generator=g),
        "degradation_logits": torch.randn(b, d, generator=g),
    }
    targets = {
        "target": torch.rand(b, 1, h, w, generator=g),
        "label": torch.randint(0, k, (b, 1, h, w), generator=g).float(),
        "modality": torch.tensor([0, 1][:b]),
        "degradation": torch.tensor([4, 5][:b]),
    }
    return pred, targets


def test_terms_match_their_definitions():
    pred, t = _batch()
    loss = VLDUNLoss()
    terms = loss.terms(pred, t)
    assert set(terms) == {"rec", "seg", "mod", "deg"}
    assert torch.allclose(terms["rec"], ((pred["restored"] - t["target"]) ** 2).mean())  # MSE: what PSNR scores
    l1 = VLDUNLoss(rec_loss="l1").terms(pred, t)["rec"]
    assert torch.allclose(l1, (pred["restored"] - t["target"]).abs().mean())
    assert torch.allclose(terms["deg"], F.cross_entropy(pred["degradation_logits"], t["degradation"]))
    # focal loss with gamma=0 and no alpha is the mean binary... check the gamma effect instead: confident
    # correct logits give a much smaller focal loss than confident wrong logits
    good = {"modality_logits": torch.tensor([[5.0, -5.0], [-5.0, 5.0]])}
    bad = {"modality_logits": -good["modality_logits"]}
    lg = loss.terms(good, {"modality": t["modality"]})["mod"]
    lb = loss.terms(bad, {"modality": t["modality"]})["mod"]
    assert lg < 1e-4 < lb


def test_total_is_the_weighted_sum_and_terms_are_logged():
    pred, t = _batch()
    loss = VLDUNLoss(lambda_rec=2.0, lambda_seg=0.5, lambda_mod=0.1, lambda_deg=0.3)
    terms = loss.terms(pred, t)
    total = loss(pred, t)
    expected = 2.0 * terms["rec"] + 0.5 * terms["seg"] + 0.1 * terms["mod"] + 0.3 * terms["deg"]
    assert torch.allclose(total, expected)
    assert set(loss.last_terms) == {"loss_rec", "loss_seg", "loss_mod", "loss_deg"}
    assert loss.last_terms["loss_rec"] == pytest.approx(float(terms["rec"]))


def test_dice_ce_rewards_the_correct_segmentation():
    _, t = _batch(b=1)
    lab = t["label"].long()[:, 0]
    perfect = F.one_hot(lab, 4).permute(0, 3, 1, 2).float() * 20.0
    wrong = F.one_hot((lab + 1) % 4, 4).permute(0, 3, 1, 2).float() * 20.0
    loss = VLDUNLoss()
    assert loss.terms({"seg": perfect}, t)["seg"] < 0.01
    assert loss.terms({"seg": wrong}, t)["seg"] > 1.0
    # a (B, H, W) label map is accepted as well
    assert torch.allclose(loss.terms({"seg": perfect}, {"label": lab})["seg"], loss.terms({"seg": perfect}, t)["seg"])


def test_ablated_outputs_and_zero_weights_are_skipped():
    pred, t = _batch()
    loss = VLDUNLoss(lambda_rec=1.0, lambda_mod=0.0)
    no_seg = {k: v for k, v in pred.items() if k != "seg"}
    total = loss(no_seg, t)
    assert set(loss.last_terms) == {"loss_rec", "loss_deg"}
    terms = loss.terms(no_seg, t)
    assert torch.allclose(total, terms["rec"] + 0.1 * terms["deg"])
    # CLIP-prior only network (stage 1): only the prior terms
    clip_only = VLDUNLoss(lambda_rec=0, lambda_seg=0, lambda_mod=1, lambda_deg=1)
    clip_only({"modality_logits": pred["modality_logits"], "degradation_logits": pred["degradation_logits"]}, t)
    assert set(clip_only.last_terms) == {"loss_mod", "loss_deg"}


def test_errors_are_explicit():
    pred, t = _batch()
    with pytest.raises(ValueError, match="no loss term"):
        VLDUNLoss()({"features": torch.zeros(2, 3)}, t)
    with pytest.raises(TypeError, match="dict"):
        VLDUNLoss()(pred["seg"], t)
    with pytest.raises(ValueError, match="rec_loss"):
        VLDUNLoss(rec_loss="l3")
    with pytest.raises(ValueError, match="lambda_seg"):
        VLDUNLoss(lambda_seg=-1)


def test_charbonnier_is_smooth_l1():
    x, y = torch.rand(64), torch.rand(64)
    assert torch.allclose(CharbonnierLoss(1e-6)(x, y), (x - y).abs().mean(), atol=1e-5)
    assert float(CharbonnierLoss(1e-3)(x, x)) == pytest.approx(1e-3)
    pred, t = _batch()
    ch = VLDUNLoss(rec_loss="charbonnier", charbonnier_eps=1e-3).terms(pred, t)["rec"]
    l1 = VLDUNLoss(rec_loss="l1").terms(pred, t)["rec"]
    assert float(ch) >= float(l1) and float(ch) == pytest.approx(float(l1), rel=0.05)


def test_gradients_reach_every_prediction():
    pred, t = _batch()
    for v in pred.values():
        v.requires_grad_(True)
    VLDUNLoss()(pred, t).backward()
    for k, v in pred.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, k


def test_ssim_term_is_added_to_the_restoration_term():
    from monai.losses import SSIMLoss

    pred, t = _batch(h=24, w=24)
    mse = VLDUNLoss().terms(pred, t)["rec"]
    both = VLDUNLoss(ssim_weight=0.5).terms(pred, t)["rec"]
    ssim = SSIMLoss(spatial_dims=2, data_range=1.0, kernel_type="uniform", win_size=7)(pred["restored"], t["target"])
    assert float(ssim) > 0.1 and torch.allclose(both, mse + 0.5 * ssim)
    # a perfect restoration costs nothing; volumes (B, C, H, W, D) are scored slice by slice
    vol = torch.rand(1, 1, 24, 24, 3)
    assert float(VLDUNLoss(ssim_weight=1.0).terms({"restored": vol}, {"target": vol})["rec"]) == pytest.approx(
        0, abs=1e-5
    )
    with pytest.raises(ValueError, match="ssim_weight"):
        VLDUNLoss(ssim_weight=-1)


def test_prior_terms_are_off_when_the_data_have_one_class():
    pred, t = _batch()
    one = VLDUNLoss(num_modalities=1, num_degradations=1)
    assert one.weights["mod"] == one.weights["deg"] == 0.0
    one(pred, t)
    assert set(one.last_terms) == {"loss_rec", "loss_seg"}
    two = VLDUNLoss(num_modalities=2, num_degradations=3)
    two(pred, t)
    assert set(two.last_terms) == {"loss_rec", "loss_seg", "loss_mod", "loss_deg"}
    with pytest.raises(ValueError, match="lambda_rec"):
        VLDUNLoss(lambda_rec=float("nan"))


def test_gradnorm_balance_equalises_the_task_gradients_on_the_shared_features():
    torch.manual_seed(0)
    shared = torch.randn(2, 4, 16, 16, requires_grad=True)
    rec_head, seg_head = torch.nn.Conv2d(4, 1, 1), torch.nn.Conv2d(4, 3, 1)
    with torch.no_grad():
        rec_head.weight.mul_(1e-3)  # a restoration gradient ~1000x below the segmentation one
    target, label = torch.rand(2, 1, 16, 16), torch.randint(0, 3, (2, 1, 16, 16))
    loss = VLDUNLoss(task_balance="gradnorm", balance_momentum=0.0)
    assert loss.rec_balance == 1.0  # nothing measured yet
    pred = {"restored": rec_head(shared), "seg": seg_head(shared), "shared": shared}
    total = loss(pred, {"target": target, "label": label})
    w = loss.effective_weights()
    terms = loss.terms(pred, {"target": target, "label": label})
    g = [torch.autograd.grad(w[k] * terms[k], shared, retain_graph=True)[0] for k in ("rec", "seg")]
    assert float(g[0].norm()) == pytest.approx(float(g[1].norm()), rel=1e-4)
    assert loss.rec_balance > 10 and loss.last_terms["loss_rec_balance"] == pytest.approx(loss.rec_balance)
    total.backward()  # the measurement kept the graph
    # fixed weights ignore the features; no shared features (a UNet) leaves the multiplier alone
    fixed = VLDUNLoss(task_balance="fixed")
    fixed(pred, {"target": target, "label": label})
    assert fixed.rec_balance == 1.0 and "loss_rec_balance" not in fixed.last_terms
    other = VLDUNLoss(task_balance="gradnorm")
    other({k: v for k, v in pred.items() if k != "shared"}, {"target": target, "label": label})
    assert other.rec_balance == 1.0
    with pytest.raises(ValueError, match="task_balance"):
        VLDUNLoss(task_balance="uncertainty")


class _TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.rec, self.seg = (
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.Conv2d(4, 1, 1),
            torch.nn.Conv2d(4, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> dict:
        z = self.trunk(x)
        return {"restored": self.rec(z), "seg": self.seg(z), "shared": z}


def test_gradnorm_balances_through_distributed_data_parallel_as_without_it(tmp_path):
    """DDP with find_unused_parameters (the multi-GPU overlay's setting) copies every output through one autograd
    node; the balance must still be measured on the features the heads read, and equal the plain module's."""
    import torch.distributed as dist

    torch.manual_seed(0)
    net, x = _TwoHeads(), torch.rand(2, 1, 8, 8)
    tg = {"target": torch.rand(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 1, 8, 8))}
    plain = VLDUNLoss(balance_momentum=0.0)
    plain(net(x), tg)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
        out = ddp(x)
        assert type(out["shared"].grad_fn).__name__ == "_DDPSinkBackward"  # the case this test is about
        wrapped = VLDUNLoss(balance_momentum=0.0)
        wrapped(out, tg).backward()
    finally:
        dist.destroy_process_group()
    assert plain.rec_balance != 1.0
    assert wrapped.rec_balance == pytest.approx(plain.rec_balance, rel=1e-5)


def test_gradnorm_without_shared_features_on_the_graph_keeps_the_weight_and_says_so(caplog):
    torch.manual_seed(0)
    feats = torch.randn(2, 4, 8, 8, requires_grad=True)
    pred = {"restored": torch.nn.Conv2d(4, 1, 1)(feats), "seg": torch.nn.Conv2d(4, 3, 1)(feats)}
    pred["shared"] = feats.detach().clone().requires_grad_(True)  # a copy made by some wrapper
    loss = VLDUNLoss()
    tg = {"target": torch.rand(2, 1, 8, 8), "label": torch.randint(0, 3, (2, 1, 8, 8))}
    with caplog.at_level("WARNING"):
        loss(pred, tg)
        loss(pred, tg)
    assert loss.rec_balance == 1.0
    assert sum("not on the graph" in r.getMessage() for r in caplog.records) == 1


def test_dice_ce_kwargs_reach_monais_dice_ce():
    from monai.losses import DiceCELoss

    pred, t = _batch(b=2, k=4)
    for kw in ({"batch": True}, {"include_background": False, "lambda_ce": 0.5}):
        ours = VLDUNLoss(dice_ce_kwargs=kw).terms(pred, t)["seg"]
        theirs = DiceCELoss(to_onehot_y=True, softmax=True, **kw)(pred["seg"], t["label"])
        assert torch.allclose(ours, theirs)
        assert not torch.allclose(ours, VLDUNLoss().terms(pred, t)["seg"])


def test_dice_ce_kwargs_are_checked_against_monai():
    with pytest.raises(ValueError, match=r"dice_ce_kwargs has \['batch_dice'\]"):
        VLDUNLoss(dice_ce_kwargs={"batch_dice": True})
    # what `--dice_ce_kwargs '{"include_background": false}'` gives through fire: a string, truthy as it is
    assert VLDUNLoss(dice_ce_kwargs={"include_background": "false"}).seg_loss.dice.include_background is False
    with pytest.raises(ValueError, match=r"dice_ce_kwargs\['batch'\] must be a boolean"):
        VLDUNLoss(dice_ce_kwargs={"batch": "treu"})


def test_the_pre_dc_term_supervises_the_estimate_before_the_projection_when_there_is_one():
    pred, t = _batch()
    pre = pred["restored"] + 0.1
    loss = VLDUNLoss(lambda_rec=1.0, lambda_seg=1.0, lambda_mod=0, lambda_deg=0, lambda_pre_dc=0.5)
    total = loss({**pred, "restored_pre_dc": pre}, t)
    terms = loss.terms({**pred, "restored_pre_dc": pre}, t)
    assert torch.allclose(terms["pre_dc"], F.mse_loss(pre, t["target"]))
    assert torch.allclose(total, terms["rec"] + terms["seg"] + 0.5 * terms["pre_dc"])
    assert set(loss.last_terms) == {"loss_rec", "loss_seg", "loss_pre_dc"}
    loss(pred, t)  # blind batches and networks without data consistency have no such output: no term
    assert set(loss.last_terms) == {"loss_rec", "loss_seg"}
    off = VLDUNLoss(lambda_mod=0, lambda_deg=0)  # the default weight is 0: off
    off({**pred, "restored_pre_dc": pre}, t)
    assert "loss_pre_dc" not in off.last_terms
    with pytest.raises(ValueError, match="lambda_pre_dc"):
        VLDUNLoss(lambda_pre_dc=-1)
