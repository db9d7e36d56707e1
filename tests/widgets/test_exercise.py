"""The exercise widget: the answer stays out of every widget's state until checked."""

import json

import pytest

import vmwidgets as vw

pytest.importorskip("ipywidgets")
from vmwidgets.widgets import ExerciseWidget  # noqa: E402
from vmwidgets.scenarios.exercises import KINDS  # noqa: E402


def all_state(widget):
    """Every synced trait of the widget and its descendants, as one JSON text."""
    out, todo = [], [widget]
    while todo:
        w = todo.pop()
        out.append(json.dumps(w.get_state(), default=str))
        todo.extend(getattr(w, "children", ()))
    return "\n".join(out)


def right_answer(ex):
    """The model's answer as the text a student would type (each kind's own format)."""
    if ex.kind == "translate":
        return "page fault" if ex.answer["fault"] is not None else hex(ex.answer["phys"])
    if ex.kind == "maps":
        from vmwidgets.scenarios.exercises.base import _line_text
        return "\n".join(_line_text(line) for line in ex.answer) or ""
    if ex.kind == "cow":
        return ex.answer_text()
    return None


@pytest.mark.parametrize("kind", KINDS)
def test_answer_not_in_widget_state_before_a_check(kind):
    w = ExerciseWidget(kind, 3)
    ex = vw.exercise(kind, 3)
    state = all_state(w)
    assert ex.question.splitlines()[0] in state
    worked = [line for line in ex.worked_answer.splitlines() if len(line.strip()) > 25
              and line not in ex.question]
    assert worked and not any(line in state for line in worked)
    assert w.reveal_button.disabled
    w.reveal()
    assert w.worked.value == "" and "Check an answer first" in w.feedback.value


@pytest.mark.parametrize("kind", ["translate", "maps", "cow"])
def test_right_and_wrong_answers_get_check_feedback(kind):
    w = ExerciseWidget(kind, 5)
    ex = w.exercise
    w.answer.value = right_answer(ex) or "nothing"
    verdict = w.check()
    assert verdict.correct and "Correct." in w.feedback.value
    w.answer.value = "0x1234" if kind != "maps" else "10000000-10001000 --xp"
    verdict = w.check()
    assert not verdict.correct and "Not quite." in w.feedback.value
    assert verdict.mistakes and all(m.replace("'", "&#x27;")[:30] in w.feedback.value for m in verdict.mistakes[:2])
    w.reveal_button.click()
    assert ex.worked_answer.splitlines()[0] in w.worked.value


def test_empty_answer_and_new_exercise():
    w = ExerciseWidget("tlb", 1)
    w.check_button.click()
    assert "Type an answer first" in w.feedback.value and w.checks == 0
    w.kind_picker.value, w.seed_picker.value = "rmap", 9
    w.new_button.click()
    assert w.exercise == vw.exercise("rmap", 9) and w.feedback.value == "" and w.reveal_button.disabled
    with pytest.raises(ValueError, match="unknown exercise kind"):
        ExerciseWidget("paging", 1)
