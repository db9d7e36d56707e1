"""Fixtures for the real-browser tests.

``lab_server`` starts a real JupyterLab on loopback (a free port, a known
token, a temporary copy of lessons/); ``examples_server`` one for examples/, which serves
JupyterLab, Notebook 7 and Voila (see servers.py). ``browser_page`` gives a fresh page in
Debian's Chromium, driven by Playwright for Python, and records every page
error and console error. The tests skip, with the reason, when Chromium or
Playwright is missing (``make browser`` installs Chromium).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .servers import REPO_ROOT, ServerError, jupyter_server

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


@pytest.fixture
def lab_server(tmp_path, artifacts_dir):
    """A real JupyterLab server on 127.0.0.1 serving a copy of lessons/."""
    try:
        with jupyter_server(REPO_ROOT / "lessons", tmp_path, artifacts_dir / "jupyterlab.log") as server:
            yield server
    except ServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory, artifacts_dir):
    """One Jupyter server (JupyterLab, Notebook 7 and Voila) serving a copy of examples/,
    shared by the tests of a module."""
    workdir = tmp_path_factory.mktemp("examples-server")
    try:
        with jupyter_server(REPO_ROOT / "examples", workdir, artifacts_dir / "examples-server.log") as server:
            yield server
    except ServerError as exc:
        pytest.fail(str(exc))
