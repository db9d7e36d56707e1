"""The address-space strip: layout, artists and text against /proc/PID/maps."""

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import vmwidgets as vw
from vmwidgets.views import (address_space_layout, address_space_text, draw_address_space,
                             step_changes)

from .scenes import ANON, RW, family, many_vmas


def maps_ranges(p):
    out = []
    for line in p.proc_maps().splitlines():
        lo, hi = line.split()[0].split("-")
        if not line.endswith("[vsyscall]"):
            out.append((int(lo, 16), int(hi, 16), line.split()[1]))
    return out


def test_layout_has_every_vma_in_order_and_gaps_between():
    m, p, c, a, f = family()
    segs = address_space_layout(p.mm)
    vmas = [(s.start, s.end, s.perms) for s in segs if s.kind == "vma"]
    assert vmas == maps_ranges(p)
    # Coordinates increase and pieces touch; a gap sits exactly between two VMAs.
    for left, right in zip(segs, segs[1:]):
        assert left.x1 == right.x0 and left.end == right.start
        assert not (left.kind == "gap" and right.kind == "gap")
    gaps = [s for s in segs if s.kind == "gap"]
    assert gaps and all(s.compressed == (s.size >= 1 << 20) for s in gaps)
    # A 43 TiB hole is not drawn wider than a 4 KiB VMA is tall compared to it.
    assert max(s.x1 - s.x0 for s in gaps) < 2


def test_layout_names_heap_stack_files_and_anon_vma():
    m, p, c, a, f = family()
    by_start = {s.start: s for s in address_space_layout(p.mm) if s.kind == "vma"}
    assert by_start[f].name == "/data/f"
    assert by_start[a].anon_vma == p.mm.vma_lookup(a).anon_vma.id
    names = {s.name for s in by_start.values()}
    assert {"[heap]", "[stack]", "[vdso]", "/usr/bin/demo"} <= names


def test_draw_returns_axes_on_own_figure_with_one_bar_and_label_per_vma():
    m, p, c, a, f = family()
    ax = draw_address_space(m, p.pid)
    assert isinstance(ax, Axes) and isinstance(ax.figure, Figure)
    bars = [col for col in ax.collections if col.get_gid() == "vmas"]
    assert len(bars) == 1 and len(bars[0].get_paths()) == p.mm.map_count
    labels = [t.get_text() for t in ax.texts if t.get_gid() == "vma-label"]
    assert len(labels) == p.mm.map_count
    assert any("data/f" not in l and "f" in l for l in labels) and "rw-p [heap]" in labels
    assert f"pid {p.pid}" in ax.get_title()


def test_text_lists_every_vma_of_proc_maps():
    m, p, c, a, f = family()
    text = address_space_text(m, p.pid)
    for lo, hi, perms in maps_ranges(p):
        assert f"{lo:#x}-{hi:#x} {perms}" in text
    assert "[stack]" in text and "gap of" in text


def test_changes_outline_the_vma_mprotect_split_off():
    m, p, c, a, f = family()
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    ax = draw_address_space(m, p.pid, changes=ch)
    bars = [col for col in ax.collections if col.get_gid() == "vmas"][0]
    starts = [s.start for s in address_space_layout(p.mm) if s.kind == "vma"]
    widths = list(bars.get_linewidths())
    outlined = {starts[i] for i, w in enumerate(widths) if w > 1}
    assert outlined == {a, a + 3 * 4096}          # the lower part resized, the upper added
    text = address_space_text(m, p.pid, changes=ch)
    assert f"{a + 3 * 4096:#x}-{a + 4 * 4096:#x} r--p" in text
    marks = sorted(l.rsplit("<- ", 1)[1] for l in text.splitlines() if "<- " in l)
    assert marks == ["added", "resized"]     # split: one part is the old VMA, one is new
    # The child's strip has nothing outlined.
    other = draw_address_space(m, c.pid, changes=ch)
    assert max(other.collections[0].get_linewidths()) <= 1


def test_munmapped_ranges_are_outlined_and_named():
    m = vw.Machine()
    p = m.spawn()
    a = p.mmap(0, 4096, RW, ANON)
    p.munmap(a, 4096)
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    assert f"unmapped by the last step: {a:#x}-{a + 4096:#x} (4K)" in address_space_text(m, p.pid, ch)
    ax = draw_address_space(m, p.pid, changes=ch)
    ghost = [col for col in ax.collections if col.get_gid() == "removed"]
    assert len(ghost) == 1 and len(ghost[0].get_paths()) == 1
    # It is drawn over the gap the VMA left (between [heap] and [vvar]).
    gap = [s for s in address_space_layout(p.mm) if s.kind == "gap" and s.start <= a < s.end][0]
    xs = ghost[0].get_paths()[0].vertices[:, 0]
    assert min(xs) == pytest.approx(gap.x0) and max(xs) == pytest.approx(gap.x1)
    # Unmapping the middle page of three splits the VMA (no VMA is "removed"): the hole
    # it leaves is outlined the same way.
    b = p.mmap(0, 3 * 4096, RW, ANON)
    p.munmap(b + 4096, 4096)
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    ax = draw_address_space(m, p.pid, ax=ax, changes=ch)
    ghost = [col for col in ax.collections if col.get_gid() == "removed"]
    assert len(ghost) == 1 and len(ghost[0].get_paths()) == 1
    gap = [s for s in address_space_layout(p.mm) if s.kind == "gap" and s.start == b + 4096][0]
    xs = ghost[0].get_paths()[0].vertices[:, 0]
    assert min(xs) == pytest.approx(gap.x0) and max(xs) == pytest.approx(gap.x1)
    text = address_space_text(m, p.pid, ch)
    assert f"unmapped by the last step: {b + 4096:#x}-{b + 2 * 4096:#x} (4K)" in text
    # mprotect unmaps nothing: no hole is shown.
    p.mprotect(b, 4096, vw.PROT_READ)
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    ax = draw_address_space(m, p.pid, ax=ax, changes=ch)
    assert not [col for col in ax.collections if col.get_gid() == "removed"]
    assert "unmapped" not in address_space_text(m, p.pid, ch)


def test_redraw_on_same_axes_replaces_the_drawing():
    m, p, base = many_vmas(1, 20)
    ax = draw_address_space(m, p.pid)
    p.munmap(base, 2 * 4096)
    ax2 = draw_address_space(m, p.pid, ax=ax)
    assert ax2 is ax
    assert len([col for col in ax.collections if col.get_gid() == "vmas"]) == 1
    assert len(ax.collections[0].get_paths()) == p.mm.map_count
    assert len([t for t in ax.texts if t.get_gid() == "vma-label"]) == p.mm.map_count


def test_highlight_selects_the_vma_holding_the_address():
    m, p, c, a, f = family()
    ax = draw_address_space(m, p.pid, highlight=f + 5)
    starts = [s.start for s in address_space_layout(p.mm) if s.kind == "vma"]
    edges = ax.collections[0].get_edgecolors()
    from matplotlib.colors import to_rgba
    from vmwidgets.views._style import SELECTED
    chosen = [starts[i] for i, e in enumerate(edges) if tuple(e) == to_rgba(SELECTED)]
    assert chosen == [f]


@pytest.mark.parametrize("pid, error", [(99, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_pid_is_a_clear_error(pid, error):
    m = vw.Machine()
    m.spawn()
    with pytest.raises(error, match="pid|process"):
        draw_address_space(m, pid)
    with pytest.raises(error):
        address_space_text(m, pid)


def test_layout_is_deterministic():
    m1, p1, _ = many_vmas(1, 30)
    m2, p2, _ = many_vmas(1, 30)
    assert address_space_layout(p1.mm) == address_space_layout(p2.mm)
