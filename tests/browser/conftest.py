"""Fixtures for the real-browser tests.

``lab_server`` starts a real JupyterLab on loopback (a free port, a known
token, a temporary copy of lessons/). ``browser_page`` gives a fresh page in
Debian's Chromium, driven by Playwright for Python, and records every page
error and console error. The tests skip, with the reason, when Chromium or
Playwright is missing (``make browser`` installs Chromium).
"""

from __future__ import annotations

import os
import secrets
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Written by scripts/ensure-chromium.sh when it could not install Chromium.
CHROMIUM_MISSING_REASON = ARTIFACTS / "chromium-missing.txt"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 90  # seconds


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        why = ""
        if CHROMIUM_MISSING_REASON.is_file():
            why = " (" + CHROMIUM_MISSING_REASON.read_text().strip() + ")"
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}, which is missing{why}; run `make browser`")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def playwright(chromium_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright for Python is not installed (run `make venv`)",
    )
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright, chromium_path):
    browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class BrowserPage:
    page: object  # playwright.sync_api.Page
    errors: list[str] = field(default_factory=list)  # page errors + console errors


@pytest.fixture
def browser_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    result = BrowserPage(page)
    page.on("pageerror", lambda exc: result.errors.append(f"page error: {exc}"))

    def on_console(msg):
        if msg.type == "error":
            result.errors.append(f"console error: {msg.text} at {msg.location}")

    page.on("console", on_console)
    yield result
    context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the server's root_dir (a copy of lessons/)
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture
def lab_server(tmp_path, artifacts_dir):
    """A real JupyterLab server on 127.0.0.1 serving a copy of lessons/."""
    root = tmp_path / "lessons"
    shutil.copytree(REPO_ROOT / "lessons", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # The lessons are committed with their outputs (nbval compares them); the browser test
    # must see outputs appear from its own run, so the copy starts with none.
    for nb_path in root.glob("*.ipynb"):
        nb = json.loads(nb_path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb_path.write_text(json.dumps(nb, indent=1))
    port, token = _free_port(), secrets.token_hex(16)
    # Keep Jupyter's config, settings and workspaces out of the user's home,
    # so the test always sees a pristine JupyterLab.
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ]:
        env[var] = str(tmp_path / sub)
    # Do not ask "Would you like to get notified about official Jupyter news?":
    # the toast covers the screenshot and the answer would fetch from the web.
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    # The kernel must import this checkout's vmwidgets even if not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--allow-root",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log = artifacts_dir / "jupyterlab.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = LabServer(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT}s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        # SIGTERM lets Jupyter shut its kernels down; then make sure the whole
        # process group we started (server + kernels) is gone.
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
