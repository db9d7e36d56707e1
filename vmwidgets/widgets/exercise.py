"""``ExerciseWidget(kind, seed)``: predict, then check.

The widget shows the exercise's parameters and question, takes the student's answer as
text and shows ``exercise.check(answer)``: correct, or one line per mistake. The worked
answer stays in the kernel's Python objects; no widget holds it (nor the structured
answer) until the student has checked at least once and asks for it.

>>> import vmwidgets as vw
>>> w = vw.widgets.ExerciseWidget("translate", 1)
>>> w.answer.value = "page fault"
>>> w.check_button.click()
>>> "Correct." in w.feedback.value or "Not quite." in w.feedback.value
True
"""

import html

import ipywidgets as W

from ..scenarios.exercises import KINDS, exercise
from ._text import TextRepr


class ExerciseWidget(TextRepr, W.VBox):
    """One seeded exercise of ``kind`` (one of ``KINDS``: find_vma ... reclaim)."""

    def __init__(self, kind="translate", seed=0):
        if kind not in KINDS:
            raise ValueError(f"unknown exercise kind {kind!r}; one of {', '.join(KINDS)}")
        self.kind_picker = W.Dropdown(options=list(KINDS), value=kind, description="exercise")
        self.seed_picker = W.BoundedIntText(value=seed, min=0, max=10**9, description="seed")
        self.new_button = W.Button(description="New exercise", icon="refresh")
        self.question = W.HTML()
        self.answer = W.Textarea(placeholder="your answer", layout=W.Layout(width="700px", height="120px"))
        self.check_button = W.Button(description="Check", button_style="primary", icon="check")
        self.reveal_button = W.Button(description="Show worked answer", disabled=True,
                                      tooltip="available after your first check")
        self.feedback = W.HTML()
        self.worked = W.HTML()
        self.exercise = None
        self.checks = 0
        self.last_feedback = None
        self.new_button.on_click(lambda _: self.load(self.kind_picker.value, self.seed_picker.value))
        self.check_button.on_click(lambda _: self.check())
        self.reveal_button.on_click(lambda _: self.reveal())
        super().__init__([W.HBox([self.kind_picker, self.seed_picker, self.new_button]),
                          self.question, self.answer,
                          W.HBox([self.check_button, self.reveal_button]),
                          self.feedback, self.worked])
        self.add_class("vmw-exercise")
        self.answer.add_class("vmw-answer")
        self.check_button.add_class("vmw-check")
        self.feedback.add_class("vmw-feedback")
        self.load(kind, seed)

    def text(self):
        """The exercise as plain text: parameters, question and the last feedback (never the
        answer before the student has checked and asked for it)."""
        if self.exercise is None:
            return "ExerciseWidget: no exercise loaded"
        out = [f"ExerciseWidget: {self.exercise.kind}, seed {self.exercise.seed}",
               self.exercise.params_text(), "", self.exercise.question]
        if self.last_feedback is not None:
            out += ["", str(self.last_feedback)]
        if self.worked.value:
            out += ["", "Worked answer:", self.exercise.worked_answer]
        return "\n".join(out)

    def load(self, kind, seed):
        """A new exercise: question shown, answer box, feedback and worked answer cleared."""
        try:
            ex = exercise(kind, seed)
        except (TypeError, ValueError) as exc:
            self.feedback.value = f'<span style="color:#b42318">{html.escape(str(exc))}</span>'
            return
        self.exercise, self.checks, self.last_feedback = ex, 0, None
        self.question.value = (f"<pre>{html.escape(ex.params_text())}\n\n"
                               f"{html.escape(ex.question)}</pre>")
        self.answer.value = self.feedback.value = self.worked.value = ""
        self.reveal_button.disabled = True

    def check(self):
        """Check the text in the answer box; show the feedback."""
        text = self.answer.value.strip()
        if not text:
            self.feedback.value = '<span style="color:#b42318">Type an answer first.</span>'
            return
        try:
            verdict = self.exercise.check(text)
        except (TypeError, ValueError) as exc:   # check() names most; keep the widget alive
            self.feedback.value = f'<span style="color:#b42318">{html.escape(str(exc))}</span>'
            return
        self.checks += 1
        self.last_feedback = verdict
        self.reveal_button.disabled = False
        colour = "#1a7f37" if verdict.correct else "#b42318"
        self.feedback.value = (f'<b style="color:{colour}">{"Correct." if verdict.correct else "Not quite."}</b>'
                               + "".join(f"<br>&bull; {html.escape(m)}" for m in verdict.mistakes))
        return verdict

    def reveal(self):
        """The worked answer, once the student has checked at least once."""
        if self.checks == 0:
            self.feedback.value = '<span style="color:#b42318">Check an answer first.</span>'
            return
        self.worked.value = f"<pre>{html.escape(self.exercise.worked_answer)}</pre>"
