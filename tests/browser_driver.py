"""Headless Chromium for browser tests: the system's browser and driver, never a download.

Chromium and its WebDriver come from Debian's ``chromium`` and ``chromium-driver`` packages;
selenium is given both paths. Without them (or without selenium) a test is skipped, or fails when
UNSAMV2_REQUIRE_SERVICES=1 (CI). Screenshots go to ``$UNSAMV2_ARTIFACTS_DIR`` (default
``artifacts/`` in the repository, git-ignored).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from helpers import missing_service

REPO = Path(__file__).resolve().parents[1]


def artifacts_dir(name: str) -> Path:
    """Return (and create) the artifacts sub-folder `name`."""
    folder = Path(os.environ.get("UNSAMV2_ARTIFACTS_DIR") or REPO / "artifacts") / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_driver(width: int, height: int) -> Any:
    """Start a headless Chromium of the given window size; the caller quits it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        missing_service(
            "Chromium and its driver are not installed (apt-get install chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing_service("selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
