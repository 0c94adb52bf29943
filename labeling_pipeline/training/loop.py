"""The training loop: clicks and correction clicks, losses, AdamW with cosine decay.

Per step, for each sampled image: up to `max_masks_per_image` masks with their granularities;
one click inside each mask, then `correction_clicks` clicks from the previous prediction's
errors, the previous low-resolution logits fed back as the mask prompt, the same granularity in
every round; losses summed over rounds and averaged over masks. Image features come from the
embedding cache while the encoder is frozen. Checkpoints (trainable tensors, optimiser,
scheduler, random states) make a run resumable; the same seed gives the same run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from core_model.cache import LRUEmbeddingCache
from core_model.checkpoint import atomic_torch_save
from core_model.imageio import load_image_rgb
from core_model.modeling.unsamv2 import UnSAMv2Model
from core_model.predictor import GranularityPredictor
from core_model.preprocess import to_model_input
from labeling_pipeline.plots import line_chart
from labeling_pipeline.training.clicks import correction_clicks, first_clicks
from labeling_pipeline.training.config import TrainConfig
from labeling_pipeline.training.data import TrainingDataError, TrainingImage, sample_masks
from labeling_pipeline.training.losses import mask_losses
from labeling_pipeline.training.model_setup import prepare_for_training

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    """Outcome of a run.

    Attributes:
        steps: Steps done in total (resumed steps included).
        losses: Total loss per step.
        seconds: Wall time of this invocation.
        metrics: Summary written to metrics.json.
    """

    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Train a model on images with granularity-labelled masks.

    Args:
        model: The model to train (modified in place: LoRA added, parameters unfrozen).
        images: Training images.
        config: Recipe.
        run_dir: Folder for the checkpoint, loss curve and metrics.
        show_progress: Show a progress bar.
        on_step: Called with (step, total steps, loss) after every step.
    """

    def __init__(
        self,
        model: UnSAMv2Model,
        images: Sequence[TrainingImage],
        config: TrainConfig,
        *,
        run_dir: Path,
        show_progress: bool = False,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if not images:
            raise TrainingDataError("no training images with masks")
        self.model, self.images, self.config = model, list(images), config
        self.run_dir = Path(run_dir)
        self.show_progress, self.on_step = show_progress, on_step
        self.device = torch.device(config.device)
        self.size = int(model.image_size)
        self.loss_size = self.size if config.loss_at_image_size else model.low_res_size
        self._features = GranularityPredictor(model, cache=LRUEmbeddingCache(4 << 30))
        self._inputs: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------- features
    def _image_input(self, image: TrainingImage) -> torch.Tensor:
        if image.key not in self._inputs:
            pixels = load_image_rgb(image.path)
            self._inputs[image.key] = to_model_input(pixels, self.size, self.device)
        return self._inputs[image.key]

    def _encode(self, image: TrainingImage) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if self.config.encoder_frozen and self.config.cache_embeddings:
            embedding = self._features.embed_keyed(image.key, lambda: load_image_rgb(image.path))
            return embedding.image_embed, embedding.high_res_features
        if self.config.encoder_frozen:
            with torch.no_grad():
                return self.model.encode_image(self._image_input(image))
        return self.model.encode_image(self._image_input(image))

    # ------------------------------------------------------------------------------- losses
    def _decode(
        self,
        features: Any,
        coords: torch.Tensor,
        labels: torch.Tensor,
        granularity: torch.Tensor,
        mask_input: torch.Tensor | None,
    ) -> Any:
        embed, high_res = features
        if self.config.mode == "granularity":
            return self.model.decode_granularity(
                embed, high_res, coords, labels, granularity, mask_input=mask_input
            )
        # SAM-2 training: three masks for the ambiguous first click, token 0 once clicks add up
        return self.model.decode_sam2(
            embed,
            high_res,
            coords,
            labels,
            mask_input=mask_input,
            multimask_output=coords.shape[1] == 1,
        )

    def _round_loss(
        self, out: Any, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Loss of one round; returns (loss, logits kept for the next round, components)."""
        cfg = self.config
        logits = out.low_res_logits.float()
        if logits.shape[-1] != self.loss_size:
            logits = F.interpolate(
                logits, size=(self.loss_size, self.loss_size), mode="bilinear", align_corners=False
            )
        count = logits.shape[1]
        parts = [mask_losses(logits[:, k], target, out.iou[:, k]) for k in range(count)]
        mask_terms = torch.stack(
            [cfg.focal_weight * p["focal"] + cfg.dice_weight * p["dice"] for p in parts], dim=1
        )  # (N, K)
        best = mask_terms.argmin(dim=1)  # K = 1 for granularity; SAM's min over 3 otherwise
        rows = torch.arange(len(best), device=best.device)
        iou = torch.stack([p["iou"] for p in parts], dim=1).mean(dim=1)
        loss = (mask_terms[rows, best] + cfg.iou_weight * iou).mean()
        chosen = best.view(-1, 1, 1, 1).expand(-1, 1, *out.low_res_logits.shape[-2:])
        kept = out.low_res_logits.gather(1, chosen).detach()
        components = {
            name: float(torch.stack([p[name] for p in parts]).detach().mean()) for name in parts[0]
        }
        return loss, kept, components

    def _image_loss(
        self, image: TrainingImage, rng: np.random.Generator
    ) -> tuple[torch.Tensor | None, dict[str, float], int]:
        cfg = self.config
        gt, values = sample_masks(
            image,
            rng,
            max_masks=cfg.max_masks_per_image,
            size=self.loss_size,
            human_share=cfg.human_share,
        )
        if len(gt) == 0:
            return None, {}, 0
        scale = self.size / self.loss_size
        target = torch.from_numpy(gt).float().to(self.device)
        granularity = torch.from_numpy(values).to(self.device)[:, None]
        coords = torch.from_numpy(first_clicks(gt, rng) * scale).to(self.device)[:, None]
        labels = torch.ones(len(gt), 1, dtype=torch.int32, device=self.device)
        features = self._encode(image)
        total, mask_input = torch.zeros((), device=self.device), None
        sums: dict[str, float] = {}
        for round_index in range(1 + cfg.correction_clicks):
            with self._autocast():
                out = self._decode(features, coords, labels, granularity, mask_input)
            loss, kept, components = self._round_loss(out, target)
            total = total + loss
            sums = {k: sums.get(k, 0.0) + v for k, v in components.items()}
            if round_index == cfg.correction_clicks:
                break
            logits = F.interpolate(
                kept.float(),
                size=(self.loss_size, self.loss_size),
                mode="bilinear",
                align_corners=False,
            )
            xy, label = correction_clicks(
                gt, (logits[:, 0] > 0).cpu().numpy(), rng, sampler=cfg.sampler
            )
            coords = torch.cat([coords, torch.from_numpy(xy * scale).to(self.device)[:, None]], 1)
            labels = torch.cat([labels, torch.from_numpy(label).to(self.device)[:, None]], 1)
            mask_input = kept
        rounds = 1 + cfg.correction_clicks
        return total, {k: v / rounds for k, v in sums.items()}, len(gt)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    # ---------------------------------------------------------------------------- training
    def _state(
        self,
        params: list[torch.nn.Parameter],
        optimizer: Any,
        scheduler: Any,
        step: int,
        losses: list[float],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        trainable = {
            n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad
        }
        return {
            "config": self.config.to_dict(),
            "step": step,
            "losses": losses,
            "trainable": trainable,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }

    def _resume(
        self, optimizer: Any, scheduler: Any, rng: np.random.Generator
    ) -> tuple[int, list[float]]:
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return 0, []
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("config") != self.config.to_dict():
            raise TrainingDataError(f"{path} was written with other settings; use a new run folder")
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value.to(params[name].device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        logger.info("resuming %s at step %d", self.run_dir, state["step"])
        return int(state["step"]), list(state["losses"])

    def train(self) -> TrainResult:
        """Run (or resume) training to `config.steps`; write checkpoint, curve and metrics."""
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        params = prepare_for_training(self.model, cfg)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cfg.steps, eta_min=cfg.min_lr
        )
        step, losses = self._resume(optimizer, scheduler, rng)
        start, masks_seen, images_seen = time.perf_counter(), 0, 0
        totals: dict[str, float] = {}
        bar = tqdm(total=cfg.steps, initial=step, disable=not self.show_progress, desc="train")
        while step < cfg.steps:
            optimizer.zero_grad(set_to_none=True)
            picks = rng.choice(
                len(self.images), size=min(cfg.images_per_step, len(self.images)), replace=False
            )
            step_loss, step_masks = torch.zeros((), device=self.device), 0
            for index in picks:
                loss, parts, count = self._image_loss(self.images[int(index)], rng)
                if loss is not None:
                    step_loss = step_loss + loss
                    step_masks += count
                    images_seen += 1
                    totals = {k: totals.get(k, 0.0) + v for k, v in parts.items()}
            if step_masks:
                torch.autograd.backward(step_loss / len(picks))
                optimizer.step()
            scheduler.step()
            step += 1
            masks_seen += step_masks
            losses.append(float(step_loss.detach()) / len(picks))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if self.on_step is not None:
                self.on_step(step, cfg.steps, losses[-1])
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                atomic_torch_save(
                    self._state(params, optimizer, scheduler, step, losses, rng),
                    self.run_dir / CHECKPOINT,
                )
        bar.close()
        seconds = time.perf_counter() - start
        self.model.eval()
        means = {k: v / max(1, images_seen) for k, v in totals.items()}
        return self._finish(step, losses, seconds, masks_seen, means)

    def _finish(
        self,
        step: int,
        losses: list[float],
        seconds: float,
        masks_seen: int,
        means: dict[str, float],
    ) -> TrainResult:
        window = max(1, len(losses) // 10)
        metrics = {
            "steps": step,
            "seconds": round(seconds, 2),
            "images": len(self.images),
            "masks_seen": masks_seen,
            "loss_first": float(np.mean(losses[:window])),
            "loss_last": float(np.mean(losses[-window:])),
            "components_mean": means,
            "config": self.config.to_dict(),
        }
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        smooth = [
            float(np.mean(losses[max(0, i - window + 1) : i + 1])) for i in range(len(losses))
        ]
        line_chart(
            {"loss": losses, "moving mean": smooth},
            title="training loss",
            x_label="step",
            y_label="loss",
            y_max=None,
        ).save(self.run_dir / "loss_curve.png")
        return TrainResult(step, losses, seconds, metrics)
