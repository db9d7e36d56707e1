"""The plain-text face of a widget.

A notebook saves, beside each widget's view, a ``text/plain`` rendering of it: what a
reader of the saved file (or GitHub's viewer, or a screen reader on a static page) sees,
and what nbval compares when the lessons are checked. ipywidgets puts a truncated
``repr`` there; our widgets put ``self.text()`` instead, the facts the widget shows (the
narration of the step, the question asked, the differences found), so those are checked
too.
"""


class TextRepr:
    """Mixin for an ``ipywidgets`` widget with a ``text()`` method."""

    def text(self):
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/plain"] = self.text()
        return data
