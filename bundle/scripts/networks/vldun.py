"""VL-DUN: vision-language controlled deep unfolding network (paper section 3, Fig. 2, appendix E).

Layout (Restormer-style U shape; each level is one unfolding stage, K = 8 stages)::

    y ─┬─ CLIPPrior ───────────────────────────── prior tokens P (B, 3, D), modality / degradation logits
       ├─ Conv3x3 -> y_1 (C) ─ Down -> y_2 (2C) ─ Down -> y_3 (4C) ─ Down -> y_4 (8C)     measurement embeddings
       └─ Conv3x3 -> x
    enc1 (C,  H)    : AMGDM(x, y_1, P), N1 x MDPMM ─────────────────────────────────┐ skip
    enc2 (2C, H/2)  : Down, AMGDM(., y_2, P), N2 x MDPMM ─────────────────────┐     │
    enc3 (4C, H/4)  : Down, AMGDM(., y_3, P), N3 x MDPMM ───────────────┐     │     │
    latent (8C,H/8) : Down, AMGDM(., y_4, P), N4 x MDPMM                │     │     │
    dec3 (4C, H/4)  : Up, cat, Conv1x1 8C->4C, AMGDM(., y_3, P), N3 x MDPMM     │     │
    dec2 (2C, H/2)  : Up, cat, Conv1x1 4C->2C, AMGDM(., y_2, P), N2 x MDPMM ────┘     │
    dec1 (2C, H)    : Up, cat (no reduce),     AMGDM(., Conv1x1(y_1), P), N1 x MDPMM ─┘
    refine (2C, H)  : AMGDM(., Conv1x1(y_1), P), N_ref x MDPMM       (dropped if num_refinement_blocks == 0)
    restored = y + Conv3x3(2C -> out)      (rec head with global residual)
    seg      = light CNN on the final 2C features: Conv3x3-BN-ReLU, Conv3x3-BN-ReLU, Conv1x1 -> num_classes

Every stage is one proximal-gradient step: AMGDM (gradient step on the data term, guided by the CLIP prior) then
MDPMM blocks (proximal map). Inputs of any H x W are padded (reflect) to a multiple of 8 and the outputs cropped.

**Outputs.** ``output="dict"`` (default) returns a dict with ``restored`` (B, out, H, W), ``seg`` (B, K, H, W)
logits, ``modality_logits`` (B, M), ``degradation_logits`` (B, D_deg) and, with ``return_stages``, ``stages``: one
(B, out, H, W) image per unfolding stage. Keys of disabled parts are absent (no ``seg`` without the seg head, no
``restored`` without the rec head, no logits without the CLIP prior). In data-consistency mode with measurements the
dict also holds ``restored_complex`` (the consistent complex image) and, while training, ``restored_pre_dc``: the
rec head's own estimate before the projection, the image the same weights give blind (``VLDUNLoss``'s
``lambda_pre_dc`` supervises it). ``output="seg"`` returns only the
segmentation logits tensor (what MONAI Label and ``verify_net_in_out`` expect), ``output="restored"`` only the
restored image.

**Per-stage images** (paper Fig. 14): with ``stage_heads=True`` each stage gets a light decoding head
(Conv3x3 C_stage -> out); the stage image is ``y + Up_bilinear(head(features))``. These heads only learn when a loss
uses ``stages`` (deep supervision); ``return_stages`` without ``stage_heads`` is an error.

**Ablation switches** (Table 3), each removing its modules: ``use_clip_prior=False`` (no CLIP at all; the AMGDM
attention uses self-derived tokens, see ``amgdm.py``), ``tune_clip=False`` (CLIP visual encoder frozen),
``freq_decouple=False`` (non-decoupled MDPMM, see ``mdpmm.py``), ``seg_head=False``, ``rec_head=False``.

**Construction.** The constructor takes typed plain values; its size defaults are the ``small`` preset's.
:meth:`VLDUN.from_preset` (``train.json``'s ``network_def``) is the config layer's entry: the preset, command-line
strings and old argument names are handled by :func:`~scripts.networks.presets.preset_arguments`. The heads are in
``heads.py``, the stage layout in ``stage.py``; the BiMamba settings reach every layer as one
:class:`~scripts.networks.bimamba.MambaConfig`.

**Parameter count.** :meth:`VLDUN.num_parameters` counts trainable parameters *excluding the open_clip encoder*
(``clip_prior.visual``; the text tower is not kept). The paper's 22.77M (Table 5) cannot include a CLIP (ViT-B/32
alone is 151M, its visual tower 88M), so the ``paper`` preset is sized to 22.77M without it; the small trainable
parts of the prior (modality classifier, modality embedding, token norm) and every per-stage prior projection are
counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.utils import convert_to_dst_type
from torch import nn

from ..prompts import MODALITIES
from ..transforms.kspace import ifft2c
from .bimamba import MambaConfig
from .clip_prior import CLIPPrior
from .data_consistency import DCCascades, KspaceDataConsistency, check_measurements, complex_to_channels
from .heads import SEG_DECODERS, SEG_UNET_FEATURES, RecHead, SegHead, SegUNetHead
from .presets import BOOL_ARGS, DEFAULT_PRESET, PRESETS, preset_arguments, preset_config
from .restormer import Downsample, Upsample
from .stage import FULL_RESOLUTION_STAGES, STAGE_NAMES, UnfoldingStage, stage_layout

__all__ = ["VLDUN", "PRESETS", "DEFAULT_PRESET", "preset_config", "STAGE_NAMES"]

OUTPUT_MODES = ("dict", "seg", "restored")


class VLDUN(nn.Module):
    """Vision-Language controlled Deep Unfolding Network for joint restoration and segmentation.

    Build a named size with :meth:`from_preset` (``VLDUN.from_preset("paper")``); the defaults below are the
    ``small`` preset's.

    Args:
        in_channels: channels of the degraded input y.
        num_classes: segmentation classes (logit channels, background included).
        out_channels: channels of the restored image (the global residual needs ``out_channels == in_channels``;
            otherwise no residual is added).
        dim: width C of the first level; the levels are C, 2C, 4C, 8C.
        num_blocks: MDPMM blocks of enc1, enc2, enc3, latent (the decoder mirrors them: dec3 = N3, dec2 = N2,
            dec1 = N1).
        num_refinement_blocks: MDPMM blocks of the refinement stage (0 drops that stage: K = 7).
        heads: cross-attention heads per level.
        ffn_expansion_factor, bias, layernorm_type: Restormer settings of GDFN / attention / norms.
        pool_size, low_res_gdfn: MDPMM frequency split (see ``mdpmm.py``).
        d_state, d_conv, expand, dt_rank, scan_backend, chunk_size: BiMamba2D settings (one
            :class:`~scripts.networks.bimamba.MambaConfig` for every layer; ``scan_backend`` is its ``backend``).
        use_clip_prior: build the CLIP prior (False: "w/o CLIP" ablation).
        clip_model, clip_pretrained, clip_prior_weights, tune_clip, clip_similarity, clip_image_size, modalities,
            degradation_prompts: see :class:`CLIPPrior`.
        num_modalities: number of modality classes (default ``len(modalities)``, i.e. ``len(scripts.prompts.
            MODALITIES)``); only the count matters to the network.
        freq_decouple: frequency-decoupled MDPMM (False: "w/o FD" ablation).
        seg_head, rec_head: build the :class:`SegHead` / :class:`RecHead` (False: "w/o Seg/Rec Head" ablations).
        seg_hidden: channels of the seg head's hidden convolutions.
        seg_norm: the seg head's norm, a MONAI norm spec (``"batch"``, ``("instance", {"affine": True})``, ...; see
            :class:`SegHead`).
        seg_decoder: ``"conv"`` (the paper's :class:`SegHead` on the features), ``"unet"`` (:class:`SegUNetHead`:
            a ``BasicUNet`` on the detached restored image and the features; ``seg_hidden`` is then unused) or
            ``"image_unet"`` (that ``BasicUNet`` on the detached restored image alone: the sequential pipeline inside
            one network, trained at once; the trunk is the restoration's only, so ``seg_feature_grad``, ``dc_to_seg``
            and gradnorm balancing have nothing to act on, and no ``shared`` output is returned).
        seg_unet_features: the six ``BasicUNet`` widths of the ``"unet"`` / ``"image_unet"`` seg head.
        seg_unet_dropout: that head's dropout probability (:class:`SegUNetHead`; unused by ``"conv"``).
        seg_feature_grad: the factor on the segmentation loss's gradient into the shared features (1: the paper's
            joint training; 0: the seg head reads them detached, so only the restoration trains the trunk). The
            forward values are the same for every factor.
        stage_heads: build the per-stage decoding heads needed by ``return_stages``.
        step_size_init: initial AMGDM step size rho.
        data_consistency: build the known-operator parts (``data_consistency.py``): the exact k-space gradient step
            in the full-resolution stages (enc1, dec1, refine) and a DC projection ending the rec head. They act only
            when ``forward`` is given ``kspace`` and ``mask``; without them the network is the blind one.
        dc_projection: ``"hard"`` (measured samples of the output replaced by the measurements) or ``"soft"``
            (learned weight).
        dc_cascades: VarNet-style cascades (:class:`~scripts.networks.data_consistency.DCCascades`) between the rec
            head's estimate and its final projection, in DC mode with measurements only (0: none).
        dc_cascade_features: the six ``BasicUNet`` widths of each cascade.
        dc_to_seg: in DC mode with measurements, the seg head also reads the consistent image (its correction
            over the input, embedded by a zero-initialised 3x3 conv and added to the shared features), so that the
            information the measurements and cascades add reaches the segmentation too (read only: the seg loss
            does not train the restoration through it).
        output: ``"dict"``, ``"seg"`` or ``"restored"`` (what ``forward`` returns).
        return_stages: add ``stages`` (list of per-stage images) to the dict output.

    Raises:
        TypeError: a boolean argument given as a string (convert it where the command line enters, e.g. with
            :meth:`from_preset` or :func:`scripts.flags.as_bool`).
        ValueError: inconsistent sizes or switches (4 entries per level, at least one head, ...).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        out_channels: int = 1,
        dim: int = 16,
        num_blocks: Sequence[int] = (1, 1, 1, 1),
        num_refinement_blocks: int = 0,
        heads: Sequence[int] = (1, 1, 2, 4),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        layernorm_type: str = "WithBias",
        pool_size: int = 2,
        low_res_gdfn: bool = False,
        d_state: int = 8,
        d_conv: int = 4,
        expand: float = 1.0,
        dt_rank: int | str = "auto",
        scan_backend: str = "auto",
        chunk_size: int | None = None,
        use_clip_prior: bool = True,
        clip_model: str = "vldun-clip-small",
        clip_pretrained: str | None = None,
        clip_prior_weights: str | None = None,
        tune_clip: bool = True,
        clip_similarity: str = "cosine",
        clip_image_size: int | None = None,
        num_modalities: int | None = None,
        modalities: Sequence[str] | None = None,
        degradation_prompts: Sequence[str] | None = None,
        freq_decouple: bool = True,
        seg_head: bool = True,
        rec_head: bool = True,
        seg_hidden: int = 32,
        seg_norm: str | tuple | list = "batch",
        seg_decoder: str = "conv",
        seg_unet_features: Sequence[int] = SEG_UNET_FEATURES,
        seg_unet_dropout: float = 0.0,
        seg_feature_grad: float = 1.0,
        stage_heads: bool = False,
        step_size_init: float = 1.0,
        data_consistency: bool = False,
        dc_projection: str = "hard",
        dc_cascades: int = 0,
        dc_cascade_features: Sequence[int] = (8, 8, 16, 32, 64, 8),
        dc_to_seg: bool = False,
        output: str = "dict",
        return_stages: bool = False,
    ) -> None:
        super().__init__()
        switches = locals()
        for name in BOOL_ARGS:
            if isinstance(switches[name], str):
                raise TypeError(
                    f"VLDUN argument {name} must be a bool, got the string {switches[name]!r}; convert command-line "
                    "values where they enter (VLDUN.from_preset or scripts.flags.as_bool do)."
                )
        num_blocks, heads = [int(n) for n in num_blocks], [int(h) for h in heads]
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"num_blocks and heads need 4 entries (one per level), got {num_blocks}, {heads}.")
        if not (seg_head or rec_head):
            raise ValueError("at least one of seg_head and rec_head must be True.")
        if seg_decoder not in SEG_DECODERS:
            raise ValueError(f"seg_decoder must be one of {SEG_DECODERS}, got {seg_decoder!r}.")
        if not 0.0 <= float(seg_feature_grad) <= 1.0:
            raise ValueError(f"seg_feature_grad must be in [0, 1], got {seg_feature_grad}.")
        if data_consistency and not (rec_head and in_channels == out_channels == 1):
            raise ValueError("data_consistency needs the rec head and single-channel images (in/out_channels 1).")
        if modalities is None:
            n_mod = len(MODALITIES) if num_modalities is None else int(num_modalities)
            modalities = MODALITIES if n_mod == len(MODALITIES) else tuple(f"modality_{i}" for i in range(n_mod))
        elif num_modalities is not None and int(num_modalities) != len(modalities):
            raise ValueError(f"num_modalities={num_modalities} but {len(modalities)} modality names were given.")
        #: the preset-sized arguments (what ``PRESETS`` entries hold); ``from_preset`` records the name in ``preset``
        self.arch = {
            "dim": dim,
            "num_blocks": num_blocks,
            "num_refinement_blocks": num_refinement_blocks,
            "heads": heads,
            "d_state": d_state,
            "expand": expand,
            "clip_model": clip_model,
            "seg_hidden": seg_hidden,
        }
        self.preset: str | None = None
        self.in_channels, self.out_channels, self.num_classes = in_channels, out_channels, num_classes
        self.use_clip_prior, self.use_seg_head, self.use_rec_head = use_clip_prior, seg_head, rec_head
        self.freq_decouple = freq_decouple
        self.seg_decoder, self.seg_feature_grad = seg_decoder, float(seg_feature_grad)
        self.has_stage_heads = stage_heads
        self.set_output(output)
        self.return_stages = return_stages
        self.pad_multiple = 8  # three 2x downsamplings

        if use_clip_prior:
            self.clip_prior: CLIPPrior | None = CLIPPrior(
                model_name=clip_model,
                pretrained=clip_pretrained,
                modalities=modalities,
                degradation_prompts=degradation_prompts,
                tune_clip=tune_clip,
                similarity=clip_similarity,
                clip_prior_weights=clip_prior_weights,
                image_size=clip_image_size,
            )
            prior_dim: int | None = self.clip_prior.embed_dim
        else:
            self.clip_prior, prior_dim = None, None

        c1, c2, c3, c4 = dim, 2 * dim, 4 * dim, 8 * dim
        mamba = MambaConfig(d_state, d_conv, expand, dt_rank, scan_backend, chunk_size)
        kw_gd = {"bias": bias, "layernorm_type": layernorm_type, "step_size_init": step_size_init, "mamba": mamba}
        kw_prox = {
            "ffn_expansion_factor": ffn_expansion_factor,
            "bias": bias,
            "layernorm_type": layernorm_type,
            "freq_decouple": freq_decouple,
            "pool_size": pool_size,
            "low_res_gdfn": low_res_gdfn,
            "mamba": mamba,
        }

        # measurement embeddings y_l (the "image" stream: only down-sampled, never updated)
        self.y_embed = nn.Conv2d(in_channels, c1, kernel_size=3, padding=1, bias=bias)
        self.y_down1_2, self.y_down2_3, self.y_down3_4 = Downsample(c1), Downsample(c2), Downsample(c3)
        self.y_level1_up = nn.Conv2d(c1, c2, kernel_size=1, bias=bias)  # y_1 for the 2C stages at full size
        # feature stream
        self.patch_embed = nn.Conv2d(in_channels, c1, kernel_size=3, padding=1, bias=bias)
        specs = stage_layout(dim, num_blocks, num_refinement_blocks, heads)
        names = [n for n, _, _, _ in specs]
        self.stage_names, self.stage_dims = tuple(names), tuple(d for _, d, _, _ in specs)
        self.stages = nn.ModuleDict(
            {
                n: UnfoldingStage(
                    d, nb, nh, prior_dim, kw_gd, kw_prox, data_consistency and n in FULL_RESOLUTION_STAGES
                )
                for n, d, nb, nh in specs
            }
        )
        self.down1_2, self.down2_3, self.down3_4 = Downsample(c1), Downsample(c2), Downsample(c3)
        self.up4_3, self.reduce_chan_level3 = Upsample(c4), nn.Conv2d(c4, c3, kernel_size=1, bias=bias)
        self.up3_2, self.reduce_chan_level2 = Upsample(c3), nn.Conv2d(c3, c2, kernel_size=1, bias=bias)
        self.up2_1 = Upsample(c2)  # -> C, concatenated with enc1 -> 2C (no reduction, as Restormer)

        # the paper's two heads (heads.py); the layers are created in this order so a seed gives the same weights
        self.rec_head: RecHead | None = RecHead(c2, out_channels, bias) if rec_head else None
        self.data_consistency = data_consistency
        # imaginary part of the complex image estimate (the real part is the rec head) and the output projection
        self.rec_head_imag: RecHead | None = RecHead(c2, 1, bias) if data_consistency else None
        self.dc_projection = KspaceDataConsistency(dc_projection) if data_consistency else None
        self.seg_head: SegHead | SegUNetHead | None = None
        if seg_head and seg_decoder in ("unet", "image_unet"):
            image_channels = out_channels if rec_head else in_channels  # the input image when there is no restoration
            feature_channels = c2 if seg_decoder == "unet" else 0
            self.seg_head = SegUNetHead(
                feature_channels, num_classes, image_channels, seg_unet_features, seg_norm, seg_unet_dropout
            )
        elif seg_head:
            self.seg_head = SegHead(c2, num_classes, seg_hidden, seg_norm)
        if self.has_stage_heads:
            self.stage_decoders = nn.ModuleDict(
                {n: nn.Conv2d(d, out_channels, kernel_size=3, padding=1) for n, d in zip(names, self.stage_dims)}
            )
        else:
            self.stage_decoders = None
        # built last, so that a seed gives the other layers the weights they had before the cascades existed
        self.dc_cascades = (
            DCCascades(dc_cascades, dc_cascade_features) if data_consistency and int(dc_cascades) > 0 else None
        )
        self.dc_seg_embed: nn.Conv2d | None = None
        # the image-only seg head already reads the consistent image: the feed into the features would be unused
        if data_consistency and dc_to_seg and seg_head and seg_decoder != "image_unet":
            self.dc_seg_embed = nn.Conv2d(2, c2, kernel_size=3, padding=1)
            nn.init.zeros_(self.dc_seg_embed.weight)  # a fresh network segments as the blind one does
            nn.init.zeros_(self.dc_seg_embed.bias)
        self._channels_last()

    def _channels_last(self) -> None:
        """Keep the network's own 4D weights (not the CLIP encoder's) in channels-last memory.

        oneDNN's convolutions run in the memory format of their input or weight; channels-last made the step's
        depthwise 3x3 convs 3x and its 1x1 convs 2x faster than NCHW on our CPU (forward + backward), and lets the
        per-pixel layer norms run on a contiguous (B, H, W, C) view. Values, names and shapes of the parameters
        are unchanged, so checkpoints load either way. The ``"unet"`` seg head stays NCHW and is fed NCHW: its
        instance norms were about 2x slower on channels-last tensors (its forward + backward at 8x33x128x128). The
        DC cascades' BasicUNets stay channels-last: made NCHW too, the demo main job took 299 s, not 278 s (one run).
        """
        skip = set() if self.clip_prior is None else {id(p) for p in self.clip_prior.parameters()}
        if isinstance(self.seg_head, SegUNetHead):
            skip |= {id(p) for p in self.seg_head.parameters()}
        with torch.no_grad():
            for p in self.parameters():
                # 1x1 kernels are the same memory either way; converting them only changes their strides, which
                # DDP's gradient buckets then warn about
                if p.dim() == 4 and p.shape[-2:] != (1, 1) and id(p) not in skip:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **overrides: Any) -> VLDUN:
        """The network of preset ``name`` (``paper``, ``small``, ``tiny``) with constructor ``overrides``.

        This is where configs and the command line enter: boolean overrides given as strings (``--network_def#
        freq_decouple false``) become bools (:func:`scripts.flags.as_bool`, which rejects other spellings), and the
        old names ``use_seg_head`` / ``use_rec_head`` are mapped to ``seg_head`` / ``rec_head`` with a warning.

        Example::

            >>> net = VLDUN.from_preset("tiny", num_classes=2, freq_decouple="false")
            >>> net.preset, net.arch["dim"], net.freq_decouple
            ('tiny', 8, False)
        """
        net = cls(**preset_arguments(name, overrides))
        net.preset = name
        return net

    def set_output(self, output: str) -> None:
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}.")
        if output == "seg" and not self.use_seg_head:
            raise ValueError("output='seg' needs seg_head=True.")
        if output == "restored" and not self.use_rec_head:
            raise ValueError("output='restored' needs rec_head=True.")
        self.output = output

    def num_parameters(self, trainable_only: bool = True, include_clip_encoder: bool = False) -> int:
        """Parameter count; by default trainable ones without the open_clip encoder (the paper's convention)."""
        skip = set()
        if not include_clip_encoder and self.clip_prior is not None:
            skip = {id(p) for p in self.clip_prior.visual.parameters()}
        return sum(
            p.numel() for p in self.parameters() if id(p) not in skip and (p.requires_grad or not trainable_only)
        )

    # ------------------------------------------------------------------ forward
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.pad_multiple, (-w) % self.pad_multiple
        if ph == 0 and pw == 0:
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, x: torch.Tensor, kspace: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """``x`` (B, in, H, W) degraded image; ``kspace`` (B, 1, H, W) complex or (B, 2, H, W) real/imaginary
        measured k-space (zero outside the mask) and ``mask`` (B, 1, H, W) of a network built with
        ``data_consistency=True`` (both or neither; ignored otherwise)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VLDUN expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}.")
        if (kspace is None) != (mask is None):
            raise ValueError("data consistency needs both `kspace` and `mask` (or neither, for the blind network).")
        if self.return_stages and not self.has_stage_heads:
            raise ValueError("return_stages=True needs a network built with stage_heads=True.")
        # MetaTensor.__torch_function__ costs tens of microseconds per op and the CPU scan issues ~10^5 small ops per
        # forward (profiled: 5x slower validation); run on a plain tensor and give the outputs the input's metadata
        meta_ref = x if isinstance(x, MetaTensor) else None
        if meta_ref is not None:
            x = x.as_tensor()
        h, w = x.shape[-2:]
        out: dict[str, Any] = {}
        measured = None
        if self.data_consistency and kspace is not None:
            kspace, mask = check_measurements(kspace, mask, x)
            measured = {"z0": ifft2c(kspace), "kspace": kspace, "mask": mask}
        tokens = None
        if self.clip_prior is not None:
            prior = self.clip_prior(x)
            tokens = prior["tokens"]
            out["modality_logits"] = prior["modality_logits"]
            out["degradation_logits"] = prior["degradation_logits"]

        xp = self._pad(x).contiguous(memory_format=torch.channels_last)
        y1 = self.y_embed(xp)
        y2 = self.y_down1_2(y1)
        y3 = self.y_down2_3(y2)
        y4 = self.y_down3_4(y3)
        y1c2 = self.y_level1_up(y1)
        st = self.stages
        feats: dict[str, torch.Tensor] = {}

        e1 = feats["enc1"] = st["enc1"](self.patch_embed(xp), y1, tokens, measured)
        e2 = feats["enc2"] = st["enc2"](self.down1_2(e1), y2, tokens)
        e3 = feats["enc3"] = st["enc3"](self.down2_3(e2), y3, tokens)
        z = feats["latent"] = st["latent"](self.down3_4(e3), y4, tokens)
        z = self.reduce_chan_level3(torch.cat([self.up4_3(z), e3], dim=1))
        z = feats["dec3"] = st["dec3"](z, y3, tokens)
        z = self.reduce_chan_level2(torch.cat([self.up3_2(z), e2], dim=1))
        z = feats["dec2"] = st["dec2"](z, y2, tokens)
        z = feats["dec1"] = st["dec1"](torch.cat([self.up2_1(z), e1], dim=1), y1c2, tokens, measured)
        if "refine" in st:
            z = feats["refine"] = st["refine"](z, y1c2, tokens, measured)

        residual = xp if self.out_channels == self.in_channels else 0.0
        if measured is not None:
            # the residual is added to the input image, as in the blind network, then projected onto the
            # measurements: on top of the complex zero-filled image instead, the one rec head would have to learn
            # target - |z0| for blind batches and target - z0 for measured ones (measurement dropout trains both),
            # and the measured batches gained ~nothing. With a real target, a residual that is right blind is right
            # here too (the projection only replaces the measured samples with the exact ones).
            real, imag = self.rec_head(z)[..., :h, :w], self.rec_head_imag(z)[..., :h, :w]
            image = self.dc_projection(x.float() + torch.complex(real.float(), imag.float()), kspace, mask)
            if self.dc_cascades is not None:
                image = self.dc_projection(self.dc_cascades(image, kspace, mask), kspace, mask)
            out["restored_complex"] = image
            out["restored"] = image.abs().to(x.dtype)
            if self.training and self.output == "dict" and torch.is_grad_enabled():
                # the hard projection erases the estimate's error on the measured samples (the low frequencies
                # always among them), so with measurements the loss never sees that part of the rec head's output;
                # only the blind batches of measurement dropout do, and on ACDC every restoration spike came from
                # one of them (gradient norm 34 on the rec head; under 1.7 on measured batches). This is that
                # blind image, for the loss to supervise on every batch.
                out["restored_pre_dc"] = (x.float() + real.float()).to(x.dtype)
        elif self.rec_head is not None:
            out["restored"] = (self.rec_head(z) + residual)[..., :h, :w]
        if self.seg_head is not None:
            # the UNet heads read the restoration detached, as the dc_to_seg gain: the rec loss makes it
            image = None
            if self.seg_decoder != "conv":
                image = self._pad((out["restored"] if "restored" in out else x).detach().to(z.dtype))
            if self.seg_decoder == "image_unet":
                z_seg = image.contiguous()
            else:
                # the same values; only the segmentation gradient into the shared trunk is scaled (0 keeps a zero
                # gradient on the graph rather than none, so gradnorm balancing sees "no seg gradient", not a wrapper)
                g = self.seg_feature_grad
                z_seg = z if g == 1.0 else g * z + (1.0 - g) * z.detach()
                if self.dc_seg_embed is not None and measured is not None:
                    # detached: the seg loss trained through it pulls the restored image towards what segments
                    # (demo: MRI / CT gains +1.2 / +1.0 dB against +2.4 / +2.6 without the feed); the restoration
                    # is the rec loss's, segmentation only reads it
                    gain = complex_to_channels(out["restored_complex"].detach() - x.float())
                    gain = F.pad(gain.to(z.dtype), (0, z.shape[-1] - w, 0, z.shape[-2] - h))
                    z_seg = z_seg + self.dc_seg_embed(gain.contiguous(memory_format=torch.channels_last))
                if image is not None:
                    z_seg = torch.cat([image, z_seg], dim=1).contiguous()  # NCHW for the UNet head (_channels_last)
            out["seg"] = self.seg_head(z_seg)[..., :h, :w]
        if self.training and self.output == "dict" and torch.is_grad_enabled() and self.seg_decoder != "image_unet":
            out["shared"] = z  # the features both heads read: the joint loss balances the tasks' gradients here
        if self.return_stages:
            size = xp.shape[-2:]
            out["stages"] = [
                (F.interpolate(self.stage_decoders[n](f), size=size, mode="bilinear", align_corners=False) + residual)[
                    ..., :h, :w
                ]
                for n, f in feats.items()
            ]
        for key in {"restored", "seg"} & set(out):  # callers get plain contiguous maps whatever the internal layout
            out[key] = out[key].contiguous()
            if meta_ref is not None:
                out[key] = convert_to_dst_type(out[key], meta_ref, dtype=out[key].dtype)[0]
        if self.output == "seg":
            return out["seg"]
        if self.output == "restored":
            return out["restored"]
        return out
