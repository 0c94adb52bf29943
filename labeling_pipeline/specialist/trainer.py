"""Train a specialist's adapters, glue and decoder (the reference recipe, resumable).

AdamW (lr 2e-4, weight decay 5e-4) with cosine decay to 1e-7 over the run, random horizontal and
vertical flips, the structure loss, bf16 autocast on CUDA only, and gradient accumulation
(`accumulation` micro-batches of `batch_size` per optimiser step). The order of images and the
flips are drawn from (seed, position), so a run resumed from ``resume.pt`` continues exactly
where it stopped. Losses are drawn to ``loss.png`` with `labeling_pipeline.plots`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from core_model.checkpoint import atomic_torch_save
from core_model.errors import UnSAMv2Error
from core_model.specialist import CPU_VARIANT, get_variant, trainable_state_dict
from core_model.specialist.predict import probabilities
from labeling_pipeline.specialist.data import Prepared
from labeling_pipeline.specialist.losses import structure_loss

logger = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
LOSS_PLOT = "loss.png"


class SpecialistConfigError(UnSAMv2Error, ValueError):
    """A training setting is unknown or out of range."""


@dataclass(frozen=True)
class SpecialistTrainConfig:
    """How to train a specialist.

    Attributes:
        variant: Specialist variant (see `core_model.specialist.SPECIALIST_VARIANTS`).
        epochs: Passes over the training images.
        batch_size: Images per micro-batch.
        accumulation: Micro-batches per optimiser step.
        lr: Initial learning rate (cosine decay to `min_lr`).
        min_lr: Final learning rate.
        weight_decay: AdamW weight decay.
        flips: Random horizontal and vertical flips.
        bf16: bf16 autocast (CUDA only; ignored on the CPU).
        checkpoint_every: Write ``resume.pt`` every this many optimiser steps.
        seed: Seed of the random bases (when no base file is given), order and flips.
        device: Torch device.
    """

    variant: str = CPU_VARIANT
    epochs: int = 20
    batch_size: int = 1
    accumulation: int = 1
    lr: float = 2e-4
    min_lr: float = 1e-7
    weight_decay: float = 5e-4
    flips: bool = True
    bf16: bool = True
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        get_variant(self.variant)
        for name in ("epochs", "batch_size", "accumulation", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise SpecialistConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1 or not 0 <= self.min_lr <= self.lr:
            raise SpecialistConfigError(f"need 0 < min_lr <= lr < 1, got {self.min_lr}, {self.lr}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SpecialistTrainConfig:
        """Build from a dict (job parameters, CLI); unknown keys are refused."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecialistConfigError(
                f"unknown specialist setting(s) {unknown}; known {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class TrainOutcome:
    """What a run did: per-step losses, steps, seconds of this process's part."""

    losses: list[float]
    steps: int
    seconds: float


def _batches_per_epoch(n: int, cfg: SpecialistTrainConfig) -> int:
    return math.ceil(n / cfg.batch_size)


def total_steps(n: int, cfg: SpecialistTrainConfig) -> int:
    """Return the optimiser steps of a run over `n` images."""
    return math.ceil(cfg.epochs * _batches_per_epoch(n, cfg) / cfg.accumulation)


def _micro_batch(
    data: Prepared, position: int, cfg: SpecialistTrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.images)
    per_epoch = _batches_per_epoch(n, cfg)
    epoch, within = divmod(position, per_epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    picks = order[within * cfg.batch_size : (within + 1) * cfg.batch_size]
    images = torch.from_numpy(data.images[picks]).permute(0, 3, 1, 2).float().div(255.0)
    targets = torch.from_numpy(data.targets[picks])
    if cfg.flips:
        flip_h, flip_v = np.random.default_rng([cfg.seed, epoch, within, 1]).random(2) < 0.5
        dims = [d for d, on in ((3, flip_h), (2, flip_v)) if on]
        if dims:
            images, targets = images.flip(dims), targets.flip(dims)
    return images.to(device), targets.to(device)


class SpecialistTrainer:
    """Train one specialist on prepared data, resumable from its run folder.

    Args:
        model: A `SpecialistModel` built with its bases loaded (or any module with the same
            input and output, e.g. the plain U-Net baseline).
        data: Training images and targets in the model frame.
        config: Settings.
        run_dir: Folder of ``resume.pt`` and ``loss.png``.
        show_progress: Show a tqdm bar.
        on_step: Called with (step, total, loss) after every optimiser step.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Prepared,
        config: SpecialistTrainConfig,
        run_dir: Path,
        *,
        show_progress: bool = False,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.model, self.data, self.config = model, data, config
        self.run_dir = Path(run_dir)
        self.show_progress, self.on_step = show_progress, on_step
        self.device = torch.device(config.device)

    def _resume(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, list[float]]:
        path = self.run_dir / RESUME_FILE
        if not path.is_file():
            return 0, []
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        logger.info("resuming %s at step %d", self.run_dir, state["step"])
        return int(state["step"]), [float(x) for x in state["losses"]]

    def _save(
        self, optimizer: torch.optim.Optimizer, scheduler: Any, step: int, losses: list[float]
    ) -> None:
        atomic_torch_save(
            {
                "model": trainable_state_dict(self.model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "losses": losses,
            },
            self.run_dir / RESUME_FILE,
        )

    def _step_loss(self, step: int) -> float:
        cfg, total = self.config, 0.0
        autocast = torch.autocast(
            "cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and self.device.type == "cuda"
        )
        for micro in range(cfg.accumulation):
            images, targets = _micro_batch(
                self.data, step * cfg.accumulation + micro, cfg, self.device
            )
            with autocast:
                loss = structure_loss(self.model(images), targets) / cfg.accumulation
            torch.autograd.backward(loss)
            total += float(loss.detach())
        return total

    def train(self, *, stop_after: int | None = None) -> TrainOutcome:
        """Run (or resume) to the end; `stop_after` steps of this call at most (tests)."""
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        steps = total_steps(len(self.data.images), cfg)
        self.model.to(self.device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=steps, eta_min=cfg.min_lr
        )
        step, losses = self._resume(optimizer, scheduler)
        start, done = time.perf_counter(), 0
        bar = tqdm(total=steps, initial=step, disable=not self.show_progress, desc="specialist")
        while step < steps and (stop_after is None or done < stop_after):
            optimizer.zero_grad(set_to_none=True)
            losses.append(self._step_loss(step))
            optimizer.step()
            scheduler.step()
            step, done = step + 1, done + 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if self.on_step is not None:
                self.on_step(step, steps, losses[-1])
            if step % cfg.checkpoint_every == 0 or step == steps or done == stop_after:
                self._save(optimizer, scheduler, step, losses)
        bar.close()
        self.model.eval()
        write_loss_plot(losses, self.run_dir / LOSS_PLOT)
        return TrainOutcome(losses, step, time.perf_counter() - start)


def write_loss_plot(losses: list[float], path: Path) -> Path:
    """Draw the per-step losses to a PNG."""
    from labeling_pipeline.plots import line_chart

    line_chart(
        {"structure loss": losses},
        title="Specialist training",
        x_label="step",
        y_label="loss",
        y_max=None,
    ).save(path)
    return path


@torch.no_grad()
def predict_prepared(
    model: nn.Module, data: Prepared, *, device: str = "cpu"
) -> list[npt.NDArray[np.float32]]:
    """Return (C, H_i, W_i) float32 probabilities of each prepared image in its own frame."""
    import cv2

    model.to(device).eval()
    out = []
    for image, full in zip(data.images, data.full_targets, strict=True):
        x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0).unsqueeze(0).to(device)
        prob = probabilities(model(x).float())[0].cpu().numpy()
        h, w = full.shape
        out.append(np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in prob]))
    return out
