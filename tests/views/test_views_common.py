"""What every view promises: a pure function of the state, its own Figure (never
pyplot's), a title, a text alternative, and working on timeline states."""

import sys

import pytest
from matplotlib.axes import Axes

from vmwidgets import views

from .scenes import family


def all_draws(m, p, a):
    return [
        lambda ax=None: views.draw_address_space(m, p.pid, ax=ax),
        lambda ax=None: views.draw_rmap(m, ax=ax),
        lambda ax=None: views.draw_walk(m, p.pid, a, ax=ax),
        lambda ax=None: views.draw_frames(m, ax=ax),
        lambda ax=None: views.draw_tlb(m, ax=ax),
    ]


def all_texts(m, p, a):
    return [views.address_space_text(m, p.pid), views.rmap_text(m), views.walk_text(m, p.pid, a),
            views.frames_text(m), views.tlb_text(m)]


def test_each_draw_returns_a_titled_axes_on_its_own_figure_without_pyplot():
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    m, p, c, a, f = family()
    figs = set()
    for draw in all_draws(m, p, a):
        ax = draw()
        assert isinstance(ax, Axes) and ax.get_title()
        figs.add(id(ax.figure))
        again = draw(ax)
        assert again is ax
    assert len(figs) == 5
    if not pyplot_loaded:
        assert "matplotlib.pyplot" not in sys.modules
    else:
        import matplotlib.pyplot as plt
        assert not plt.get_fignums()


def test_views_are_pure_and_work_on_every_timeline_state():
    m, p, c, a, f = family()
    before = all_texts(m, p, a)
    for draw in all_draws(m, p, a):
        draw()
    assert all_texts(m, p, a) == before            # drawing changed nothing
    n = m.nr_steps
    for i in range(n - 3, n + 1):
        s = m.timeline.state(i)
        pid = p.pid
        assert all(all_texts(s, s.task(pid), a))
        for draw in all_draws(s, s.task(pid), a):
            draw()
    assert all_texts(m.timeline.state(n), m.timeline.state(n).task(p.pid), a) == before


def test_same_state_same_text():
    m1, p1, _c, a1, _f = family()
    m2, p2, _c, a2, _f = family()
    assert all_texts(m1, p1, a1) == all_texts(m2, p2, a2)


@pytest.mark.parametrize("fn", [views.rmap_text, views.frames_text, views.tlb_text])
def test_not_a_machine_is_a_type_error(fn):
    with pytest.raises(TypeError, match="Machine"):
        fn("machine")
