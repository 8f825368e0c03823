"""Vision-language dual prior of VL-DUN (paper section 3.3, Eq. 2; appendix D).

``CLIPPrior`` wraps an open_clip model:

- **visual prior (modality):** ``f_mod = E_v(y)`` and ``modality_logits = W_cls f_mod`` (Eq. 2; the softmax and the
  focal loss of Eq. 3 belong to the loss);
- **text prior (degradation):** the frozen text encoder ``E_t`` encodes a fixed prompt bank once (at construction);
  the features are cached in the persistent buffer ``text_features`` (K, D) and the text tower is then dropped.
  ``degradation_logits[b, k] = s · cos(f_mod[b], text_features[k])`` with a learnable scale ``s`` (CLIP's own
  image-text logits; default), or the raw dot product ``f_mod[b] . text_features[k]`` (``similarity="dot"``, the
  paper's wording). The raw dot product is unbounded: with random or re-tuned encoders its first logits reach tens,
  and its first gradient step into the encoder was ~170x the segmentation term's in measured runs, which set Adam's
  moments for the rest of training;
- **prior tokens** for the AMGDM cross-attention (keys/values): three D-dimensional tokens per image,
  ``[f_mod, softmax(modality_logits) @ modality_embedding, softmax(degradation_logits) @ text_features]``, passed
  through a LayerNorm so that the three have comparable scales. The per-stage projections D -> C into keys and
  values live in each AMGDM (``amgdm.py``).

Weights are configuration values: ``pretrained`` is an open_clip pretrained tag (e.g. ``"laion2b_s34b_b79k"``, which
needs the network or a populated cache), a local open_clip checkpoint path, or ``None`` (random initialisation,
logged as a warning). ``clip_prior_weights`` loads the state dict of a fine-tuned ``CLIPPrior`` (the output of the
separate CLIP fine-tuning stage, or a full VL-DUN checkpoint whose keys start with ``clip_prior.``).

``tune_clip=True`` trains the visual encoder with the rest of the network (the paper fine-tunes ``E_v``);
``tune_clip=False`` freezes it (the "w/o CLIP tuning" ablation of Table 3). The text encoder is always frozen.

Small open_clip configurations for CPU work (``vldun-clip-tiny``, ``vldun-clip-small``) ship in ``clip_configs/`` and
are registered with ``open_clip.add_model_config`` when this module is imported.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from ..flags import as_bool
from ..prompts import DEGRADATION_PROMPTS, MODALITIES

__all__ = ["CLIPPrior", "CLIP_CONFIG_DIR", "register_clip_configs", "load_state_dict_file"]

logger = logging.getLogger(__name__)

#: Folder with the small open_clip model configs of this bundle (file name = model name).
CLIP_CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"

_NONE_STRINGS = ("", "none", "null", "random")


def register_clip_configs(path: str | os.PathLike | None = None) -> list[str]:
    """Register open_clip model configs from a folder or a JSON file (default: this bundle's ``clip_configs``).

    Returns the names of the configs found there. Safe to call more than once.
    """
    path = Path(path) if path is not None else CLIP_CONFIG_DIR
    open_clip.add_model_config(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    return [f.stem for f in files]


register_clip_configs()


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def load_state_dict_file(path: str | os.PathLike, prefix: str = "") -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (``torch.load`` with ``weights_only=True``).

    Accepts a plain state dict or one nested under ``"state_dict"``, ``"model"`` or ``"clip_prior"``. If ``prefix``
    is given and some keys start with it, only those keys are kept, with the prefix removed (so that the prior can
    be read out of a full VL-DUN checkpoint).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CLIP prior weights file not found: {str(p)!r}.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-tensor objects
        raise RuntimeError(f"could not read CLIP prior weights from {str(p)!r}: {e}") from e
    for key in ("clip_prior", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RuntimeError(f"{str(p)!r} does not hold a state dict of tensors (got {type(obj).__name__}).")
    sd = dict(obj)
    if prefix and any(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


class CLIPPrior(nn.Module):
    """CLIP-based modality and degradation prior.

    Args:
        model_name: open_clip model name (``"ViT-B-32"`` in the paper preset; ``"vldun-clip-small"`` /
            ``"vldun-clip-tiny"`` are this bundle's CPU configs).
        pretrained: open_clip pretrained tag, path to a local open_clip checkpoint, or ``None`` for random weights.
        modalities: modality class names (index = class id); default ``scripts.prompts.MODALITIES``.
        degradation_prompts: one text prompt per degradation class; default ``scripts.prompts.DEGRADATION_PROMPTS``.
        tune_clip: train the visual encoder (paper) or freeze it ("w/o CLIP tuning" ablation).
        similarity: ``"cosine"`` (normalised, learnable logit scale, initialised at 1/0.07 as CLIP) or ``"dot"``
            (raw dot product, the paper's wording; unbounded).
        clip_prior_weights: optional path to the state dict of a fine-tuned ``CLIPPrior``.
        image_size: override of the CLIP input size (default: the model's own).

    Forward: ``y`` (B, C, H, W) with intensities in [0, 1] (any C, H, W). Returns a dict with ``features`` (B, D),
    ``modality_logits`` (B, M), ``degradation_logits`` (B, K) and ``tokens`` (B, 3, D).
    """

    num_tokens = 3

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        modalities: Sequence[str] | None = None,
        degradation_prompts: Sequence[str] | None = None,
        tune_clip: bool = True,
        similarity: str = "cosine",
        clip_prior_weights: str | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        self.model_name = str(model_name)
        self.modalities = tuple(modalities) if modalities is not None else MODALITIES
        self.degradation_prompts = (
            tuple(degradation_prompts) if degradation_prompts is not None else DEGRADATION_PROMPTS
        )
        if len(self.modalities) < 1 or len(self.degradation_prompts) < 1:
            raise ValueError("CLIPPrior needs at least one modality class and one degradation prompt.")
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}.")
        self.similarity = similarity
        self.tune_clip = as_bool(tune_clip, "tune_clip")

        clip = self._create_clip(self.model_name, pretrained)
        cfg = dict(getattr(clip.visual, "preprocess_cfg", {}) or {})
        size = image_size or cfg.get("size") or clip.visual.image_size
        self.image_size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
        mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

        # text prior: encode the prompt bank once with the frozen text tower, cache, then drop the text tower.
        tokenizer = open_clip.get_tokenizer(self.model_name)
        with torch.no_grad():
            clip.eval()
            text = clip.encode_text(tokenizer(list(self.degradation_prompts)), normalize=False).float()
        self.register_buffer("text_features", text.clone())  # (K, D), persistent: travels with checkpoints
        self.visual = clip.visual  # E_v; the text tower is not kept (frozen and no longer needed)
        del clip
        self.embed_dim = int(self.text_features.shape[-1])

        d, m = self.embed_dim, len(self.modalities)
        self.modality_head = nn.Linear(d, m)  # W_cls of Eq. 2
        self.modality_embedding = nn.Parameter(torch.randn(m, d) * d**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07))) if similarity == "cosine" else None
        self.token_norm = nn.LayerNorm(d)
        self.set_tune_clip(self.tune_clip)
        if clip_prior_weights:
            self.load_prior_weights(clip_prior_weights)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _create_clip(model_name: str, pretrained: str | None) -> nn.Module:
        if pretrained is None or str(pretrained).strip().lower() in _NONE_STRINGS:
            logger.warning(
                "CLIPPrior: no pretrained weights for open_clip model %r; the CLIP encoders are randomly "
                "initialised (set `pretrained` to an open_clip tag or a local checkpoint, or load fine-tuned "
                "prior weights with `clip_prior_weights`).",
                model_name,
            )
            pretrained = None
        elif _looks_like_path(str(pretrained)) and not Path(pretrained).expanduser().is_file():
            raise FileNotFoundError(f"CLIP checkpoint {pretrained!r} (pretrained=...) does not exist.")
        elif _looks_like_path(str(pretrained)):
            pretrained = str(Path(pretrained).expanduser())
        try:
            return open_clip.create_model(model_name, pretrained=pretrained)
        except RuntimeError as e:
            if "not found" in str(e).lower() and pretrained is None:
                raise ValueError(
                    f"unknown open_clip model {model_name!r}; known small configs of this bundle: "
                    f"{register_clip_configs()} (see open_clip.list_models() for the others)."
                ) from e
            raise

    def set_tune_clip(self, tune: bool) -> None:
        """Make the visual encoder trainable (``True``) or frozen (``False``, kept in eval mode)."""
        self.tune_clip = bool(tune)
        for p in self.visual.parameters():
            p.requires_grad_(self.tune_clip)
        if not self.tune_clip:
            self.visual.eval()

    def train(self, mode: bool = True) -> CLIPPrior:
        super().train(mode)
        if not self.tune_clip:
            self.visual.eval()
        return self

    def load_prior_weights(self, path: str | os.PathLike, strict: bool = True) -> None:
        """Load fine-tuned prior weights (a ``CLIPPrior`` state dict, possibly inside a VL-DUN checkpoint).

        Raises ``FileNotFoundError`` if the file is missing and ``RuntimeError`` naming the missing, unexpected and
        mis-shaped keys if it does not match this prior (e.g. another CLIP model or another number of prompts).
        """
        sd = load_state_dict_file(path, prefix="clip_prior.")
        own = self.state_dict()
        shape_errors = [
            f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
            for k, v in sd.items()
            if k in own and own[k].shape != v.shape
        ]
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        if shape_errors or (strict and (missing or unexpected)):

            def short(keys: list[str]) -> str:
                return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

            raise RuntimeError(
                f"CLIP prior weights {str(path)!r} do not match CLIPPrior(model_name={self.model_name!r}, "
                f"{len(self.modalities)} modalities, {len(self.degradation_prompts)} degradation prompts, "
                f"similarity={self.similarity!r}). Missing keys: [{short(missing)}]; unexpected keys: "
                f"[{short(unexpected)}]; shape mismatches: [{short(shape_errors)}]."
            )
        self.load_state_dict(sd, strict=strict)
        logger.info(
            f"CLIPPrior: loaded {len(sd)} tensors ({sum(v.numel() for v in sd.values())} values) of the fine-tuned "
            f"prior from {path} (model {self.model_name}, {len(self.modalities)} modalities)"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):
        # weights trained with the other similarity differ by one key; say which setting they need
        has_scale = prefix + "logit_scale" in state_dict
        if any(k.startswith(prefix) for k in state_dict) and has_scale != (self.similarity == "cosine"):
            trained = "cosine" if has_scale else "dot"
            errs.append(
                f"these CLIP prior weights were trained with similarity={trained!r} but the network is built with "
                f"{self.similarity!r}: set clip_similarity to {trained!r} (e.g. `--clip_similarity {trained}`)."
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    # ------------------------------------------------------------------ forward
    def preprocess(self, y: torch.Tensor) -> torch.Tensor:
        """Adapt a medical slice to CLIP's input: 3 channels, CLIP's size (bicubic) and normalisation.

        One channel is repeated to three; three channels are kept; any other count is averaged to one first.
        The whole field of view is resized to the square CLIP input (no centre crop).
        """
        if y.ndim != 4:
            # a plain string concatenation: TorchScript cannot format a tuple of sizes in an f-string
            raise ValueError("CLIPPrior expects (B, C, H, W), got shape " + str(list(y.shape)) + ".")
        y = y.float()
        if y.shape[1] != 3:
            y = y.mean(dim=1, keepdim=True) if y.shape[1] != 1 else y
            y = y.expand(-1, 3, -1, -1)
        if torch.compiler.is_exporting():
            return (self._resize_symbolic(y) - self.pixel_mean) / self.pixel_std
        if tuple(y.shape[-2:]) != self.image_size:
            down = y.shape[-2] > self.image_size[0] or y.shape[-1] > self.image_size[1]
            y = F.interpolate(y, size=self.image_size, mode="bicubic", align_corners=False, antialias=down)
        return (y - self.pixel_mean) / self.pixel_std

    def _resize_symbolic(self, y: torch.Tensor) -> torch.Tensor:
        """The resize of :meth:`preprocess` without a Python branch on the input size, which ``torch.export`` would
        turn into a guard that fixes H and W: both resizes are computed (CLIP-sized, cheap) and the antialiased one
        kept when the slice is larger than CLIP's input. Resizing to the same size is the identity either way."""
        size = y.shape[-2:]
        larger = torch.scalar_tensor(torch.sym_max(size[0] - self.image_size[0], size[1] - self.image_size[1])) > 0
        plain = F.interpolate(y, size=self.image_size, mode="bicubic", align_corners=False, antialias=False)
        smooth = F.interpolate(y, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return torch.where(larger, smooth, plain)

    def encode_image(self, y: torch.Tensor) -> torch.Tensor:
        """``f_mod = E_v(y)`` (B, D)."""
        x = self.preprocess(y)
        if self.tune_clip:
            return self.visual(x)
        with torch.no_grad():
            return self.visual(x)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encode_image(y)
        modality_logits = self.modality_head(f)
        if self.similarity == "dot":
            degradation_logits = f @ self.text_features.t()
        else:
            degradation_logits = (
                self.logit_scale.exp() * F.normalize(f, dim=-1) @ F.normalize(self.text_features, dim=-1).t()
            )
        mod_token = modality_logits.softmax(dim=-1) @ self.modality_embedding
        deg_token = degradation_logits.softmax(dim=-1) @ self.text_features
        tokens = self.token_norm(torch.stack([f, mod_token, deg_token], dim=1))
        return {
            "features": f,
            "modality_logits": modality_logits,
            "degradation_logits": degradation_logits,
            "tokens": tokens,
        }

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, embed_dim={self.embed_dim}, image_size={self.image_size}, "
            f"modalities={len(self.modalities)}, prompts={len(self.degradation_prompts)}, tune_clip={self.tune_clip}, "
            f"similarity={self.similarity!r}"
        )
