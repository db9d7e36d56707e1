"""The hardware page-table walk for one address: PGD -> PUD -> PMD -> PTE -> frame
(arch/x86: 4 levels, 9 index bits each, 12 offset bits; the P4D is folded into the PGD).

>>> import vmwidgets as vw
>>> m = vw.Machine(); p = m.spawn()
>>> a = p.mmap(0, 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a, b"x")
>>> w = walk(m, p.pid, a)
>>> [r.level for r in w.rows], w.pfn == p.pagemap(a).pfn
(['PGD', 'PUD', 'PMD', 'PTE'], True)
"""

from dataclasses import dataclass

from ..core import pgtable
from ..core.flags import PAGE_SHIFT, PAGE_SIZE, pte_flags_names
from ..core.page_alloc import ZERO_PFN
from . import _style
from ._changes import pte_changed

#: bit ranges of the virtual address, high to low: (name, high bit, low bit).
ADDRESS_FIELDS = (("PGD", 47, 39), ("PUD", 38, 30), ("PMD", 29, 21), ("PTE", 20, 12),
                  ("offset", 11, 0))


@dataclass(frozen=True)
class WalkRow:
    """One level of the walk: the table's frame, the index used, the entry found
    (0 = none, the walk stops there), its x86 flag names and the frame it points to."""

    level: str
    table_pfn: int
    index: int
    entry: int
    flags: tuple
    next_pfn: int | None

    def text(self):
        """``PTE[0x1f3] in table pfn 0x18 = 0x8000000000016867 (P RW U A D NX) -> pfn 0x16``"""
        head = f"{self.level}[{self.index:#x}] in table pfn {self.table_pfn:#x} = "
        if not self.entry:
            return head + "none (the walk stops: not mapped)"
        if self.level == "PTE":
            return head + f"{self.entry:#018x} ({' '.join(self.flags)}): {pgtable.pte_text(self.entry)}"
        return head + f"{self.entry:#018x} ({' '.join(self.flags)}) -> {_next(self)} pfn {self.next_pfn:#x}"


def _next(row):
    return {"PGD": "PUD table", "PUD": "PMD table", "PMD": "PTE table"}[row.level]


@dataclass(frozen=True)
class Walk:
    """The walk of ``address`` in process ``pid``: ``rows`` (one per level reached),
    ``pfn`` of the frame it translates to (None when not present), ``physical`` address,
    ``swapped`` (the PTE holds a swap entry), ``zero_page``, ``vma`` (``"start-end perms"``
    of the VMA holding the address, or None)."""

    pid: int
    address: int
    rows: tuple
    pfn: int | None
    swapped: bool
    zero_page: bool
    vma: str | None

    @property
    def indices(self):
        """``(pgd, pud, pmd, pte)`` indices of the address (whether or not the walk got there)."""
        return tuple(pgtable.table_index(self.address, level) for level in range(4))

    @property
    def offset(self):
        return self.address & (PAGE_SIZE - 1)

    @property
    def physical(self):
        return None if self.pfn is None else (self.pfn << PAGE_SHIFT) | self.offset


def walk(machine, pid, addr):
    """Walk the page tables of process ``pid`` for ``addr`` (no fault, no TLB): a
    :class:`Walk`. The PFN agrees with ``/proc/PID/pagemap`` (``p.pagemap(addr).pfn``)."""
    proc = _style.process(machine, pid)
    if isinstance(addr, bool) or not isinstance(addr, int):
        raise TypeError(f"address must be an int, not {type(addr).__name__}")
    if not 0 <= addr < 1 << 47:
        raise ValueError(f"address {addr:#x} is not a user address (0 .. 0x7fffffffffff)")
    rows = []
    for level, table, index, entry in pgtable.walk(proc.mm, addr):
        nxt = pgtable.pte_pfn(entry) if entry else None
        rows.append(WalkRow(level, table.page.pfn, index, entry,
                            tuple(pte_flags_names(entry)) if entry else (), nxt))
    last = rows[-1]
    pfn = swapped = None
    if last.level == "PTE" and last.entry:
        if pgtable.pte_present(last.entry):
            pfn = last.next_pfn
        else:
            swapped = True
    vma = proc.mm.vma_lookup(addr)
    return Walk(pid, addr, tuple(rows), pfn, bool(swapped), pfn == ZERO_PFN,
                None if vma is None else f"{vma.vm_start:#x}-{vma.vm_end:#x} {vma.perms()}")


def walk_text(machine, pid, addr, changes=None):
    """The text alternative of :func:`draw_walk`."""
    w = walk(machine, pid, addr)
    pgd, pud, pmd, pte = w.indices
    lines = [f"pid {pid}: page-table walk of {addr:#x} "
             f"(PGD {pgd}, PUD {pud}, PMD {pmd}, PTE {pte}, offset {w.offset:#x})"]
    lines.append(f"  in VMA {w.vma}" if w.vma else "  no VMA holds this address (a fault would be SIGSEGV)")
    for row in w.rows:
        lines.append("  " + row.text())
    if w.pfn is not None:
        what = " (the shared zero page)" if w.zero_page else ""
        lines.append(f"  -> physical address {w.physical:#x} in pfn {w.pfn:#x}{what}")
    elif w.swapped:
        lines.append("  -> swapped out: an access faults and reads the page back (do_swap_page)")
    else:
        lines.append("  -> not present: an access page-faults")
    if pte_changed(changes, pid, addr):
        c = changes.pte_change(pid, addr)
        lines.append(f"  the last step changed this PTE: {pgtable.pte_text(c.old)} -> {pgtable.pte_text(c.new)}")
    return "\n".join(lines)


def draw_walk(machine, pid, addr, ax=None, changes=None):
    """Draw the walk of ``addr``: the address split into its index fields on top, then one
    box per level (gid ``"level-PGD"`` ...) with the index and entry, and the frame.
    A PTE the last step changed is outlined in red. Returns the Axes."""
    from matplotlib.patches import Rectangle

    w = walk(machine, pid, addr)
    ax = _style.new_axes(ax, (9, 2.6))
    # The address bits.
    x = 0.0
    for (name, hi, lo), value in zip(ADDRESS_FIELDS, w.indices + (w.offset,)):
        width = 1.6 if name != "offset" else 1.2
        ax.add_patch(Rectangle((x, 2.0), width, 0.6, facecolor="#f0f0f0", edgecolor="#737373", lw=0.6))
        _style.text(ax, x + width / 2, 2.3, f"{name} {value}" if name != "offset" else f"off {value:#x}",
                ha="center", va="center", fontsize=_style.FONT_SIZE, family=_style.MONO)
        _style.text(ax, x + width / 2, 2.65, f"bits {hi}-{lo}", ha="center", va="bottom",
                fontsize=_style.FONT_SIZE - 1)
        x += width
    # The levels.
    for i, row in enumerate(w.rows):
        bx = i * 2.0
        changed = row.level == "PTE" and pte_changed(changes, pid, addr)
        box = Rectangle((bx, 0.0), 1.7, 1.4, facecolor="#deebf7" if row.entry else "#fee0d2",
                        edgecolor=_style.HIGHLIGHT if changed else "#525252",
                        lw=2.0 if changed else 0.6)
        box.set_gid(f"level-{row.level}")
        ax.add_patch(box)
        entry = "none" if not row.entry else f"{row.entry:#x}"
        flags = " ".join(row.flags)
        _style.text(ax, bx + 0.85, 1.2, f"{row.level} pfn {row.table_pfn:#x}", ha="center", va="center",
                fontsize=_style.FONT_SIZE, weight="bold")
        _style.text(ax, bx + 0.85, 0.88, f"index {row.index}", ha="center", va="center",
                fontsize=_style.FONT_SIZE - 1)
        _style.text(ax, bx + 0.85, 0.58, entry, ha="center", va="center",
                fontsize=_style.FONT_SIZE - 1, family=_style.MONO)
        _style.text(ax, bx + 0.85, 0.25, flags, ha="center", va="center", fontsize=_style.FONT_SIZE - 1)
        if row.entry:
            ax.annotate("", xy=(bx + 2.0, 0.7), xytext=(bx + 1.7, 0.7),
                        arrowprops={"arrowstyle": "->", "lw": 0.8})
    fx = len(w.rows) * 2.0
    if w.pfn is not None:
        label = "zero page" if w.zero_page else "frame"
        frame = Rectangle((fx, 0.0), 1.7, 1.4, facecolor="#c7e9c0", edgecolor="#525252", lw=0.6)
        _style.text(ax, fx + 0.85, 0.9, f"{label}\npfn {w.pfn:#x}", ha="center", va="center",
                fontsize=_style.FONT_SIZE)
        _style.text(ax, fx + 0.85, 0.3, f"phys {w.physical:#x}", ha="center", va="center",
                fontsize=_style.FONT_SIZE - 1, family=_style.MONO)
    else:
        frame = Rectangle((fx, 0.0), 1.7, 1.4, facecolor="#ffffff", edgecolor="#969696",
                          lw=0.6, linestyle="dashed")
        _style.text(ax, fx + 0.85, 0.7, "swapped out" if w.swapped else "not present\n(page fault)",
                ha="center", va="center", fontsize=_style.FONT_SIZE)
    frame.set_gid("frame")
    ax.add_patch(frame)
    ax.set_xlim(-0.2, max(fx + 1.9, 8.2))
    ax.set_ylim(-0.2, 3.0)
    _style.finish(ax, f"pid {pid}: page walk of {addr:#x}")
    return ax
