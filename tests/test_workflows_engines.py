"""Engines for dict-output networks: batch preparation, output flattening, loss terms, metrics wiring."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.data import DataLoader, Dataset
from monai.engines.utils import IterationEvents
from monai.handlers import MeanDice, PeakSignalToNoiseRatio, from_engine
from monai.networks.nets import UNet
from monai.transforms import Activationsd, AsDiscreted, Compose

from scripts.workflows.engines import (
    LossTermsHandler,
    PrepareVLDUNBatch,
    ValidationHandler,
    VLDUNEvaluator,
    VLDUNTrainer,
    class_pair,
    flatten_output,
    loss_terms,
)
from scripts.workflows.losses import VLDUNLoss


class DictUNet(torch.nn.Module):
    """A small MONAI-UNet with VL-DUN's output dict (test stand-in for the real network)."""

    def __init__(self, num_classes: int = 4, num_modalities: int = 2, num_degradations: int = 6, **_):
        super().__init__()
        self.unet = UNet(2, 1, 1 + num_classes, channels=(8, 16), strides=(2,), num_res_units=0)
        self.mod = torch.nn.Linear(1, num_modalities)
        self.deg = torch.nn.Linear(1, num_degradations)

    def forward(self, x):
        y = self.unet(x)
        g = x.mean(dim=(2, 3))
        return {
            "restored": x + y[:, :1],
            "seg": y[:, 1:],
            "modality_logits": self.mod(g),
            "degradation_logits": self.deg(g),
        }


class Oracle(torch.nn.Module):
    """Segments x > 0.5 perfectly, 'restores' by identity, classifies modality by brightness."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        s = (x - 0.5) * 100
        m = x.mean(dim=(1, 2, 3))[:, None]
        return {"restored": x, "seg": torch.cat([-s, s], 1), "modality_logits": torch.cat([0.5 - m, m - 0.5], 1)}


def _data(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        img = torch.rand(1, size, size, generator=g) * (0.6 if i % 2 else 1.0)
        items.append(
            {
                "image": img,
                "target": (img + 0.05 * torch.randn(img.shape, generator=g)).clamp(0, 1),
                "label": (img > 0.5).float(),
                "modality": int(img.mean() > 0.5),
                "degradation": 4 + i % 2,
                "sample_id": f"c{i}",
            }
        )
    return items


def test_prepare_batch_and_flatten():
    batch = {"image": torch.zeros(2, 1, 4, 4), "label": torch.ones(2, 1, 4, 4), "modality": [0, 1], "x": 3}
    img, tg = PrepareVLDUNBatch()(batch, torch.device("cpu"))
    assert img.shape == (2, 1, 4, 4) and set(tg) == {"label", "modality"}
    assert torch.equal(tg["modality"], torch.tensor([0, 1]))
    with pytest.raises(KeyError):
        PrepareVLDUNBatch()({"label": 1})
    raw = {"image": 1, "pred": {"seg": 2, "restored": 3, "tokens": 4}, "label": {"label": 5, "target": 6}}
    out = flatten_output(raw)
    assert out == {"image": 1, "pred": 2, "restored": 3, "label": 5, "target": 6}
    out = flatten_output({"pred": {"restored": 3}, "label": torch.zeros(1)})
    assert set(out) == {"restored", "label"}, "no seg output: no pred key; tensor label untouched"


def test_trainer_logs_every_term_and_learns():
    torch.manual_seed(0)
    net = DictUNet(num_classes=2)
    loss = VLDUNLoss(lambda_rec=1.0)  # the weights the sum below checks
    loader = DataLoader(Dataset(_data()), batch_size=4)
    trainer = VLDUNTrainer(
        device=torch.device("cpu"),
        max_epochs=12,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2),
        loss_function=loss,
        train_handlers=[LossTermsHandler()],
    )
    per_iter, per_epoch = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: per_iter.append(loss_terms(e.state.output)))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: per_epoch.append(dict(e.state.metrics)))
    trainer.run()
    assert set(per_iter[0]) == {"loss", "loss_rec", "loss_seg", "loss_mod", "loss_deg"}
    first = per_iter[:2]
    assert per_epoch[0]["train_loss_seg"] == pytest.approx(sum(t["loss_seg"] for t in first) / 2)
    total = per_iter[0]
    assert total["loss"] == pytest.approx(
        total["loss_rec"] + total["loss_seg"] + 0.1 * total["loss_mod"] + 0.1 * total["loss_deg"], rel=1e-5
    )
    assert per_epoch[-1]["train_loss"] < 0.7 * per_epoch[0]["train_loss"]
    out = trainer.state.output[0]  # decollated
    assert out["pred"].shape == (2, 16, 16) and out["restored"].shape == (1, 16, 16) and "target" in out


def _one_epoch(seen=None, **trainer_kwargs):
    torch.manual_seed(0)
    net = DictUNet(num_classes=2)
    trainer = VLDUNTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(Dataset(_data()), batch_size=4),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), 0.1),
        loss_function=VLDUNLoss(lambda_rec=100.0),  # large gradients: the norm is far above the clip
        **trainer_kwargs,
    )
    if seen is not None:  # handlers run in registration order: this one sees the gradients the optimiser will use
        trainer.add_event_handler(
            IterationEvents.BACKWARD_COMPLETED,
            lambda e: seen.append(float(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]))),
        )
    trainer.run()
    return trainer, [p.detach().clone() for p in net.parameters()]


def test_grad_clip_norm_bounds_the_step_and_off_is_the_plain_trainer():
    seen_free, seen_clipped = [], []
    _, free = _one_epoch(seen_free, grad_clip_norm=None)
    trainer, clipped = _one_epoch(seen_clipped, grad_clip_norm=0.5)
    assert min(seen_free) > 5.0, "the test needs gradients above the clip"
    assert max(seen_clipped) == pytest.approx(0.5, rel=1e-4)
    assert trainer.state.grad_norm > 0.5  # the norm before clipping is kept
    assert any(not torch.equal(a, b) for a, b in zip(free, clipped))
    _, plain = _one_epoch()  # off: the same computation as a trainer built without the argument
    assert all(torch.equal(a, b) for a, b in zip(free, plain))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), "abc", [1.0]])
def test_grad_clip_norm_refuses_values_that_cannot_clip(bad):
    with pytest.raises(ValueError, match="grad_clip_norm must be a positive finite number"):
        _one_epoch(grad_clip_norm=bad)


def test_grad_clip_norm_null_from_the_command_line_is_off():
    trainer, _ = _one_epoch(grad_clip_norm="null")
    assert trainer.grad_clip_norm is None and not hasattr(trainer.state, "grad_norm")
    assert _one_epoch(grad_clip_norm="0.5")[0].grad_clip_norm == 0.5


def test_grad_clip_norm_refuses_gradient_accumulation():
    with pytest.raises(ValueError, match="accumulation_steps"):
        _one_epoch(grad_clip_norm=1.0, accumulation_steps=2)


def test_evaluator_wires_predictions_to_the_right_targets():
    data = _data(n=6)
    evaluator = VLDUNEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=3),
        network=Oracle(),
        postprocessing=Compose(
            [Activationsd("pred", softmax=True), AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=2)]
        ),
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        additional_metrics={
            "psnr": PeakSignalToNoiseRatio(max_val=1.0, output_transform=from_engine(["restored", "target"])),
            "acc": Accuracy(output_transform=class_pair("modality_logits", "modality")),
        },
    )
    evaluator.run()
    m = evaluator.state.metrics
    assert m["dice"] == pytest.approx(1.0)
    assert m["acc"] == pytest.approx(1.0)
    expected = sum(10 * math.log10(1 / float(((d["image"] - d["target"]) ** 2).mean())) for d in data) / len(data)
    assert m["psnr"] == pytest.approx(expected, rel=1e-4)


def test_time_budget_stops_before_an_epoch_that_would_overrun():
    from ignite.engine import Engine

    from scripts.workflows.engines import TimeBudgetHandler

    now = [0.0]
    durations = iter([10.0, 12.0, 11.0, 10.0, 10.0, 10.0])  # seconds per epoch (validation included)

    def step(engine, batch):
        return None

    engine = Engine(step)

    @engine.on(Events.EPOCH_COMPLETED)
    def advance(e):  # registered before the handler, like the validation and checkpoint handlers
        now[0] += next(durations)

    handler = TimeBudgetHandler(minutes=40 / 60, clock=lambda: now[0])
    handler.attach(engine)
    engine.run([0], max_epochs=6)
    # after 3 epochs 33 s are used and the longest epoch took 12 s: a 4th would end past 40 s
    assert engine.state.epoch == 3 and handler.stopped_at_epoch == 3 and now[0] == 33.0

    for minutes in (None, 0, "null", float("inf")):  # disabled: runs every epoch (`--max_minutes null` is a string)
        engine2 = Engine(step)
        TimeBudgetHandler(minutes, clock=lambda: 1e9).attach(engine2)
        engine2.run([0], max_epochs=3)
        assert engine2.state.epoch == 3
    with pytest.raises(ValueError, match="max_minutes must be a number or null, got 'ten'"):
        TimeBudgetHandler("ten")


@pytest.mark.parametrize("max_epochs, expected", [(5, [2, 4, 5]), (4, [2, 4]), (1, [1])])
def test_validation_runs_at_the_interval_and_after_the_last_epoch(max_epochs, expected):
    from ignite.engine import Engine

    class Validator:
        def __init__(self):
            self.epochs = []

        def run(self, epoch):
            self.epochs.append(epoch)

    trainer = Engine(lambda engine, batch: None)
    handler = ValidationHandler(interval=2, validator=None, epoch_level=True)
    handler.validator = Validator()  # MONAI's setter wants an Evaluator; the handler only calls run(epoch)
    handler.attach(trainer)
    trainer.run([0], max_epochs=max_epochs)
    assert handler.validator.epochs == expected
