"""The dev flavor as a person meets it: JupyterLab loaded in a real browser (Debian's headless
chromium, driven through chromedriver), not only through Jupyter's REST API."""

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from torchimg.adapters import engine
from torchimg.model import record

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (`.ci/run` installs them)",
    ),
]

TOKEN = "browser-test-token"
# Headless, as root in CI, and quiet on a machine whose network ends at the package registries.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={TOKEN}", timeout=5) as answer:
        return json.load(answer)


@pytest.fixture
def jupyter(dev_image: record.Record) -> Iterator[int]:
    port, name = _free_port(), engine.new_container_name("torchimg-browser")
    start = "echo hi > /workspace/hello.txt && exec python -I /usr/local/bin/torchimg-jupyter"
    try:
        engine.serve(dev_image.image_id, name, port, 8888, {"JUPYTER_TOKEN": TOKEN}, ["sh", "-c", start])
        deadline = time.monotonic() + 120
        while True:
            try:
                _api(port, "/api/status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield port
    finally:
        engine.remove_container(name)


def test_jupyterlab_in_chromium_shows_the_launcher_in_workspace_and_starts_a_kernel(
    jupyter: int, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    try:
        driver.get(f"http://127.0.0.1:{jupyter}/lab?token={TOKEN}")
        wait = WebDriverWait(driver, 120, ignored_exceptions=[StaleElementReferenceException])
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Launcher .jp-LauncherCard"))
        # The file browser opens in /workspace (the file made there is listed).
        wait.until(
            lambda d: (
                "hello.txt"
                in " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-DirListing-item"))
            )
        )
        # A notebook from the launcher: its kernel starts and goes idle.
        notebook = (By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]')
        wait.until(expected_conditions.element_to_be_clickable(notebook)).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Notebook"))
        deadline = time.monotonic() + 120
        kernels: object = []
        while time.monotonic() < deadline:
            kernels = _api(jupyter, "/api/kernels")
            if isinstance(kernels, list) and any(k.get("execution_state") == "idle" for k in kernels):
                break
            time.sleep(1)
        assert isinstance(kernels, list) and any(k.get("execution_state") == "idle" for k in kernels), kernels
        # No "get notified about official Jupyter news?" prompt, after everything has loaded.
        assert "Jupyter news" not in driver.page_source
    except Exception:
        driver.save_screenshot(str(tmp_path / "jupyterlab.png"))  # kept by pytest for a look
        raise
    finally:
        driver.quit()
