"""Thin ipywidgets bindings over the model and the views.

``Explorer(machine)``
    syscall and access controls for a chosen process, a timeline (slider, step, back,
    play) over ``machine.timeline`` and the linked pictures and text.
``ExerciseWidget(kind, seed)``
    predict, then check: the student's answer goes to ``exercise.check()``.
``RealityCheck(ops)``
    the same simple operations in the model and in a live child process, side by side.

``import vmwidgets`` does not import this package (nor ipywidgets/matplotlib); the first
use of ``vw.widgets`` does.
"""

from .explorer import Explorer
from .exercise import ExerciseWidget
from .reality import RealityCheck
from .inputs import InputError

__all__ = ["Explorer", "ExerciseWidget", "RealityCheck", "InputError"]
