"""End to end against a real Label Studio 1.23: accepted masks train a specialist LS serves.

Label Studio's executable comes from UNSAMV2_TEST_LABEL_STUDIO. The backend runs as
`unsamv2 serve` (a tiny random model from a real checkpoint file) plus a worker, as in
`test_label_studio_e2e`. Steps: a project with the shipped config (its brush label "Car"), seven
small synthetic scenes imported as tasks, the backend connected (`unsamv2 ls-connect`),
annotators' brush masks on six of them submitted through Label Studio's REST API (webhook ->
store), the project synced (`unsamv2 jobs submit sync` -> worker: the task images), a specialist
trained by `unsamv2 specialist train` (test-tiny, 1 epoch, a gate random weights pass), and then
Label Studio's "Retrieve predictions" on the seventh task stores the specialist's masks (before
the specialist it stored nothing; asked again, it stores no duplicate). Random weights predict
noise, so the trained specialist's saved head is edited to predict the label at every pixel:
the stored mask is then known (the whole image).
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from PIL import Image

from labeling_pipeline.specialist.synthetic import TaskScene, template_task
from labeling_pipeline.store import Store
from labeling_pipeline.store.models import HumanMask, Job
from labeling_pipeline.store.repository import find_project, project_images
from ml_backend.label_studio.label_config import shipped_config
from ml_backend.settings import Settings

from helpers import (
    free_port,
    label_studio_caller,
    ls_connect,
    running_backend,
    tiny_backend_env,
    wait_for,
)

AUTH = ("labelstudio", "e2e-pass")
LABEL = "Car"  # a BrushLabels label of the shipped config (<BrushLabels name="mask">)
HEIGHT, WIDTH = 96, 128
ANNOTATED = 6  # the specialist trains on 4 of them and holds 2 out (the gate's minimum)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ml_backend.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def test_accepted_masks_train_a_specialist_that_label_studio_serves(
    label_studio: dict[str, str], tmp_path: Path, make_tiny: Any
) -> None:
    ls_url, token = label_studio["url"], label_studio["token"]
    port = free_port()
    env = tiny_backend_env(
        tmp_path,
        make_tiny(),
        port=port,
        auth=AUTH,
        webhook_secret="e2e-secret",
        label_studio=(ls_url, token),
    )
    backend_url = f"http://127.0.0.1:{port}"
    with running_backend(env, backend_url, tmp_path, auth=AUTH, worker=True):
        _run(label_studio_caller(ls_url, token), env, backend_url, Settings.from_env(env))


def _import_scenes(call: Any, project: int, scenes: list[TaskScene]) -> dict[str, int]:
    """Upload one PNG per scene; return the task id of each file name."""
    files = {}
    for index, scene in enumerate(scenes):
        png = io.BytesIO()
        Image.fromarray(scene.image).save(png, format="PNG")
        files[f"file{index}"] = (f"scene{index}.png", png.getvalue(), "image/png")
    call("POST", f"/api/projects/{project}/import", files=files)
    tasks = call("GET", f"/api/tasks?project={project}&page_size=100")["tasks"]
    return {re.sub(r"^.*-", "", t["data"]["image"]): t["id"] for t in tasks}


def _brush_results(scene: TaskScene, index: int) -> list[dict[str, Any]]:
    """An annotator's accepted masks: one brush region of the label per object of the scene."""
    return [
        {
            "id": f"s{index}o{k}",
            "type": "brushlabels",
            "from_name": "mask",
            "to_name": "image",
            "original_width": WIDTH,
            "original_height": HEIGHT,
            "image_rotation": 0,
            "value": {
                "format": "rle",
                "rle": mask2rle(mask.astype(np.uint8) * 255),
                "brushlabels": [LABEL],
            },
        }
        for k, (mask, _) in enumerate(scene.objects)
    ]


def _run(call: Any, env: dict[str, str], backend_url: str, settings: Settings) -> None:
    project = call(
        "POST",
        "/api/projects",
        json={"title": "unsamv2-specialist-e2e", "label_config": shipped_config()},
    )["id"]
    scenes = template_task(ANNOTATED + 1, seed=7, height=HEIGHT, width=WIDTH, template="any")
    task_ids = _import_scenes(call, project, scenes)
    target = task_ids[f"scene{ANNOTATED}.png"]  # never annotated: the specialist's to predict
    ls_connect(project, backend_url, env)
    _retrieve_predictions(call, project, target)
    assert call("GET", f"/api/predictions?task={target}") == []  # no specialist: nothing stored

    store = Store(settings.pipeline.resolved_database_url)
    _submit_annotations(call, scenes, task_ids, store)
    refused = _cli(env, *_train_args(project))  # the masks are in, their images not yet
    assert refused.returncode == 2 and "sync the project first" in refused.stderr, refused.stderr
    _sync(env, project, store)

    trained = _cli(env, *_train_args(project))
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = json.loads(trained.stdout)
    assert run["published"] and run["scope"].endswith(f":{LABEL}")
    assert (run["train_images"], run["held_out_images"]) == (ANNOTATED - 2, 2)
    # random weights predict noise; make it predict the label everywhere so the mask is known
    _predict_everywhere(settings.pipeline.models_dir / run["version"] / "model.pt")

    _retrieve_predictions(call, project, target)
    [stored] = call("GET", f"/api/predictions?task={target}")
    _check_prediction(stored, run["version"])
    # Label Studio now records the specialist's version: asking again stores no duplicate
    assert call("GET", f"/api/ml?project={project}")[0]["model_version"] == stored["model_version"]
    _retrieve_predictions(call, project, target)
    assert [p["id"] for p in call("GET", f"/api/predictions?task={target}")] == [stored["id"]]


def _check_prediction(stored: dict[str, Any], version: str) -> None:
    """One brush region of the label over the whole image, named after the specialist."""
    assert stored["model_version"] == f"specialist {version}"
    assert 0.99 < stored["score"] <= 1.0
    [region] = stored["result"]
    assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == [LABEL]
    assert region["from_name"] == "mask" and region["to_name"] == "image"
    assert 0.99 < region["score"] <= 1.0
    assert (region["original_height"], region["original_width"]) == (HEIGHT, WIDTH)
    mask = decode_rle(region["value"]["rle"]).reshape(HEIGHT, WIDTH, 4)[:, :, 3]
    assert np.count_nonzero(mask == 255) == HEIGHT * WIDTH


def _retrieve_predictions(call: Any, project: int, task: int) -> None:
    """Label Studio's Data Manager action "Retrieve predictions" on one task."""
    call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        json={"selectedItems": {"all": False, "included": [task]}},
    )


def _submit_annotations(
    call: Any, scenes: list[TaskScene], task_ids: dict[str, int], store: Store
) -> None:
    """Annotators submit their masks; Label Studio's webhook brings them to the store."""
    for index in range(ANNOTATED):
        task = task_ids[f"scene{index}.png"]
        call(
            "POST",
            f"/api/tasks/{task}/annotations",
            json={"result": _brush_results(scenes[index], index)},
        )

    def annotated_tasks() -> int:
        with store.session() as s:
            return len({m.ls_task_id for m in s.query(HumanMask).filter(HumanMask.label == LABEL)})

    wait_for(lambda: annotated_tasks() == ANNOTATED, 30, "the webhook to store the masks")


def _sync(env: dict[str, str], project: int, store: Store) -> None:
    """`unsamv2 jobs submit sync`: the worker stores the task images."""
    submitted = _cli(env, "jobs", "submit", "sync", "--ls-project", str(project))
    assert submitted.returncode == 0, submitted.stderr
    found = re.search(r"queued job (\d+)", submitted.stdout)
    assert found is not None, submitted.stdout
    job_id = int(found.group(1))

    def finished() -> str | None:
        with store.session() as s:
            status = s.get(Job, job_id).status
            return status if status in ("done", "failed") else None

    assert wait_for(finished, 60, "the sync job", interval=0.3) == "done"
    with store.session() as s:
        images = project_images(s, find_project(s, f"ls:{project}").id)
        assert len(images) == ANNOTATED + 1
        assert {(i.height, i.width) for i in images} == {(HEIGHT, WIDTH)}


def _predict_everywhere(path: Path) -> None:
    """Edit a saved specialist so that it says p = sigmoid(8) for the label at every pixel."""
    saved = torch.load(path, weights_only=True)
    saved["state"]["decoder.head.weight"].zero_()
    saved["state"]["decoder.head.bias"].fill_(8.0)
    torch.save(saved, path)


def _train_args(project: int) -> list[str]:
    """`unsamv2 specialist train` of the label: test-tiny, 1 epoch, a gate random weights pass."""
    return [
        *("specialist", "train", "--project", f"ls:{project}", "--label", LABEL),
        *("--variant", "test-tiny", "--epochs", "1", "--min-miou", "0", "--min-dice", "0"),
        *("--min-images", str(ANNOTATED - 2)),
    ]
