"""Views: pure functions from machine states to pictures, graphs and text.

``views/diff.py`` says what a step changed (:func:`step_changes`); the drawing modules
highlight it.
"""

from .diff import Changes, step_changes

__all__ = ["Changes", "step_changes"]
