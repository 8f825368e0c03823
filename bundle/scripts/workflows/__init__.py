"""Pieces of the bundle workflows (``configs/*.json``) that MONAI does not provide.

- ``losses``: :class:`VLDUNLoss`, the joint restoration + segmentation + modality + degradation objective.
- ``engines``: :class:`VLDUNTrainer` / :class:`VLDUNEvaluator` for dict-output networks, :class:`PrepareVLDUNBatch`,
  :class:`LossTermsHandler` (per-term epoch means), :class:`TrackingParamsHandler` (run settings to MLflow).
- ``checkpoint``: atomic checkpoint writes, :class:`BestModelSaver` (plain ``state_dict`` ``model.pt``),
  :class:`LatestCheckpointSaver` and :class:`ResumeHandler`.
- ``slices``: 2D slice sampling from volumes, :class:`FixedSeedd` (per-sample fixed seeds for evaluation).
- ``outputs``: dict-prediction splitting, intensity map recording and inversion.
- ``inferers``: :class:`SliceBySliceInferer` (a 2D network over 3D volumes).
- ``io``: inference inputs (listing, screening bad files), :class:`SaveRestoredd`, per-case names for reports.
- ``report``: :class:`VisualReportHandler` (PNG panels of evaluation cases).

See ``bundle/docs/workflows.md``.
"""

from .checkpoint import BestModelSaver, LatestCheckpointSaver, ResumeHandler, save_atomic
from .engines import (
    LossTermsHandler,
    PrepareVLDUNBatch,
    TimeBudgetHandler,
    TrackingParamsHandler,
    VLDUNEvaluator,
    VLDUNTrainer,
    class_pair,
    loss_terms,
)
from .inferers import SliceBySliceInferer
from .io import InputError, InputScreen, SaveRestoredd, case_meta, inference_datalist, list_inputs
from .losses import CharbonnierLoss, VLDUNLoss
from .outputs import InverseIntensityMapd, RecordIntensityMapd, SplitPredictiond
from .report import VisualReportHandler
from .slices import FixedSeedd, RandSampleSlicesd, SampleSlicesd

__all__ = [
    "BestModelSaver",
    "CharbonnierLoss",
    "FixedSeedd",
    "InputError",
    "InputScreen",
    "InverseIntensityMapd",
    "LatestCheckpointSaver",
    "LossTermsHandler",
    "PrepareVLDUNBatch",
    "RandSampleSlicesd",
    "RecordIntensityMapd",
    "ResumeHandler",
    "SampleSlicesd",
    "SaveRestoredd",
    "SliceBySliceInferer",
    "SplitPredictiond",
    "TimeBudgetHandler",
    "TrackingParamsHandler",
    "VLDUNEvaluator",
    "VLDUNLoss",
    "VLDUNTrainer",
    "VisualReportHandler",
    "case_meta",
    "class_pair",
    "inference_datalist",
    "list_inputs",
    "loss_terms",
    "save_atomic",
]
