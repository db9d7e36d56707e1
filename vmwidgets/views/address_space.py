"""The address space of one process as a strip of VMAs, low addresses on the left.

Real address spaces are mostly holes (the binary sits near ``0x5555...``, the mmap area and
the stack near ``0x7fff...``), so the strip is not to scale: a VMA's width grows with the
logarithm of its size and a large gap is drawn narrow, hatched and labelled with its size.
Each VMA shows its permissions, its name (file, ``[heap]``, ``[stack]`` ...) and the
anon_vma it allocates anonymous pages from (``av 3``); a VMA the last step changed is
outlined in red (``changes=``, a :class:`~vmwidgets.views.diff.Changes`).

>>> import vmwidgets as vw
>>> from vmwidgets.views import address_space_layout
>>> p = vw.Machine().spawn()
>>> [s.name for s in address_space_layout(p.mm) if s.kind == "vma"][:5]
['/usr/bin/demo', '/usr/bin/demo', '/usr/bin/demo', '/usr/bin/demo', '[heap]']
"""

import math
from dataclasses import dataclass

from ..core.flags import PAGE_SHIFT
from ..procfs import vma_name
from . import _style
from ._changes import unmapped_ranges, vma_marks

#: A gap of at least this many bytes is compressed (drawn at a fixed width, hatched).
LARGE_GAP = 1 << 20


@dataclass(frozen=True)
class Segment:
    """One piece of the strip: a VMA (``kind="vma"``) or the hole before it (``"gap"``).

    ``x0``/``x1`` are strip coordinates; ``start``/``end`` are the addresses.
    ``anon_vma`` is the id of ``vma->anon_vma`` (None before the first anonymous fault).
    """

    kind: str
    start: int
    end: int
    x0: float
    x1: float
    perms: str = ""
    name: str | None = None
    anon_vma: int | None = None
    vma_id: int | None = None
    compressed: bool = False

    @property
    def size(self):
        return self.end - self.start

    def label(self):
        """The short label drawn under a VMA: ``rw-p [heap] av 3``."""
        parts = [self.perms]
        if self.name:
            parts.append(self.name.rsplit("/", 1)[-1] if self.name.startswith("/") else self.name)
        if self.anon_vma is not None:
            parts.append(f"av {self.anon_vma}")
        return " ".join(parts)


def _vma_width(nbytes):
    return 1.0 + 0.5 * math.log2(max(1, nbytes >> PAGE_SHIFT))


def _gap_width(nbytes):
    if nbytes >= LARGE_GAP:
        return 1.2
    return min(1.0, 0.25 + 0.05 * math.log2(max(1, nbytes >> PAGE_SHIFT)))


def address_space_layout(mm):
    """The strip of ``mm``: a list of :class:`Segment`, VMAs and the gaps between them,
    in address order. Deterministic: the same VMAs give the same coordinates.

    :param mm: ``struct mm_struct *``
    """
    segments = []
    x = 0.0
    prev_end = None
    for vma in mm.mm_mt:
        if prev_end is not None and vma.vm_start > prev_end:
            gap = vma.vm_start - prev_end
            w = _gap_width(gap)
            segments.append(Segment("gap", prev_end, vma.vm_start, x, x + w,
                                    compressed=gap >= LARGE_GAP))
            x += w
        w = _vma_width(vma.vm_end - vma.vm_start)
        av = vma.anon_vma
        segments.append(Segment("vma", vma.vm_start, vma.vm_end, x, x + w, vma.perms(),
                                vma_name(vma), None if av is None else av.id, vma.id))
        x += w
        prev_end = vma.vm_end
    return segments


def draw_address_space(machine, pid, ax=None, changes=None, highlight=None):
    """Draw the VMAs of process ``pid`` as a strip; returns the Axes.

    ``changes`` (from :func:`~vmwidgets.views.diff.step_changes`) outlines the VMAs the
    last step added, resized or re-protected, and the holes it made (dashed, gid
    ``"removed"``); ``highlight`` is an address whose VMA is
    drawn as selected. The bars are one ``broken_barh`` collection (gid
    ``"vmas"``), the labels one text per VMA (gid ``"vma-label"``).
    """
    proc = _style.process(machine, pid)
    segs = address_space_layout(proc.mm)
    marks = vma_marks(changes, pid)
    ax = _style.new_axes(ax, (10, 2.4))
    vmas = [s for s in segs if s.kind == "vma"]
    gaps = [s for s in segs if s.kind == "gap"]
    edge = []
    width = []
    for s in vmas:
        if highlight is not None and s.start <= highlight < s.end:
            edge.append(_style.SELECTED)
            width.append(2.5)
        elif s.start in marks:
            edge.append(_style.HIGHLIGHT)
            width.append(2.5)
        else:
            edge.append("#525252")
            width.append(0.6)
    bars = ax.broken_barh([(s.x0, s.x1 - s.x0) for s in vmas], (0, 1),
                          facecolors=[_style.PERM_COLORS.get(s.perms[:3], _style.PERM_COLORS["other"])
                                      for s in vmas],
                          edgecolors=edge, linewidths=width)
    bars.set_gid("vmas")
    big = [s for s in gaps if s.compressed]
    if big:
        holes = ax.broken_barh([(s.x0, s.x1 - s.x0) for s in big], (0.3, 0.4),
                               facecolors=_style.GAP_COLOR, edgecolors="#bdbdbd",
                               linewidths=0.5, hatch="//")
        holes.set_gid("gaps")
    ghosts = _removed_places(segs, unmapped_ranges(changes, pid, proc.mm))
    if ghosts:
        gone = ax.broken_barh([(x0, x1 - x0) for x0, x1 in ghosts], (0.05, 0.9),
                              facecolors="none", edgecolors=_style.HIGHLIGHT, linewidths=1.5,
                              linestyles="dashed")
        gone.set_gid("removed")
    for s in vmas:
        _style.text(ax, (s.x0 + s.x1) / 2, -0.08, s.label(), rotation=90, ha="center", va="top",
                    fontsize=_style.FONT_SIZE, family=_style.MONO, gid="vma-label")
    for s in big:
        _style.text(ax, (s.x0 + s.x1) / 2, 0.5, _style.human_size(s.size), ha="center",
                    va="center", fontsize=_style.FONT_SIZE - 1, rotation=90, gid="gap-label")
    if vmas:
        _style.text(ax, vmas[0].x0, 1.08, f"{vmas[0].start:#x}", fontsize=_style.FONT_SIZE,
                ha="left", va="bottom", family=_style.MONO)
        _style.text(ax, vmas[-1].x1, 1.08, f"{vmas[-1].end:#x}", fontsize=_style.FONT_SIZE,
                ha="right", va="bottom", family=_style.MONO)
    right = max([segs[-1].x1 if segs else 1.0] + [x1 for _x0, x1 in ghosts])
    left = min([0.0] + [x0 for x0, _x1 in ghosts])
    ax.set_xlim(left - 0.2, right + 0.2)
    ax.set_ylim(-2.6, 1.5)
    _style.finish(ax, f"pid {pid}: address space, {len(vmas)} VMAs (not to scale)")
    return ax


def _removed_places(segs, removed):
    """Where the strip shows the ranges the last step unmapped: the gap each left behind
    (a dashed red outline)."""
    places = set()
    for start, _end in removed:
        inside = [s for s in segs if s.start <= start < s.end]
        if inside:
            if inside[0].kind == "gap":
                places.add((inside[0].x0, inside[0].x1))
        elif segs:
            # Past the last VMA or before the first: a mark at that end of the strip.
            edge = segs[-1].x1 + 0.1 if start >= segs[-1].end else segs[0].x0 - 0.6
            places.add((edge, edge + 0.5))
    return sorted(places)


def address_space_text(machine, pid, changes=None):
    """The text alternative of :func:`draw_address_space`: one line per VMA (like
    /proc/PID/maps, plus the size and anon_vma), the gaps, and what the last step changed.

    >>> import vmwidgets as vw
    >>> m = vw.Machine(); p = m.spawn()
    >>> print(address_space_text(m, p.pid).splitlines()[0])
    pid 1: 9 VMAs, low to high addresses
    """
    proc = _style.process(machine, pid)
    marks = vma_marks(changes, pid)
    segs = address_space_layout(proc.mm)
    lines = [f"pid {pid}: {proc.mm.map_count} VMAs, low to high addresses"]
    for s in segs:
        if s.kind == "gap":
            if s.compressed:
                lines.append(f"  ... gap of {_style.human_size(s.size)} ...")
            else:
                lines.append(f"  (gap of {_style.human_size(s.size)})")
            continue
        line = (f"  {s.start:#x}-{s.end:#x} {s.perms} {_style.human_size(s.size):>5}"
                f" {s.name or '(anonymous)'}")
        if s.anon_vma is not None:
            line += f" anon_vma {s.anon_vma}"
        if s.start in marks:
            line += f"  <- {marks[s.start]}"
        lines.append(line)
    for start, end in unmapped_ranges(changes, pid, proc.mm):
        lines.append(f"  unmapped by the last step: {start:#x}-{end:#x} ({_style.human_size(end - start)})")
    return "\n".join(lines)
