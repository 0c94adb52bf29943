"""Label Studio's video labeling page in a real headless Chromium, with this backend connected.

What an annotator does: switch Auto-Annotation on, pick a label, draw a box on the first frame,
then, with the box selected, click the label of the wanted granularity. Drawing a video box
sends nothing to the backend (Label Studio 1.23's video tools do not notify it); changing the
label of the selected box does: the editor posts the box's ``videorectangle`` region, the
backend tracks it, and the editor replaces the box by the track (same region id). Needs a real
Label Studio (the session fixture) and the system Chromium (see tests/browser); a screenshot
goes to ``$UNSAMV2_ARTIFACTS_DIR/label_studio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from browser_driver import artifacts_dir, chromium_driver
from video_clips import write_clip

from helpers import ServiceProcess, free_port, ls_connect, tiny_backend_env, wait_for

pytestmark = pytest.mark.browser

AUTH = ("ls-video", "ls-video-pass")
CONFIG = """<View>
  <Labels name="videoLabels" toName="video">
    <Label value="Car @1" level="1.0" background="#ff0000"/>
    <Label value="Car @0.3" level="0.3" background="#ff9999"/>
  </Labels>
  <Video name="video" value="$video" frameRate="10"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""
REGIONS_JS = (
    "const a = window.Htx.annotationStore.selected;"
    "return a.regions.map((r) => [r.id, r.labelName, r.sequence.map((k) => [k.frame, k.enabled])]);"
)

VIDEO_READY_JS = (
    "document.querySelector('.konvajs-content')?.getBoundingClientRect().width > 0"
    " && document.querySelectorAll('.lsf-label').length === 2"
)
PICK_JS = (
    "const label = [...document.querySelectorAll('.lsf-label')].find((e) =>"
    " [...e.querySelectorAll('*')]"
    ".some((c) => !c.childElementCount && c.textContent === arguments[0]));"
    "if (label) label.click(); return !!label;"
)


def _js_wait(driver: Any, condition: str, what: str, timeout: float = 60) -> Any:
    return wait_for(lambda: driver.execute_script(f"return {condition};"), timeout, what, 0.2)


def _project(ls: dict[str, str], tmp_path: Path) -> tuple[int, int]:
    api = requests.Session()
    api.headers["Authorization"] = f"Token {ls['token']}"
    project = api.post(
        f"{ls['url']}/api/projects",
        json={"title": "browser-video", "label_config": CONFIG},
        timeout=60,
    ).json()
    clip = tmp_path / "clip.webm"
    write_clip(clip, frames=12, size_hw=(240, 320), fps=10.0, square=80, step_px=5)
    imported = api.post(
        f"{ls['url']}/api/projects/{project['id']}/import?return_task_ids=true",
        files={"file": ("clip.webm", clip.read_bytes(), "video/webm")},
        timeout=60,
    ).json()
    return int(project["id"]), int(imported["task_ids"][0])


def _draw_box(driver: Any) -> None:
    """Drag a box over the square on the first frame (the video is drawn centred, at 1:1)."""
    from selenium.webdriver.common.action_chains import ActionChains

    stage = driver.execute_script(
        "const r = document.querySelector('.konvajs-content').getBoundingClientRect();"
        "return [r.left + r.width / 2 - 160, r.top + r.height / 2 - 120];"
    )
    chain = ActionChains(driver, duration=50)
    pointer = chain.w3c_actions.pointer_action
    pointer.move_to_location(round(stage[0] + 15), round(stage[1] + 75))
    pointer.pointer_down()
    for step in range(1, 8):
        pointer.pause(0.05)
        pointer.move_to_location(round(stage[0] + 15 + 12 * step), round(stage[1] + 75 + 12 * step))
    pointer.pause(0.1)
    pointer.pointer_up()
    chain.perform()


def test_relabelling_a_drawn_video_box_tracks_it(label_studio, tmp_path: Path, make_tiny) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()
    env = tiny_backend_env(
        tmp_path,
        make_tiny(),
        port=port,
        auth=AUTH,
        webhook_secret="browser-video-secret",
        label_studio=(label_studio["url"], label_studio["token"]),
        UNSAMV2_VIDEO_MAX_FRAMES="2",
    )
    backend_url = f"http://127.0.0.1:{port}"
    service = ServiceProcess(["serve"], env, tmp_path / "serve.log")
    driver = None
    try:
        project_id, task_id = _project(label_studio, tmp_path)
        service.wait_log("serving model version", 90)
        ls_connect(project_id, backend_url, env)
        driver = chromium_driver(1400, 1000)
        driver.get(f"{label_studio['url']}/user/login/")
        driver.find_element(By.NAME, "email").send_keys("ci@example.com")
        driver.find_element(By.NAME, "password").send_keys("ci-pass-123")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        wait_for(lambda: "/user/login" not in driver.current_url, 30, "the login")
        driver.get(f"{label_studio['url']}/projects/{project_id}/data?task={task_id}")
        _js_wait(driver, "document.querySelector('video')?.readyState >= 2", "the video", 90)
        wait_for(lambda: driver.find_elements(By.XPATH, "//*[text()='Auto-Annotation']"), 30, "")
        driver.find_element(By.XPATH, "//*[text()='Auto-Annotation']").click()

        def pick(label: str) -> None:  # in one script: the editor re-renders its labels
            assert driver.execute_script(PICK_JS, label), f"no label {label!r}"

        _js_wait(driver, VIDEO_READY_JS, "the video canvas")
        pick("Car @1")
        _draw_box(driver)
        drawn = wait_for(lambda: driver.execute_script(REGIONS_JS), 30, "the drawn box", 0.2)
        ((region_id, label, sequence),) = drawn
        assert (label, sequence) == ("Car @1", [[1, True]])
        assert "tracked over" not in service.log()  # drawing alone asks nothing

        driver.execute_script(
            "const a = window.Htx.annotationStore.selected; a.selectArea(a.regions[0]);"
        )
        pick("Car @0.3")  # the selected box changes label: the editor asks the backend

        service.wait_log("at granularity 0.30 (level)", 60)

        def tracked() -> Any:  # the reply replaces the drawn keyframe
            regions = driver.execute_script(REGIONS_JS)
            return regions if regions and regions[0][2] != [[1, True]] else None

        ((track_id, label, sequence),) = wait_for(tracked, 30, "the tracked box", 0.3)
        assert (track_id, label) == (region_id, "Car @0.3")  # the box became the track
        frames = [frame for frame, _ in sequence]
        assert frames[0] == 1 and set(frames) <= {1, 2, 3}  # UNSAMV2_VIDEO_MAX_FRAMES=2
        assert sequence[-1][1] is False  # lost or cut off: the span ends
        assert "1 keyframe prompt(s)" in service.log()
        assert len([frame for frame, enabled in sequence if enabled]) >= 2  # fixed seed

        # back to the whole object: the track is tracked again from its drawn box only (the
        # editor sends the tracked keyframes back with the backend's marks)
        pick("Car @1")
        service.wait_log("at granularity 1.00 (level)", 60)
        assert service.log().count("1 keyframe prompt(s)") == 2
        driver.save_screenshot(str(artifacts_dir("label_studio") / "video-track.png"))
    finally:
        if driver is not None:
            driver.quit()
        service.stop()
