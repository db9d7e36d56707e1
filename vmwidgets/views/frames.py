"""Physical frames in use: who maps each one, its mapcount and refcount, the zero page,
page-table pages and the swap cache (include/linux/mm_types.h: struct page).

The mappers are found by walking every process's page tables once (what the MMU sees),
so the zero page, which rmap cannot find, shows its users too.

>>> import vmwidgets as vw
>>> m = vw.Machine(); p = m.spawn()
>>> a = p.mmap(0, 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a, b"x")
>>> row = [r for r in frame_rows(m) if r.pfn == p.pagemap(a).pfn][0]
>>> row.kind, row.mapcount, row.mappers == ((p.pid, a),)
('anon', 1, True)
"""

from dataclasses import dataclass

from ..core import pgtable
from ..core.page_alloc import ZERO_PFN
from ..core.swap import swp_offset
from ..procfs import kpagecount
from . import _style
from ._changes import frames_changed

#: Grid width of :func:`draw_frames`.
COLUMNS = 16
#: Above this many frames the cells carry no text (the text alternative has it all).
LABEL_LIMIT = 96


@dataclass(frozen=True)
class FrameRow:
    """One frame: ``kind`` (anon, file, zero, pgtable; ``swapcache`` for an anonymous page
    in the swap cache), the kernel's ``mapcount`` and ``refcount``, ``kpagecount`` (what
    /proc/kpagecount says), ``mappers`` (``(pid, address)`` of every PTE pointing at it),
    ``owner`` (``anon_vma N``, a file path, or ``pid N PTE table`` ...) and ``swap`` (the
    swap slot while in the swap cache, else None)."""

    pfn: int
    kind: str
    mapcount: int
    refcount: int
    kpagecount: int
    mappers: tuple
    owner: str
    swap: int | None

    def text(self):
        who = ", ".join(f"pid {p} {a:#x}" for p, a in self.mappers[:6])
        if len(self.mappers) > 6:
            who += f", ... ({len(self.mappers)} PTEs)"
        swap = f" swap slot {self.swap:#x}" if self.swap is not None else ""
        return (f"pfn {self.pfn:#x} {self.kind:<8} mapcount {self.mapcount} refcount "
                f"{self.refcount} {self.owner}{swap}" + (f": {who}" if who else ""))


def _mappers(machine, swapped=False):
    """``{pfn: [(pid, addr)]}`` from every present PTE, or with ``swapped``
    ``{slot: [(pid, addr)]}`` from every swap entry."""
    out = {}
    for proc in sorted(machine.processes, key=lambda p: p.pid):
        for addr, _table, _i, pte in pgtable.iter_ptes(proc.mm, 0, 1 << 47):
            if pgtable.pte_present(pte):
                if not swapped:
                    out.setdefault(pgtable.pte_pfn(pte), []).append((proc.pid, addr))
            elif swapped:
                out.setdefault(swp_offset(pte), []).append((proc.pid, addr))
    return out


@dataclass(frozen=True)
class SwapRow:
    """One used swap slot: ``count`` (the swap_map count: PTEs and the swap cache's
    reference), ``mappers`` (``(pid, address)`` of each PTE holding this swap entry) and
    ``cached_pfn`` (the frame in the swap cache, or None)."""

    slot: int
    count: int
    mappers: tuple
    cached_pfn: int | None

    def text(self):
        who = ", ".join(f"pid {p} {a:#x}" for p, a in self.mappers[:6]) or "no PTE"
        cache = f", in the swap cache as pfn {self.cached_pfn:#x}" if self.cached_pfn is not None else ""
        return f"swap slot {self.slot:#x} count {self.count}{cache}: {who}"


def swap_rows(machine):
    """Every used swap slot, by offset (empty without swap)."""
    _style.check_machine(machine)
    mappers = _mappers(machine, swapped=True)
    return [SwapRow(off, slot.count, tuple(mappers.get(off, ())),
                    None if slot.cache is None else slot.cache.pfn)
            for off, slot in sorted(machine.swap.slots.items())]


def _owner(machine, page, tables):
    if page.kind == "anon":
        return f"anon_vma {page.mapping.id}"
    if page.kind == "file":
        return f"{page.mapping.host.path} page {page.index}"
    if page.kind == "pgtable":
        return tables.get(page.pfn, "page table")
    if page.kind == "zero":
        return "the shared zero page"
    return ""


def frame_rows(machine):
    """Every frame in use by user memory, by PFN: the zero page, anonymous and page-cache
    pages and page-table pages (free frames and the kernel image are left out)."""
    _style.check_machine(machine)
    mappers = _mappers(machine)
    tables = {}
    for proc in machine.processes:
        for table in pgtable.iter_tables(proc.mm):
            tables[table.page.pfn] = f"pid {proc.pid} {pgtable.LEVELS[table.level]} table"
    rows = []
    for pfn, page in sorted(machine.phys.pages.items()):
        if page.kind in ("free", "kernel"):
            continue
        kind = "swapcache" if page.kind == "anon" and page.swap is not None else page.kind
        rows.append(FrameRow(pfn, kind, page.mapcount, page.refcount, kpagecount(machine, pfn),
                             tuple(mappers.get(pfn, ())), _owner(machine, page, tables),
                             page.swap.offset if page.swap is not None else None))
    return rows


def frames_text(machine, changes=None):
    """The text alternative of :func:`draw_frames`: one line per frame, then each used
    swap slot and who refers to it."""
    rows = frame_rows(machine)
    touched = frames_changed(changes)
    phys = machine.phys
    lines = [f"{len(rows)} frames in use by user memory and page tables "
             f"({phys.nr_free} of {phys.nr_pages} free)"]
    for r in rows:
        lines.append(("* " if r.pfn in touched else "  ") + r.text())
    if changes is not None:
        for pfn in sorted(changes.frames_freed):
            lines.append(f"* pfn {pfn:#x} freed by the last step")
    if machine.swap_pages:
        slots = swap_rows(machine)
        lines.append(f"swap: {len(slots)} of {machine.swap_pages} slots used")
        lines += ["  " + r.text() for r in slots]
    if touched:
        lines.append("(* = changed by the last step)")
    return "\n".join(lines)


def draw_frames(machine, ax=None, changes=None, highlight=None):
    """The frames in use as a grid of cells (16 a row, by PFN), coloured by kind; each
    cell shows the PFN and ``mapcount/refcount`` (when there are at most 96 frames).
    Frames the last step touched are outlined in red, ``highlight`` (a PFN or a set of
    PFNs) in the selection colour. Cells are one ``broken_barh`` per grid row (gid
    ``"frames"``). Returns the Axes."""
    rows = frame_rows(machine)
    touched = frames_changed(changes)
    marked = set() if highlight is None else {highlight} if isinstance(highlight, int) else set(highlight)
    ax = _style.new_axes(ax, (8, 3))
    nrows = max(1, (len(rows) + COLUMNS - 1) // COLUMNS)
    for r in range(nrows):
        cells = rows[r * COLUMNS:(r + 1) * COLUMNS]
        if not cells:
            break
        edge = [_style.SELECTED if c.pfn in marked else _style.HIGHLIGHT if c.pfn in touched
                else "#737373" for c in cells]
        bars = ax.broken_barh([(i, 0.95) for i in range(len(cells))], (-r - 0.95, 0.9),
                              facecolors=[_style.FRAME_COLORS.get(c.kind, "#ffffff") for c in cells],
                              edgecolors=edge,
                              linewidths=[2.0 if e != "#737373" else 0.5 for e in edge])
        bars.set_gid("frames")
    if len(rows) <= LABEL_LIMIT:
        for i, c in enumerate(rows):
            x, y = i % COLUMNS + 0.475, -(i // COLUMNS) - 0.5
            t = _style.text(ax, x, y, f"{c.pfn:#x}\n{c.mapcount}/{c.refcount}", ha="center", va="center",
                        fontsize=_style.FONT_SIZE - 1, family=_style.MONO, gid=f"frame:{c.pfn:#x}")
    ax.set_xlim(-0.1, COLUMNS)
    ax.set_ylim(-nrows - 0.1, 0.1)
    kinds = {}
    for c in rows:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    legend = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    return _style.finish(ax, f"physical frames in use ({legend}); cell: pfn, mapcount/refcount")
