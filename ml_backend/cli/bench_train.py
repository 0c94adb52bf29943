"""`unsamv2 bench train`: training steps per second, cached embeddings vs re-encoding each step.

Both runs use the same model variant (random weights), the same generated images with their
true part/whole masks (granularities from the hierarchy formula) and the official recipe (one
click and three correction clicks per mask, losses at the model's input size, granularity
modules + LoRA trained, encoder frozen). The only difference: the cached run computes each
image's features once; the other re-encodes every image at every step, as the official training
code does. The first step of each run is not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def add_parser(benches: Any) -> None:
    """Register `bench train`."""
    p = benches.add_parser(
        "train", help="training steps/s: cached embeddings vs re-encoding", description=__doc__
    )
    p.add_argument("--config", default="small", help="model variant (random weights)")
    p.add_argument("--images", type=int, default=2, help="images (all used at every step)")
    p.add_argument("--masks", type=int, default=8, help="masks per image per step")
    p.add_argument("--steps", type=int, default=4, help="timed steps per run")
    p.add_argument("--size", default="1024x768", help="image WIDTHxHEIGHT")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.set_defaults(run=run_train_bench)


def write_scene_data(
    count: int, width: int, height: int, folder: Path
) -> list[tuple[Path, Path, str]]:
    """Write generated scenes and their true masks (official JSON fields) for training."""
    from PIL import Image

    from core_model.masks import encode_coco_rle
    from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene
    from labeling_pipeline.pseudo_labels.granularity import granularity_from_areas

    config = SceneConfig(height=height, width=width)
    pairs = []
    for seed in range(count):
        scene = generate_scene(seed, config)
        annotations = []
        for obj in scene.objects:
            masks = [obj.mask, *(p.mask for p in obj.parts)]
            values = granularity_from_areas([float(m.sum()) for m in masks])
            annotations += [
                {"segmentation": encode_coco_rle(m), "area": int(m.sum()), "granularity": float(g)}
                for m, g in zip(masks, values, strict=True)
            ]
        image_path, json_path = folder / f"{seed}.png", folder / f"{seed}.json"
        Image.fromarray(scene.image).save(image_path)
        json_path.write_text(json.dumps({"annotations": annotations}))
        pairs.append((image_path, json_path, f"bench:{seed}"))
    return pairs


def _steps_per_second(
    args: argparse.Namespace, pairs: list[Any], cached: bool, root: Path
) -> float:
    import torch

    from core_model.build import build_model
    from labeling_pipeline.training.config import TrainConfig
    from labeling_pipeline.training.data import training_images
    from labeling_pipeline.training.loop import Trainer

    torch.manual_seed(0)
    model = build_model(args.config, device=args.device)
    config = TrainConfig.from_mapping(
        {
            "steps": args.steps + 1,
            "images_per_step": args.images,
            "max_masks_per_image": args.masks,
            "cache_embeddings": cached,
            "checkpoint_every": 10_000,
            "device": args.device,
        }
    )
    marks: list[float] = []
    trainer = Trainer(
        model,
        training_images(pairs),
        config,
        run_dir=root / ("cached" if cached else "reencode"),
        on_step=lambda *_: marks.append(time.perf_counter()),
    )
    trainer.train()
    return float(args.steps) / (marks[-1] - marks[0])


def run_train_bench(args: argparse.Namespace) -> int:
    """Run both and print the ratio."""
    import torch

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs = write_scene_data(args.images, width, height, root)
        cached = _steps_per_second(args, pairs, True, root)
        reencode = _steps_per_second(args, pairs, False, root)
    device = (
        f"{platform.processor() or platform.machine()}" if args.device == "cpu" else args.device
    )
    print(
        f"bench train: model {args.config} (random weights), {args.images} images of {args.size}, "
        f"{args.masks} masks each, 1 + 3 clicks, {torch.get_num_threads()} threads, {device}"
    )
    print(f"  cached embeddings : {cached:.3f} steps/s")
    print(f"  re-encoding       : {reencode:.3f} steps/s")
    print(f"  speed-up          : {cached / reencode:.1f}x")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "cached_steps_per_s": cached,
                    "reencode_steps_per_s": reencode,
                    "speedup": cached / reencode,
                    "config": args.config,
                    "images": args.images,
                    "masks": args.masks,
                    "size": args.size,
                },
                indent=2,
            )
        )
    return 0
