"""The lessons follow the rules of lessons/README.md that a program can check.

nbval (in `make test`) runs every lesson and compares its outputs; these tests check the
shape: the nine lessons are there and listed, each opens with its goals, ends with a
recap, links the kernel functions it explains to Linux 6.18's sources, offers at least
two seeded exercises that exist, and was saved after a clean run top to bottom.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises import KINDS

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
#: The numbered lessons issue 6 asks for, in order (00_first_look is the warm-up).
NUMBERED = ["01_address_space", "02_mmap_and_merge", "03_splitting", "04_anon_vma",
            "05_fork_and_cow", "06_page_tables", "07_tlb", "08_rmap_and_reclaim",
            "09_reality_check"]
ELIXIR = re.compile(r"https://elixir\.bootlin\.com/linux/([^/\s)]+)/([^\s)]*)")


def _nb(name):
    return nbformat.read(LESSONS_DIR / f"{name}.ipynb", as_version=4)


def _markdown(nb):
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_every_lesson_is_there_and_listed():
    on_disk = sorted(p.stem for p in LESSONS_DIR.glob("*.ipynb"))
    assert [n for n in on_disk if n[:2] != "00"] == NUMBERED
    table = (LESSONS_DIR / "README.md").read_text()
    for name in on_disk:
        assert f"`{name}.ipynb`" in table, f"lessons/README.md does not list {name}"


@pytest.mark.parametrize("name", NUMBERED)
def test_opens_with_goals_and_ends_with_a_recap(name):
    nb = _nb(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "no title cell"
    heads = [c.source.splitlines()[0] for c in nb.cells
             if c.cell_type == "markdown" and c.source.startswith("#")]
    goals = [c for c in nb.cells[:3] if c.cell_type == "markdown"
             and "## What you will learn" in c.source]
    assert goals, "no '## What you will learn' in the first cells"
    items = re.findall(r"^\s*(?:[-*]|\d+\.)\s+\S", goals[0].source.split("## What you will learn")[1], re.M)
    assert len(items) >= 3, "the goals should be a list of at least 3 items"
    assert any(h.startswith("## Recap") for h in heads), "no '## Recap' section"
    recap = max(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                and c.source.startswith("## Recap"))
    assert recap >= len(nb.cells) - 3, "the recap should close the lesson"


@pytest.mark.parametrize("name", NUMBERED)
def test_kernel_links_point_at_6_18(name):
    text = _markdown(_nb(name))
    links = ELIXIR.findall(text)
    assert len(links) >= 3, "explain with links to the kernel sources (at least 3)"
    for version, rest in links:
        assert version == "v6.18", f"link to {version}/{rest}: link Linux 6.18 (v6.18)"
        if rest.startswith("A/ident/"):
            assert re.fullmatch(r"A/ident/[A-Za-z_][A-Za-z0-9_]*", rest), rest
        else:
            assert re.fullmatch(r"source/[\w./-]+\.[chS](#L\d+)?|source/[\w./-]+", rest), rest
    # Links between lessons resolve.
    for target in re.findall(r"\]\((\d\d_[\w]+\.ipynb)\)", text):
        assert (LESSONS_DIR / target).exists(), f"link to missing lesson {target}"


def _exercise_calls(nb):
    """(kind, seed) of every ExerciseWidget(kind, seed) made in the lesson's code."""
    calls = []
    for cell in _code(nb):
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                    == "ExerciseWidget"):
                args = [ast.literal_eval(a) for a in node.args]
                kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
                calls.append((kw.get("kind", args[0] if args else None),
                              kw.get("seed", args[1] if len(args) > 1 else 0)))
    return calls


@pytest.mark.parametrize("name", NUMBERED)
def test_at_least_two_seeded_exercises(name):
    calls = _exercise_calls(_nb(name))
    assert len(calls) >= 2, f"{name} has {len(calls)} ExerciseWidget(kind, seed); needs 2"
    for kind, seed in calls:
        assert kind in KINDS, f"unknown exercise kind {kind!r}"
        ex = vw.exercise(kind, seed)
        assert ex.check(ex.answer).correct, f"{kind} seed {seed}: its own answer is not correct"


@pytest.mark.parametrize("name", NUMBERED)
def test_a_widget_steps_through_the_kernels_work(name):
    """The Explorer (its timeline steps back and forth) or the reality check's side-by-side run."""
    code = "\n".join(c.source for c in _code(_nb(name)))
    assert "Explorer(" in code or "RealityCheck" in code


@pytest.mark.parametrize("name", ["00_first_look"] + NUMBERED)
def test_saved_after_a_clean_run(name):
    nb = _nb(name)
    code = [c for c in _code(nb) if c.source.strip()]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        "run the lesson top to bottom and save (scripts/run_lessons.py): "
        f"execution counts are {counts}")
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"a saved error: {out.get('ename')}: {out.get('evalue')}"
            assert "Traceback" not in out.get("text", ""), "a traceback in a saved output"
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), (
                "a saved widget view: save with scripts/run_lessons.py (keeps its text only)")
    assert "widgets" not in nb.metadata, "save without widget state (scripts/run_lessons.py)"
    assert nb.metadata.kernelspec.name == "python3"
