"""The playground in a real headless Chromium: open, click, drag the slider, read the canvas.

The backend is `unsamv2 playground IMAGE` (tiny random model, basic auth, 127.0.0.1) on a
generated synthetic scene. Chromium and its WebDriver come from the system (Debian's ``chromium``
and ``chromium-driver`` packages); selenium is given both paths, so nothing is downloaded. Without
them the test is skipped, or fails when UNSAMV2_REQUIRE_SERVICES=1 (CI).

Screenshots, the downloads and the slider's redraw times go to ``$UNSAMV2_ARTIFACTS_DIR/playground``
(default ``artifacts/playground`` in the repository). Redraw times are printed, not asserted.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from browser_driver import artifacts_dir, chromium_driver
from PIL import Image

from core_model.build import build_model
from core_model.checkpoint import official_state_dict
from core_model.masks.coco import decode_coco_rle
from labeling_pipeline.evaluation.synthetic import SceneConfig, generate_scene

from helpers import ServiceProcess, wait_for

pytestmark = pytest.mark.browser

AUTH = ("play", "ground-pass")
SCENE = SceneConfig(height=360, width=480)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return artifacts_dir("playground")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    driver = chromium_driver(1300, 1100)
    try:
        token = base64.b64encode(":".join(AUTH).encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.downloads = downloads
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def playground(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """`unsamv2 playground scene.png` on a free port: (base URL, the scene)."""
    torch.manual_seed(1234)
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"model": official_state_dict(build_model("test-tiny"))}, checkpoint)
    scene = generate_scene(7, SCENE)
    image_path = tmp_path / "synthetic-scene.png"
    Image.fromarray(scene.image).save(image_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNSAMV2_", "LABEL_STUDIO"))}
    env.update(
        {
            "UNSAMV2_DATA_DIR": str(tmp_path / "data"),
            "UNSAMV2_MODEL": "test-tiny",
            "UNSAMV2_CHECKPOINT": str(checkpoint),
            "UNSAMV2_BASIC_AUTH_USER": AUTH[0],
            "UNSAMV2_BASIC_AUTH_PASS": AUTH[1],
            "UNSAMV2_TORCH_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    service = ServiceProcess(
        ["playground", str(image_path), "--port", "0"], env, tmp_path / "playground.log"
    )
    try:
        service.wait_log("playground on http://", timeout=60)
        line = next(x for x in service.log().splitlines() if "playground on http://" in x)
        url = line.split("playground on ", 1)[1].strip().removesuffix("/playground")
        assert url.startswith("http://127.0.0.1:"), line

        def ready() -> bool:
            try:
                health = requests.get(f"{url}/health", auth=AUTH, timeout=2).json()
            except (requests.RequestException, ValueError):
                return False
            return health["model"]["state"] == "ready"

        wait_for(ready, 60, "the playground's model", interval=0.2)
        yield url, scene
    finally:
        service.stop()


def _js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def _wait_js(driver: Any, condition: str, what: str, timeout: float = 20) -> Any:
    return wait_for(lambda: _js(driver, f"return {condition};"), timeout, what)


def _drawn_mask(driver: Any, shape: tuple[int, int]) -> np.ndarray:
    """The mask layer's drawn pixels (alpha > 0) as (H, W) bool."""
    bits = _js(
        driver,
        """const c = document.getElementById('mask');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = ''; for (let i = 3; i < d.length; i += 4) s += d[i] > 0 ? '1' : '0';
        return s;""",
    )
    return np.frombuffer(bits.encode(), dtype=np.uint8).reshape(shape) == ord("1")


def _server_masks(url: str, image_id: str, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = requests.post(
        f"{url}/playground/sweep",
        json={"image": image_id, "points": points},
        headers={"X-UnSAMv2-Playground": "1"},
        auth=AUTH,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["masks"])


def _click_image_at(driver: Any, x_px: float, y_px: float, *, negative: bool = False) -> None:
    """Click the centre of image pixel (x, y) (shift-click for a negative point)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    canvas = driver.find_element(By.ID, "points")
    left, top, box_w, box_h, width, height = _js(
        driver,
        """const c = arguments[0]; c.scrollIntoView({block: 'center'});
        const r = c.getBoundingClientRect();
        return [r.left, r.top, r.width, r.height, c.width, c.height];""",
        canvas,
    )
    chain = ActionChains(driver)
    chain.w3c_actions.pointer_action.move_to_location(
        round(left + (x_px + 0.5) * box_w / width), round(top + (y_px + 0.5) * box_h / height)
    )
    chain.w3c_actions.key_action.pause()
    if negative:
        chain.key_down(Keys.SHIFT)
    chain.click()
    if negative:
        chain.key_up(Keys.SHIFT)
    chain.perform()


def _inside(mask: np.ndarray) -> tuple[int, int]:
    """A pixel (x, y) well inside a region mask (the farthest from its border along rows)."""
    ys, xs = np.nonzero(mask)
    order = np.argsort((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    for i in order:
        y, x = int(ys[i]), int(xs[i])
        if mask[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4].all():
            return x, y
    return int(xs[order[0]]), int(ys[order[0]])


def test_slider_redraws_the_servers_masks_without_requests(browser, playground, artifacts) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, scene = playground
    shape = scene.image.shape[:2]
    browser.get(f"{url}/playground")
    _wait_js(browser, "document.getElementById('files').options.length > 1", "the picker")
    browser.find_element(By.ID, "open-file").click()
    _wait_js(
        browser, "window.playground.image !== null && !!window.playground.picture", "the image"
    )
    image_id = _js(browser, "return window.playground.image.image;")

    x, y = _inside(scene.objects[0].mask)
    _click_image_at(browser, x, y)
    _wait_js(browser, "window.playground.sweep !== null", "the first sweep")
    _click_image_at(browser, *_inside(~scene.objects[0].mask), negative=True)
    _wait_js(
        browser,
        "window.playground.sweep && window.playground.points.length === 2 && "
        "!window.playground.busy",
        "the second sweep",
    )
    points = _js(browser, "return window.playground.points;")
    assert [p["label"] for p in points] == [1, 0]
    assert abs(points[0]["x"] - (x + 0.5)) <= 1.5 and abs(points[0]["y"] - (y + 0.5)) <= 1.5
    requests_sent = _js(browser, "return window.playground.requests;")
    assert requests_sent == 2

    server = _server_masks(url, image_id, points)
    server_masks = [decode_coco_rle(m["rle"]) for m in server]
    granularities = [m["granularity"] for m in server]
    low, high = next(
        (i, j)
        for i in range(len(server_masks))
        for j in range(len(server_masks) - 1, i, -1)
        if not np.array_equal(server_masks[i], server_masks[j])
    )

    slider = browser.find_element(By.ID, "granularity")
    drawn = {}
    for index in (low, high):
        slider.send_keys(Keys.HOME)
        for _ in range(round((granularities[index] - 0.1) / 0.1)):
            slider.send_keys(Keys.ARROW_RIGHT)
        assert _js(browser, "return window.playground.index;") == index
        drawn[index] = _drawn_mask(browser, shape)
        assert np.array_equal(drawn[index], server_masks[index]), granularities[index]
        browser.save_screenshot(str(artifacts / f"granularity-{granularities[index]:.1f}.png"))
    assert not np.array_equal(drawn[low], drawn[high])  # the drawn mask follows the slider

    # drag the slider end to end and back: every frame redraws from memory, no request
    _js(browser, "window.playground.redrawMs = [];")
    width = slider.size["width"]
    actions = ActionChains(browser).click_and_hold(slider)
    for step in range(-12, 13):
        actions = actions.move_to_element_with_offset(slider, round(step * width / 26), 0)
    for step in range(12, -13, -1):
        actions = actions.move_to_element_with_offset(slider, round(step * width / 26), 0)
    actions.release().perform()
    redraw_ms = _js(browser, "return window.playground.redrawMs;")
    # the same redraws with the canvas flushed (a pixel read forces the raster work now)
    flushed_ms = _js(
        browser,
        """const s = document.getElementById('granularity'), out = [];
        const mask = document.getElementById('mask').getContext('2d');
        for (let i = 0; i < 20; i += 1) {
          const t = performance.now();
          s.value = (0.1 + (i % 10) * 0.1).toFixed(1);
          s.dispatchEvent(new Event('input'));
          mask.getImageData(0, 0, 1, 1);
          out.push(performance.now() - t);
        }
        return out;""",
    )
    assert len(redraw_ms) >= 10
    assert _js(browser, "return window.playground.requests;") == requests_sent
    index = _js(browser, "return window.playground.index;")
    assert np.array_equal(_drawn_mask(browser, shape), server_masks[index])

    # downloads of the shown mask: PNG pixels and COCO RLE as the server's
    browser.find_element(By.ID, "download-png").click()
    browser.find_element(By.ID, "download-rle").click()
    png = wait_for(lambda: next(browser.downloads.glob("*.png"), None), 10, "the PNG download")
    rle = wait_for(lambda: next(browser.downloads.glob("*.json"), None), 10, "the RLE download")
    assert np.array_equal(np.asarray(Image.open(png).convert("L")) > 127, server_masks[index])
    assert json.loads(rle.read_text())["segmentation"] == server[index]["rle"]

    # the whole-image view at the shown granularity (random weights: no thresholds)
    for field in ("min-iou", "min-stability"):
        _js(browser, "document.getElementById(arguments[0]).value = '0';", field)
    browser.find_element(By.ID, "whole").click()
    _wait_js(
        browser,
        "document.getElementById('status').textContent.startsWith('Whole image:')",
        "the whole-image view",
        timeout=60,
    )
    assert _js(browser, "return document.getElementById('whole-view').width;") == shape[1]
    status = _js(browser, "return document.getElementById('status').textContent;")
    assert int(status.split(":")[1].split()[0]) >= 1, status

    slider.send_keys(Keys.HOME)
    for _ in range(4):
        slider.send_keys(Keys.ARROW_RIGHT)  # granularity 0.5 for the overview screenshot
    assert _js(browser, "return window.playground.requests;") == requests_sent
    browser.save_screenshot(str(artifacts / "playground.png"))
    _report({"redraw": redraw_ms, "redraw_flushed": flushed_ms}, artifacts)


def _report(times_ms: dict[str, list[float]], artifacts: Path) -> None:
    """Print and save median, p95 and max of each list of per-frame times."""
    summary = {}
    for name, values in times_ms.items():
        ordered = sorted(values)
        summary[name] = {
            "frames": len(ordered),
            "median_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max_ms": round(ordered[-1], 3),
        }
        print(
            f"playground slider {name.replace('_', ' ')} over {len(ordered)} frames: median "
            f"{summary[name]['median_ms']} ms, p95 {summary[name]['p95_ms']} ms, "
            f"max {summary[name]['max_ms']} ms"
        )
    (artifacts / "redraw.json").write_text(json.dumps(summary, indent=1) + "\n")
