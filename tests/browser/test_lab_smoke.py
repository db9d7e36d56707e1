"""Smoke test in a real browser: the first lesson runs in JupyterLab.

A student's path, end to end: JupyterLab serves lessons/, Chromium opens
00_first_look.ipynb, "Run > Run All Cells" executes it on a real kernel, and
the memory map appears on the page without any JavaScript error.
"""

from __future__ import annotations

import json
import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = "00_first_look.ipynb"

# Text of all outputs on the page.
JS_OUTPUT_TEXT = """() => [...document.querySelectorAll('.jp-OutputArea-output')]
                         .map(e => e.innerText).join('\\n')"""
# Run All has finished (or stopped at an error): no cell is queued or running
# ("[*]") and at least one cell got an execution count ("[1]").
JS_RUN_FINISHED = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                        .map(p => p.textContent);
    return !prompts.some(t => t.includes('*')) && prompts.some(t => /\\[\\d+\\]/.test(t));
}"""


def open_notebook(page, server, name):
    page.goto(f"{server.url}/lab/tree/{name}?token={server.token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    # JupyterLab may ask which kernel to start (e.g. when a kernel from an earlier session is
    # still known); a student accepts the proposed Python 3 kernel.
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    accept = page.locator(".jp-Dialog button.jp-mod-accept")
    try:
        accept.wait_for(timeout=5_000)
        accept.click()
    except PlaywrightTimeoutError:
        pass
    # The kernel has started and is waiting for work.
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)


def run_all_cells(page):
    """Use the menu, as a student would: Run > Run All Cells."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def saved_outputs(page, server, name, timeout=30):
    """Save the notebook (Ctrl+S) and return the outputs stored on disk."""
    path = server.root / name
    before = path.stat().st_mtime_ns
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + timeout
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, "JupyterLab did not save the notebook"
        time.sleep(0.2)
    time.sleep(0.5)  # let the write finish
    nb = json.loads(path.read_text())
    return [out for cell in nb["cells"] if cell["cell_type"] == "code" for out in cell["outputs"]]


def test_first_look_runs_in_jupyterlab(lab_server, browser_page, artifacts_dir):
    page, errors = browser_page.page, browser_page.errors
    try:
        open_notebook(page, lab_server, NOTEBOOK)
        run_all_cells(page)
        page.wait_for_function(JS_RUN_FINISHED, timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    finally:
        page.screenshot(path=str(artifacts_dir / "first_look.png"), full_page=True)

    outputs = saved_outputs(page, lab_server, NOTEBOOK)
    failed = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
    assert not failed, f"cells of {NOTEBOOK} raised errors in JupyterLab: {failed}"
    # The memory map printed by p.proc_maps() is on the page.
    text = page.evaluate(JS_OUTPUT_TEXT)
    assert "[stack]" in text and "rw-p" in text, f"no memory map in the outputs:\n{text}"
    assert not errors, "the page logged errors:\n" + "\n".join(errors)
