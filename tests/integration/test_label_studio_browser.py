"""Label Studio's labeling page in a real headless Chromium, with this backend connected.

A person's path: log in, open a task, switch Auto-Annotation on, pick a smart keypoint label and
click the object; Label Studio asks the backend for a mask and shows a brush region. Needs a real
Label Studio (the session fixture) and the system Chromium (see tests/browser); a screenshot goes
to ``$UNSAMV2_ARTIFACTS_DIR/label_studio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from browser_driver import artifacts_dir, chromium_driver
from playground_app import png_bytes, scene

from ml_backend.label_studio.label_config import shipped_config

from helpers import ServiceProcess, free_port, ls_connect, tiny_backend_env, wait_for

pytestmark = pytest.mark.browser

AUTH = ("ls", "ls-pass")


def _start_backend(
    tmp_path: Path, make_tiny, ls: dict[str, str]
) -> tuple[str, dict[str, str], ServiceProcess]:
    port = free_port()
    env = tiny_backend_env(
        tmp_path,
        make_tiny(),
        port=port,
        auth=AUTH,
        webhook_secret="browser-secret",
        label_studio=(ls["url"], ls["token"]),
    )
    url = f"http://127.0.0.1:{port}"
    service = ServiceProcess(["serve"], env, tmp_path / "serve.log")

    def ready() -> bool:
        try:
            health = requests.get(f"{url}/health", auth=AUTH, timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return health["model"]["state"] == "ready"

    try:
        wait_for(ready, 90, "the backend's model", interval=0.3)
    except AssertionError:
        service.stop()
        raise
    return url, env, service


def _project_with_task(ls: dict[str, str]) -> tuple[int, int]:
    api = requests.Session()
    api.headers["Authorization"] = f"Token {ls['token']}"
    project = api.post(
        f"{ls['url']}/api/projects",
        json={"title": "browser-smart-click", "label_config": shipped_config()},
        timeout=60,
    ).json()
    imported = api.post(
        f"{ls['url']}/api/projects/{project['id']}/import?return_task_ids=true",
        files={"file": ("scene.png", png_bytes(scene()), "image/png")},
        timeout=60,
    ).json()
    return int(project["id"]), int(imported["task_ids"][0])


def _js_wait(driver: Any, condition: str, what: str, timeout: float = 60) -> Any:
    return wait_for(lambda: driver.execute_script(f"return {condition};"), timeout, what, 0.2)


def test_smart_click_in_label_studio_draws_a_brush_region(
    label_studio, tmp_path: Path, make_tiny
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    backend_url, env, service = _start_backend(tmp_path, make_tiny, label_studio)
    driver = None
    try:
        project_id, task_id = _project_with_task(label_studio)
        ls_connect(project_id, backend_url, env)
        driver = chromium_driver(1400, 1000)
        driver.get(f"{label_studio['url']}/user/login/")
        driver.find_element(By.NAME, "email").send_keys("ci@example.com")
        driver.find_element(By.NAME, "password").send_keys("ci-pass-123")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        wait_for(lambda: "/user/login" not in driver.current_url, 30, "the login")
        driver.get(f"{label_studio['url']}/projects/{project_id}/data?task={task_id}")
        _js_wait(driver, "!!document.querySelector('.lsf-toolbar')", "the labeling page", 90)

        for switch in ("Auto-Annotation", "Auto-Accept Suggestions"):
            wait_for(
                lambda s=switch: driver.find_elements(By.XPATH, f"//*[text()='{s}']"), 30, switch
            )
            driver.find_element(By.XPATH, f"//*[text()='{switch}']").click()
        _js_wait(driver, "!!document.querySelector('button[aria-label=key-point-tool]')", "tool")
        driver.execute_script("document.querySelector('button[aria-label=key-point-tool]').click()")
        label = wait_for(
            lambda: driver.find_elements(By.XPATH, "//*[text()='Car @0.5']"), 30, "the label"
        )[0]
        driver.execute_script("arguments[0].closest('.lsf-label').click()", label)

        # the task image as Label Studio shows it: the largest picture of the labeling view
        box = driver.execute_script(
            """const images = [...document.querySelectorAll('img')]
              .map((i) => i.getBoundingClientRect());
            const r = images.sort((a, b) => b.width * b.height - a.width * a.height)[0];
            return [r.left, r.top, r.width, r.height];"""
        )
        chain = ActionChains(driver)
        # the middle of the red rectangle (rows 20-69, cols 30-89 of the 96 x 128 scene)
        chain.w3c_actions.pointer_action.move_to_location(
            round(box[0] + box[2] * 60 / 128), round(box[1] + box[3] * 45 / 96)
        )
        chain.w3c_actions.key_action.pause()
        chain.click().perform()
        # the click's keypoint is "Car @0.5"; the backend's mask is a brush region labelled "Car"
        _js_wait(
            driver,
            "[...document.querySelectorAll('.lsf-outliner-item__title')]"
            ".some((e) => e.textContent === 'Car')",
            "the brush region",
        )
        assert "1 click(s) at granularity 0.50" in service.log()
        driver.save_screenshot(str(artifacts_dir("label_studio") / "smart-click.png"))
    finally:
        if driver is not None:
            driver.quit()
        service.stop()
