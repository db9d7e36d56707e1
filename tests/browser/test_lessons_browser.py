"""Lessons in a real browser: JupyterLab runs them, and a student works an exercise.

One JupyterLab server serves a copy of lessons/ (outputs cleared) to Chromium. For each
lesson in ``LESSONS`` the test opens it, runs Run > Run All Cells on a real kernel (the
Python that runs the tests, the one the server runs on), waits for the kernel to go
idle, and checks that no cell raised and that the lesson's widgets were drawn: its
exercises, explorers and reality checks. Then it works the first exercise it can answer,
as a student would: a wrong answer typed into the answer box gets "Not quite." and a
named mistake, the right one (computed here with ``vw.exercise(kind, seed)``) gets
"Correct.", and "Show worked answer" shows it; so for every exercise of the lesson whose
answer the test can write. In lesson 9 the cells that replay the exercises on the live
kernel are run again once the exercises were checked and must confirm the worked answers
(before a check they only ask for one). Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re

import pytest

import vmwidgets as vw

from .servers import REPO_ROOT, ServerError, jupyter_server
from .test_lab_smoke import JS_RUN_FINISHED, run_all_cells, saved_outputs

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

LESSONS_DIR = REPO_ROOT / "lessons"
#: The lessons driven: the first of the course and the fork lesson (explorers, exercises),
#: and the reality check (exercises, RealityCheck tables, cells that ask the live kernel).
#: A lesson not written yet is skipped, with that reason.
LESSONS = ["01_address_space.ipynb", "05_fork_and_cow.ipynb", "09_reality_check.ipynb"]

#: Lesson 9: cells that replay an exercise on the live kernel once it was checked, and what
#: they print when the kernel agrees with the worked answer (or when there is none).
REPLAYS = {"kernel_maps(maps_exercise)": "They are the worked answer's lines.",
           "kernel_pagemap(pagemap_exercise)": "Your kernel agrees with the worked answer."}
NO_KERNEL = "No live kernel here"

#: A widget class on the page for each widget a lesson's code makes.
WIDGETS = {"ExerciseWidget(": ".vmw-exercise", "Explorer(": ".vmw-explorer",
           "RealityCheck": ".vmw-reality"}


@pytest.fixture(scope="module")
def lessons_server(tmp_path_factory, artifacts_dir):
    """One JupyterLab on 127.0.0.1 serving a copy of lessons/, for all the lessons here."""
    workdir = tmp_path_factory.mktemp("lessons-server")
    try:
        with jupyter_server(LESSONS_DIR, workdir, artifacts_dir / "lessons-server.log") as server:
            yield server
    except ServerError as exc:
        pytest.fail(str(exc))


def open_lesson(page, server, name):
    """Open ``name`` in a JupyterLab workspace of its own (so that lessons opened before it
    on this server are not restored beside it) and wait for its kernel to be idle."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    workspace = re.sub(r"\W", "-", name.removesuffix(".ipynb"))
    page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={server.token}",
              wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    accept = page.locator(".jp-Dialog button.jp-mod-accept")   # "Select kernel", if asked
    try:
        accept.wait_for(timeout=5_000)
        accept.click()
    except PlaywrightTimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)


def _find_vma_line(i, item):
    _addr, vma, inside = item
    if vma is None:
        return f"{i}. none"
    return f"{i}. {vma[0]:08x}-{vma[1]:08x} {'inside' if inside else 'outside'}"


#: How a student writes the answer of each kind, one line per item (as its question says).
ANSWER_LINES = {
    "maps": lambda ex: [f"{start:08x}-{end:08x} {perms}" for start, end, perms in ex.answer],
    "pagemap": lambda ex: ex.answer_text().split("; "),    # "page 0: PE; page 1: P zero"
    "find_vma": lambda ex: [_find_vma_line(i, item) for i, item in enumerate(ex.answer, 1)],
    "unmapped_area": lambda ex: [f"{i}. {addr:#x}" for i, addr in enumerate(ex.answer, 1)],
}


def answer_lines(ex):
    """The exercise's answer as the lines a student types in the widget, or None for a kind
    whose answer this test does not know how to write."""
    if ex.kind in ANSWER_LINES:
        return ANSWER_LINES[ex.kind](ex)
    if hasattr(ex, "answer_text"):
        return ex.answer_text().splitlines()
    return None


def right_and_wrong(kind, seed):
    """(right answer, wrong answer) as text for exercise ``kind``/``seed``, or None.
    The wrong one is the right one without its last line, so it is read without error
    and its feedback names what is missing."""
    ex = vw.exercise(kind, seed)
    lines = answer_lines(ex)
    if not lines or len(lines) < 2:
        return None
    right, wrong = "\n".join(lines), "\n".join(lines[:-1])
    assert ex.check(right).correct, f"{kind} seed {seed}: the test wrote the answer wrongly"
    verdict = ex.check(wrong)
    assert not verdict.correct and verdict.mistakes
    return ex, right, wrong


def check_answer(widget, text, expect):
    widget.locator(".vmw-answer textarea").fill(text)
    widget.locator(".vmw-check").click()
    feedback = widget.locator(".vmw-feedback")
    feedback.filter(has_text=expect).wait_for(timeout=30_000)
    return feedback.text_content()


def work_exercises(page, shot):
    """Answer every exercise on the page whose answer this test can write: wrong, right,
    then the worked answer. Returns the (kind, seed) of each; ``shot`` is a path prefix
    for a screenshot of each."""
    worked = []
    widgets = page.locator(".vmw-exercise")
    for i in range(widgets.count()):
        widget = widgets.nth(i)
        head = re.search(r"ARG kind (\w+)\s+ARG seed (\d+)", widget.text_content())
        assert head, f"exercise {i} shows no kind and seed:\n{widget.text_content()}"
        kind, seed = head.group(1), int(head.group(2))
        found = right_and_wrong(kind, seed)
        if found is None:
            continue
        ex, right, wrong = found
        widget.scroll_into_view_if_needed()
        said = check_answer(widget, wrong, "Not quite.")
        assert re.search(r"•\s*\S", said), f"no mistake named:\n{said}"
        said = check_answer(widget, right, "Correct.")
        assert "Not quite." not in said and "•" not in said, said
        reveal = widget.locator("button", has_text="Show worked answer")
        assert reveal.is_enabled()
        reveal.click()
        first = ex.worked_answer.splitlines()[0].strip()
        widget.locator("pre", has_text=first).wait_for(timeout=30_000)
        widget.screenshot(path=f"{shot}-{i}-{kind}.png")
        worked.append((kind, seed))
    return worked


def run_cell(page, source):
    """Run the code cell whose whole source is ``source`` (Shift+Enter in its editor);
    return its output area."""
    editor = page.locator(".jp-InputArea-editor .cm-content", has_text=re.compile(rf"^{re.escape(source)}$"))
    cell = page.locator(".jp-CodeCell", has=editor)
    assert cell.count() == 1, f"no single cell `{source}`"
    cell.scroll_into_view_if_needed()
    editor.click()
    page.keyboard.press("Shift+Enter")
    return cell.locator(".jp-OutputArea")


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_and_an_exercise_works_in_jupyterlab(name, lessons_server, browser_page, artifacts_dir):
    if not (LESSONS_DIR / name).exists():
        pytest.skip(f"lessons/{name} is not written yet")
    page, errors = browser_page.page, browser_page.errors
    stem = name.removesuffix(".ipynb")
    source = (LESSONS_DIR / name).read_text()
    try:
        open_lesson(page, lessons_server, name)
        run_all_cells(page)
        page.wait_for_function(JS_RUN_FINISHED, timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        outputs = saved_outputs(page, lessons_server, name)
        failed = [f"{o['ename']}: {o['evalue']}" for o in outputs if o["output_type"] == "error"]
        assert not failed, f"cells of {name} raised errors in JupyterLab: {failed}"

        # Every kind of widget the lesson makes is drawn (not "Error displaying widget").
        # (text_content, not inner_text: JupyterLab skips rendering cells out of view.)
        text = page.locator(".jp-Notebook").first.text_content()
        assert "Error displaying widget" not in text
        for marker, selector in WIDGETS.items():
            if marker in source:
                page.locator(selector).first.wait_for(timeout=30_000)
        if "RealityCheck" in source:
            table = page.locator(".vmw-reality .vmw-reality-table").first
            table.wait_for(timeout=30_000)
            assert "kernel" in table.text_content()
            assert re.search(r"\d+\s*differences", page.locator(".vmw-reality").first.text_content())

        if "ExerciseWidget(" in source:
            worked = work_exercises(page, artifacts_dir / f"lesson-{stem}-exercise")
            assert worked, f"{name}: no exercise this test knows how to answer"
            # Lesson 9: now that the exercises were checked, their replays on the live
            # kernel run and confirm the worked answers.
            for i, (cell, agrees) in enumerate(REPLAYS.items()):
                if cell in source:
                    out = run_cell(page, cell)
                    out.filter(has_text=re.compile(f"{re.escape(agrees)}|{NO_KERNEL}|disagree|differ")
                               ).wait_for(timeout=60_000)
                    said = out.text_content()
                    assert agrees in said or NO_KERNEL in said, said
                    out.screenshot(path=str(artifacts_dir / f"lesson-{stem}-kernel-{i}.png"))
    finally:
        page.screenshot(path=str(artifacts_dir / f"lesson-{stem}.png"), full_page=True)
    assert not errors, "the page logged errors:\n" + "\n".join(errors)
