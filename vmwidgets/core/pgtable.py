"""4-level x86-64 page tables (arch/x86/include/asm/pgtable*.h, mm/memory.c, mm/pgtable-generic.c).

Each table is a real frame of the machine (kind ``"pgtable"``) holding up to 512 entries;
absent entries are simply missing from ``entries``. Upper-level entries hold the next
table's PFN with ``_PAGE_TABLE`` bits; PTEs hold the x86 bits of a 4 KiB mapping.
P4D is folded into the PGD, as on 4-level hardware.
"""

from .mm_types import CompactSlots
from .flags import (_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_DIRTY_BITS, _PAGE_PRESENT,
                    _PAGE_PROTNONE, _PAGE_RW, _PAGE_SAVED_DIRTY, _PAGE_SPECIAL, _PAGE_TABLE,
                    PAGE_SHIFT, PGDIR_SHIFT, PMD_SHIFT, PTE_PFN_MASK, PTRS_PER_TABLE, PUD_SHIFT,
                    VM_WRITE)
from ..trace import traced
from .. import trace

LEVELS = ("PGD", "PUD", "PMD", "PTE")
#: index shift of each level, PGD first.
SHIFTS = (PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT, PAGE_SHIFT)


class PageTable(CompactSlots):
    """One page-table page: ``level`` 0 (PGD) .. 3 (PTE), covering ``[base, base + span)``."""

    __slots__ = ("level", "page", "entries", "base")

    def __init__(self, level, page, base):
        self.level = level
        self.page = page
        self.entries = {}
        self.base = base

    @property
    def span(self):
        return PTRS_PER_TABLE << SHIFTS[self.level]

    def __repr__(self):
        return f"PageTable({LEVELS[self.level]}, pfn={self.page.pfn:#x}, base={self.base:#x})"

    def __trace__(self):
        return f"{LEVELS[self.level]} table pfn {self.page.pfn:#x}"


def pte_pfn(entry):
    return (entry & PTE_PFN_MASK) >> PAGE_SHIFT


def pte_present(pte):
    """x86 pte_present(): a PROT_NONE PTE (present bit clear, _PAGE_PROTNONE set) counts."""
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


# -- PTE bit helpers (arch/x86/include/asm/pgtable.h, Linux 6.18) ------------------------------
#
# On x86-64 a PTE with Write=0,Dirty=1 is shadow-stack memory to a CPU with CET, so since 6.6
# the kernel never makes one for ordinary memory: write-protecting a dirty PTE moves the dirty
# bit to the software bit _PAGE_SAVED_DIRTY, and making it writable moves it back. Every site
# of the model that write-protects, makes writable, dirties, cleans or tests the dirtiness of
# a PTE goes through these helpers. No VMA of the model is VM_SHADOW_STACK.

_BIT_RW, _BIT_DIRTY, _BIT_SAVED_DIRTY = (b.bit_length() - 1 for b in (_PAGE_RW, _PAGE_DIRTY,
                                                                   _PAGE_SAVED_DIRTY))


def pte_dirty(pte):
    """arch/x86/include/asm/pgtable.h: pte_dirty() (6.18): the hardware dirty bit or the
    saved one (_PAGE_DIRTY_BITS)."""
    return bool(pte & _PAGE_DIRTY_BITS)


def pte_write(pte):
    """arch/x86/include/asm/pgtable.h: pte_write() (6.18), without shadow stacks: _PAGE_RW."""
    return bool(pte & _PAGE_RW)


def pte_young(pte):
    return bool(pte & _PAGE_ACCESSED)


# arch/x86/include/asm/pgtable.h: pte_mksaveddirty() / mksaveddirty_shift() (6.18).
def pte_mksaveddirty(pte):
    """If the PTE is not writable, move Dirty to SavedDirty (a writable PTE is unchanged)."""
    cond = (~pte >> _BIT_RW) & 1
    pte |= ((pte >> _BIT_DIRTY) & cond) << _BIT_SAVED_DIRTY
    return pte & ~(cond << _BIT_DIRTY)


# arch/x86/include/asm/pgtable.h: pte_clear_saveddirty() / clear_saveddirty_shift() (6.18).
def pte_clear_saveddirty(pte):
    """If the PTE is writable, move SavedDirty back to Dirty (a read-only PTE is unchanged)."""
    cond = (pte >> _BIT_RW) & 1
    pte |= ((pte >> _BIT_SAVED_DIRTY) & cond) << _BIT_DIRTY
    return pte & ~(cond << _BIT_SAVED_DIRTY)


# arch/x86/include/asm/pgtable.h: pte_wrprotect() (6.18).
def pte_wrprotect(pte):
    """Clear _PAGE_RW; a dirty PTE keeps its dirtiness in _PAGE_SAVED_DIRTY."""
    return pte_mksaveddirty(pte & ~_PAGE_RW)


# arch/x86/include/asm/pgtable.h: pte_mkwrite_novma() (6.18).
def pte_mkwrite_novma(pte):
    return pte | _PAGE_RW


# arch/x86/mm/pgtable.c: pte_mkwrite() (6.18). No VMA is VM_SHADOW_STACK in the model.
def pte_mkwrite(pte, vma=None):
    """Set _PAGE_RW and move a saved dirty bit back to _PAGE_DIRTY."""
    return pte_clear_saveddirty(pte_mkwrite_novma(pte))


# include/linux/mm.h: maybe_mkwrite() (6.18).
def maybe_mkwrite(pte, vma):
    """pte_mkwrite() only if the VMA is VM_WRITE."""
    return pte_mkwrite(pte, vma) if vma.vm_flags & VM_WRITE else pte


# arch/x86/include/asm/pgtable.h: pte_mkdirty() (6.18).
def pte_mkdirty(pte):
    """Set the dirty bit; on a read-only PTE it lands in _PAGE_SAVED_DIRTY."""
    return pte_mksaveddirty(pte | _PAGE_DIRTY)


# arch/x86/include/asm/pgtable.h: pte_mkclean() (6.18).
def pte_mkclean(pte):
    """Clear both dirty bits (_PAGE_DIRTY_BITS)."""
    return pte & ~_PAGE_DIRTY_BITS


def pte_mkold(pte):
    return pte & ~_PAGE_ACCESSED


def pte_mkyoung(pte):
    return pte | _PAGE_ACCESSED


#: arch/x86/include/asm/pgtable_types.h: _PAGE_CHG_MASK (6.18): the bits pte_modify() keeps
#: (the PFN, the accessed and both dirty bits, special; no PAT, encryption, soft-dirty or
#: uffd-wp bits in the model).
_PAGE_CHG_MASK = PTE_PFN_MASK | _PAGE_ACCESSED | _PAGE_DIRTY_BITS | _PAGE_SPECIAL


# arch/x86/include/asm/pgtable.h: pte_modify() (6.18). Simplification: PROT_NONE PTEs keep
# their PFN bits as they are (no flip_protnone_guard() inversion in the model).
def pte_modify(pte, prot):
    """Keep the _PAGE_CHG_MASK bits, take the rest from ``prot``; then, so that no
    Write=0,Dirty=1 PTE appears: a PTE that was writable goes through pte_mksaveddirty()
    (dirty and now read-only: D -> SavedDirty), one that was read-only through
    pte_clear_saveddirty() (now writable: SavedDirty -> D)."""
    new = (pte & _PAGE_CHG_MASK) | (prot & ~_PAGE_CHG_MASK)
    if pte & _PAGE_RW:
        return pte_mksaveddirty(new)
    return pte_clear_saveddirty(new)


def table_index(addr, level):
    return (addr >> SHIFTS[level]) & (PTRS_PER_TABLE - 1)


def pte_text(pte):
    """A PTE as a call tree shows it: ``none``, ``pfn 0x52 rw dirty``, ``zero page ro``,
    ``swap slot 0x3 excl``. ``old`` marks a clear accessed bit (PTEs start young here)."""
    if not pte:
        return "none"
    pfn = pte_pfn(pte)
    if not pte & _PAGE_PRESENT:
        if pte & _PAGE_PROTNONE:
            return f"pfn {pfn:#x} prot_none"
        from .swap import SWP_EXCLUSIVE, swp_offset
        return f"swap slot {swp_offset(pte):#x}" + (" excl" if pte & SWP_EXCLUSIVE else "")
    from .page_alloc import ZERO_PFN
    what = ("zero page" if pfn == ZERO_PFN and pte & _PAGE_SPECIAL else
            f"pfn {pfn:#x}" + (" special" if pte & _PAGE_SPECIAL else ""))
    text = f"{what} {'rw' if pte & _PAGE_RW else 'ro'}"
    if pte_dirty(pte):                  # D, or D saved in _PAGE_SAVED_DIRTY when read-only
        text += " dirty"
    if not pte & _PAGE_ACCESSED:
        text += " old"
    return text


def _note_pte(addr, old, new):
    if old != new:
        trace.note(f"pte {addr:#x}: {pte_text(old)} -> {pte_text(new)}")


def _alloc_table(machine, level, base):
    page = machine.alloc_page("pgtable")
    table = PageTable(level, page, base)
    page.table = table
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x} is the {LEVELS[level]} table for "
                   f"{base:#x}-{base + table.span:#x}")
    return table


@traced(hide=("machine",))
def pgd_alloc(machine):
    """arch/x86/mm/pgtable.c: pgd_alloc(): a fresh, empty top-level table."""
    return _alloc_table(machine, 0, 0)


def _alloc_level(mm, table, i):
    child = _alloc_table(mm.machine, table.level + 1, table.base + (i << SHIFTS[table.level]))
    table.entries[i] = (child.page.pfn << PAGE_SHIFT) | _PAGE_TABLE
    return child


@traced(name="__pud_alloc", hide=("table", "i"))
def _pud_alloc(mm, address, table, i):
    """mm/memory.c: __pud_alloc(): a PUD table below the PGD (P4D is folded)."""
    return _alloc_level(mm, table, i)


@traced(name="__pmd_alloc", hide=("table", "i"))
def _pmd_alloc(mm, address, table, i):
    """mm/memory.c: __pmd_alloc()."""
    return _alloc_level(mm, table, i)


@traced(name="__pte_alloc", hide=("table", "i"))
def _pte_alloc(mm, address, table, i):
    """mm/memory.c: __pte_alloc(): the PTE table (pte_alloc_one() + pmd_install())."""
    return _alloc_level(mm, table, i)


_LEVEL_ALLOC = (_pud_alloc, _pmd_alloc, _pte_alloc)


def lookup_pte_table(mm, addr, alloc=False):
    """Walk PGD -> PUD -> PMD to the PTE table for ``addr``; with ``alloc`` the missing
    levels are allocated on the way (``__pud_alloc``, ``__pmd_alloc``, ``__pte_alloc``).

    Returns the PTE-level :class:`PageTable`, or ``None`` if a level is missing.
    """
    table = mm.pgd
    phys = mm.machine.phys
    for level in range(3):
        i = table_index(addr, level)
        entry = table.entries.get(i)
        if entry is None:
            if not alloc:
                return None
            table = _LEVEL_ALLOC[level](mm, addr, table, i)
        else:
            table = phys.pages[pte_pfn(entry)].table
    return table


def get_pte(mm, addr):
    """The PTE value mapping ``addr`` (0 when none)."""
    table = lookup_pte_table(mm, addr)
    if table is None:
        return 0
    return table.entries.get(table_index(addr, 3), 0)


def set_pte_at(mm, addr, value):
    """set_pte_at(): write a PTE, allocating the tables on the way."""
    table = lookup_pte_table(mm, addr, alloc=True)
    i = table_index(addr, 3)
    if trace._active is not None:
        _note_pte(addr, table.entries.get(i, 0), value)
    table.entries[i] = value


def set_pte(table, index, value):
    """Write (``value``) or clear (``0``) one entry of a PTE table already walked to: the
    ``ptep_*`` helpers (ptep_set_wrprotect, ptep_get_and_clear, ptep_modify_prot_commit ...).
    Returns the old entry."""
    old = table.entries.get(index, 0)
    if value:
        table.entries[index] = value
    elif old:
        del table.entries[index]
    if trace._active is not None:
        _note_pte(table.base + (index << PAGE_SHIFT), old, value)
    return old


def pte_clear(mm, addr):
    table = lookup_pte_table(mm, addr)
    if table is not None:
        set_pte(table, table_index(addr, 3), 0)


def walk(mm, addr):
    """The hardware walk for ``addr``: one ``(level, table, index, entry)`` row per level.

    Stops early at a missing entry (the row then has ``entry == 0``).
    """
    rows = []
    table = mm.pgd
    for level in range(4):
        i = table_index(addr, level)
        entry = table.entries.get(i, 0)
        rows.append((LEVELS[level], table, i, entry))
        if not entry or level == 3:
            break
        table = mm.machine.phys.pages[pte_pfn(entry)].table
    return rows


def iter_ptes(mm, start, end):
    """Yield ``(addr, pte_table, index, pte)`` for every PTE set in ``[start, end)``."""
    yield from _iter(mm, mm.pgd, start, end)


def _iter(mm, table, start, end):
    shift = SHIFTS[table.level]
    lo = max(0, (start - table.base) >> shift)
    hi = min(PTRS_PER_TABLE - 1, (end - 1 - table.base) >> shift)
    if lo > hi:
        return
    phys = mm.machine.phys
    for i in sorted(k for k in table.entries if lo <= k <= hi):
        entry = table.entries.get(i)
        if entry is None:
            continue
        if table.level == 3:
            yield table.base + (i << shift), table, i, entry
        else:
            yield from _iter(mm, phys.pages[pte_pfn(entry)].table, start, end)


def iter_tables(mm):
    """Every page-table page of ``mm``, PGD first."""
    stack = [mm.pgd]
    phys = mm.machine.phys
    while stack:
        table = stack.pop()
        yield table
        if table.level < 3:
            stack.extend(phys.pages[pte_pfn(e)].table for e in table.entries.values())


@traced(result=lambda freed: freed or None)
def free_pgd_range(mm, start, end, floor, ceiling):
    """mm/memory.c: free_pgd_range(): free the tables that only covered ``[start, end)``.

    A table is freed when the whole region it maps lies inside ``[floor, ceiling)`` (the gap
    between the surviving neighbours) and overlaps the unmapped range; ``ceiling == 0``
    means the top of the address space. The PGD itself is only freed at exit.
    Simplification: the kernel rounds floor and ceiling level by level; freeing exactly the
    tables whose span lies in the gap gives the same result for empty tables.
    Returns the number of table pages freed.
    """
    top = ceiling or (1 << 48)
    tlb = getattr(mm, "tlb_gather", None)
    if tlb is not None:
        # include/asm-generic/tlb.h: p4d_free_tlb() with the p4d folded into the pgd: for
        # each 512 GiB slot inside [floor, ceiling) the range grows at the slot's base,
        # whether or not a PUD table is there (see tlb.p4d_free_tlb).
        slot = 1 << SHIFTS[0]
        base = start & ~(slot - 1)
        while base < end:
            if base >= floor and base + slot <= top:
                from .tlb import p4d_free_tlb
                p4d_free_tlb(tlb, base)
            base += slot
    return _free(mm, mm.pgd, start, end, floor, top)


def _free(mm, table, start, end, floor, ceiling):
    shift = SHIFTS[table.level]
    phys = mm.machine.phys
    freed = 0
    for i in sorted(table.entries):
        lo = table.base + (i << shift)
        hi = lo + (1 << shift)
        if hi <= start or lo >= end:
            continue
        child = phys.pages[pte_pfn(table.entries[i])].table
        if child.level < 3:
            freed += _free(mm, child, start, end, floor, ceiling)
        if lo >= floor and hi <= ceiling:
            assert not child.entries, f"freeing a non-empty {child}"
            del table.entries[i]
            tlb = getattr(mm, "tlb_gather", None)
            if tlb is not None:         # freed after the TLB flush (pte_free_tlb ...)
                from .tlb import free_table_tlb
                free_table_tlb(tlb, child)
            else:
                phys.free_page(child.page)
            freed += 1
    return freed


@traced(name="pgd_free", result=lambda n: None)
def free_all_pgtables(mm):
    """Free every table including the PGD (mmdrop() at exit, after exit_mmap() zapped every
    PTE and free_pgtables() freed the lower levels). Returns the number of tables freed."""
    tables = list(iter_tables(mm))
    for table in tables:
        mm.machine.phys.free_page(table.page)
    mm.pgd = None
    return len(tables)
