"""CLIP dual prior with a tiny open_clip config (no network access, random weights)."""

import json
import logging

import open_clip
import pytest
import torch
import torch.nn.functional as F

from scripts.networks.clip_prior import CLIP_CONFIG_DIR, CLIPPrior, register_clip_configs
from scripts.prompts import DEGRADATION_PROMPTS, MODALITIES

TINY = "vldun-clip-tiny"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return CLIPPrior(TINY, pretrained=None)


def test_configs_are_registered_and_the_tokenizer_works_offline():
    names = register_clip_configs()
    assert {"vldun-clip-tiny", "vldun-clip-small"} <= set(names)
    assert set(names) <= set(open_clip.list_models())
    cfg = json.loads((CLIP_CONFIG_DIR / f"{TINY}.json").read_text())
    tok = open_clip.get_tokenizer(TINY)(list(DEGRADATION_PROMPTS))
    assert tok.shape == (len(DEGRADATION_PROMPTS), cfg["text_cfg"]["context_length"])
    # every prompt fits: the last position is padding, so nothing was truncated
    assert (tok[:, -1] == 0).all()


def test_output_shapes(prior):
    out = prior(torch.rand(3, 1, 40, 56))
    d = prior.embed_dim
    assert out["features"].shape == (3, d)
    assert out["modality_logits"].shape == (3, len(MODALITIES))
    assert out["degradation_logits"].shape == (3, len(DEGRADATION_PROMPTS))
    assert out["tokens"].shape == (3, CLIPPrior.num_tokens, d)


def test_degradation_logits_are_scaled_cosines_with_the_cached_text_features(prior):
    out = prior(torch.rand(2, 1, 32, 32))
    cos = F.normalize(out["features"], dim=-1) @ F.normalize(prior.text_features, dim=-1).t()
    assert torch.allclose(out["degradation_logits"], prior.logit_scale.exp() * cos, atol=1e-5)
    torch.manual_seed(0)
    dot = CLIPPrior(TINY, similarity="dot")
    out = dot(torch.rand(2, 1, 32, 32))
    assert torch.allclose(out["degradation_logits"], out["features"] @ dot.text_features.t(), atol=1e-5)
    # the text bank is a persistent buffer (travels with checkpoints), not a parameter, and the text tower is gone
    assert "text_features" in prior.state_dict()
    assert all("text_features" not in n for n, _ in prior.named_parameters())
    assert not any(n.startswith(("transformer.", "token_embedding")) for n in prior.state_dict())


def test_text_features_equal_a_fresh_encoding_of_the_prompts():
    torch.manual_seed(123)
    p = CLIPPrior(TINY, pretrained=None)
    torch.manual_seed(123)
    clip = open_clip.create_model(TINY, pretrained=None).eval()
    with torch.no_grad():
        ref = clip.encode_text(open_clip.get_tokenizer(TINY)(list(DEGRADATION_PROMPTS)))
    assert torch.allclose(p.text_features, ref, atol=1e-6)
    # and the visual encoder is that same model's visual tower
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(p.encode_image(x), clip.encode_image(p.preprocess(x)), atol=1e-5)


def test_cosine_similarity_option_is_bounded_by_the_scale():
    torch.manual_seed(0)
    p = CLIPPrior(TINY, similarity="cosine")
    logits = p(torch.rand(2, 1, 32, 32))["degradation_logits"]
    assert logits.abs().max() <= p.logit_scale.exp() + 1e-4
    with pytest.raises(ValueError):
        CLIPPrior(TINY, similarity="l2")


def test_weights_of_the_other_similarity_name_the_setting_they_need():
    cosine, dot = CLIPPrior(TINY), CLIPPrior(TINY, similarity="dot")
    with pytest.raises(RuntimeError, match="trained with similarity='dot'.*--clip_similarity dot"):
        cosine.load_state_dict(dot.state_dict())
    with pytest.raises(RuntimeError, match="trained with similarity='cosine'"):
        dot.load_state_dict(cosine.state_dict())
    cosine.load_state_dict(CLIPPrior(TINY).state_dict())  # same setting: loads


def test_preprocess_adapts_channels_size_and_normalisation(prior):
    y = torch.full((2, 1, 50, 70), 0.5)
    x = prior.preprocess(y)
    assert x.shape == (2, 3, *prior.image_size)
    expected = (0.5 - prior.pixel_mean) / prior.pixel_std  # per channel, CLIP's mean/std
    assert torch.allclose(x, expected.expand_as(x), atol=1e-5)
    # a 1-channel slice behaves exactly like the same slice repeated to 3 channels
    y = torch.rand(1, 1, 32, 32)
    assert torch.allclose(prior.preprocess(y), prior.preprocess(y.repeat(1, 3, 1, 1)))
    with pytest.raises(ValueError):
        prior.preprocess(torch.rand(1, 32, 32))


def test_tune_clip_trains_the_visual_encoder(prior):
    prior.zero_grad()
    out = prior(torch.rand(2, 1, 32, 32))
    (out["tokens"].square().mean() + out["modality_logits"].sum() + out["degradation_logits"].sum()).backward()
    for name, p in prior.named_parameters():
        if name == "logit_scale":
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_clip_gets_no_gradient_and_stays_in_eval_mode():
    torch.manual_seed(0)
    p = CLIPPrior(TINY, tune_clip=False)
    p.train()
    assert not p.visual.training and p.modality_head.training
    assert not any(q.requires_grad for q in p.visual.parameters())
    out = p(torch.rand(2, 1, 32, 32))
    (out["tokens"].square().mean() + out["modality_logits"].sum()).backward()
    assert all(q.grad is None for q in p.visual.parameters())
    assert p.modality_head.weight.grad is not None and p.modality_embedding.grad is not None


def test_random_init_is_logged_as_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="scripts.networks.clip_prior"):
        CLIPPrior(TINY, pretrained="none")
    assert any("randomly initialised" in r.getMessage() for r in caplog.records)


def test_missing_pretrained_checkpoint_and_unknown_model_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPPrior(TINY, pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown open_clip model"):
        CLIPPrior("no-such-clip-model")


def test_local_open_clip_checkpoint_is_loaded(tmp_path):
    torch.manual_seed(7)
    clip = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path / "tiny_clip.pt"
    torch.save(clip.state_dict(), path)
    torch.manual_seed(99)  # a different random init, overwritten by the checkpoint
    p = CLIPPrior(TINY, pretrained=str(path))
    assert torch.equal(p.visual.proj, clip.visual.proj)


def test_fine_tuned_prior_weights_round_trip(tmp_path, prior):
    path = tmp_path / "prior.pt"
    torch.save({"state_dict": prior.state_dict()}, path)
    torch.manual_seed(1)
    other = CLIPPrior(TINY, clip_prior_weights=str(path))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        a, b = prior(x), other(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # weights saved as part of a full VL-DUN checkpoint (keys prefixed with "clip_prior.") also load
    full = tmp_path / "vldun.pt"
    torch.save(
        {f"clip_prior.{k}": v for k, v in prior.state_dict().items()} | {"seg_head.0.weight": torch.ones(1)}, full
    )
    other.load_prior_weights(full)
    assert torch.equal(other.modality_head.weight, prior.modality_head.weight)


def test_prior_weight_errors(tmp_path, prior):
    with pytest.raises(FileNotFoundError, match="not found"):
        CLIPPrior(TINY, clip_prior_weights=str(tmp_path / "missing.pt"))
    # a prior with another number of prompts does not fit: the error names the mismatched key
    path = tmp_path / "prior3.pt"
    torch.save(CLIPPrior(TINY, degradation_prompts=DEGRADATION_PROMPTS[:3]).state_dict(), path)
    with pytest.raises(RuntimeError, match="text_features"):
        prior.load_prior_weights(path)
    # a file without a state dict
    bad = tmp_path / "bad.pt"
    torch.save([1, 2, 3], bad)
    with pytest.raises(RuntimeError, match="state dict"):
        prior.load_prior_weights(bad)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in prior.state_dict().items() if not k.startswith("modality")}, partial)
    with pytest.raises(RuntimeError, match="Missing keys: \\[modality"):
        prior.load_prior_weights(partial)


def test_loading_fine_tuned_prior_weights_logs_the_file_and_what_was_loaded(tmp_path, prior, caplog):
    path = tmp_path / "prior.pt"
    torch.save(prior.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="scripts.networks.clip_prior"):
        CLIPPrior(TINY, clip_prior_weights=str(path))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CLIPPrior: loaded")]
    assert len(lines) == 1 and str(path) in lines[0], lines
    assert f"loaded {len(prior.state_dict())} tensors" in lines[0] and TINY in lines[0]
