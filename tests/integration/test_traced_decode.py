"""Recorded decoder passes (the click queue's CPU decoder threads), on the tiny random model."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from core_model.predictor import GranularityPredictor
from core_model.traced_decode import trace_passes_here, traced_here
from core_model.types import MaskPrediction, Prompts
from ml_backend.cli.bench_images import bench_image

CLICK = Prompts.from_arrays([[40.0, 30.0]], [1])
TWO = Prompts.from_arrays([[40.0, 30.0], [70.0, 50.0]], [1, 0])
BOXED = Prompts.from_arrays([[40.0, 30.0]], [1], box=[20.0, 10.0, 90.0, 70.0])


def _on_traced_thread(work: Callable[[], Any]) -> Any:
    out: list[Any] = []

    def body() -> None:
        trace_passes_here()
        out.append(work())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(timeout=120)
    return out[0]


def _same(a: MaskPrediction, b: MaskPrediction) -> None:
    assert np.array_equal(a.low_res_logits, b.low_res_logits)  # the same ops, bit for bit
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.masks, b.masks)


def test_recorded_passes_give_the_python_pass_bit_for_bit(tiny_model) -> None:
    predictor = GranularityPredictor(tiny_model)
    embedding = predictor.embed(bench_image(128, 96, seed=4))
    assert not traced_here()  # only threads that ask for it
    clicks = [(CLICK, 0.2), (TWO, 0.6), (BOXED, 1.0), (CLICK, 0.9), (CLICK, 0.4), (CLICK, 0.7)]
    expected = [predictor.predict(embedding, p, granularity=g) for p, g in clicks]
    assert len(predictor._traced) == 0  # the Python pass everywhere else
    got = _on_traced_thread(
        lambda: [predictor.predict(embedding, p, granularity=g) for p, g in clicks]
    )
    for a, b in zip(got, expected, strict=True):
        _same(a, b)
    assert len(predictor._traced) == 3  # one recording per prompt-token count, reused


def test_new_weights_are_recorded_again(tiny_model) -> None:
    model = copy.deepcopy(tiny_model)
    predictor = GranularityPredictor(model)
    embedding = predictor.embed(bench_image(128, 96, seed=5))
    before = _on_traced_thread(lambda: predictor.predict(embedding, CLICK, granularity=0.5))
    with torch.no_grad():
        model.sam_mask_decoder.iou_token.weight.add_(0.5)
        model.sam_mask_decoder.transformer.layers[0].mlp.layers[0].weight.mul_(1.5)
    after = _on_traced_thread(lambda: predictor.predict(embedding, CLICK, granularity=0.5))
    assert len(predictor._traced) == 2
    _same(after, predictor.predict(embedding, CLICK, granularity=0.5))
    assert not np.array_equal(before.low_res_logits, after.low_res_logits)


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("no recording here")


def test_when_recording_fails_the_python_pass_runs(tiny_model, monkeypatch, caplog) -> None:
    predictor = GranularityPredictor(tiny_model)
    embedding = predictor.embed(bench_image(128, 96, seed=6))
    monkeypatch.setattr(
        torch.jit, "trace", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
    )
    got = _on_traced_thread(lambda: predictor.predict(embedding, CLICK, granularity=0.5))
    _same(got, predictor.predict(embedding, CLICK, granularity=0.5))
    assert len(predictor._traced) == 0 and "recording failed" in caplog.text
