"""4-level x86-64 page tables (arch/x86/include/asm/pgtable*.h, mm/memory.c, mm/pgtable-generic.c).

Each table is a real frame of the machine (kind ``"pgtable"``) holding up to 512 entries;
absent entries are simply missing from ``entries``. Upper-level entries hold the next
table's PFN with ``_PAGE_TABLE`` bits; PTEs hold the x86 bits of a 4 KiB mapping.
P4D is folded into the PGD, as on 4-level hardware.
"""

from .flags import (_PAGE_PRESENT, _PAGE_PROTNONE, _PAGE_TABLE, PAGE_SHIFT, PGDIR_SHIFT, PMD_SHIFT, PTE_PFN_MASK,
                    PTRS_PER_TABLE, PUD_SHIFT)

LEVELS = ("PGD", "PUD", "PMD", "PTE")
#: index shift of each level, PGD first.
SHIFTS = (PGDIR_SHIFT, PUD_SHIFT, PMD_SHIFT, PAGE_SHIFT)


class PageTable:
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


def pte_pfn(entry):
    return (entry & PTE_PFN_MASK) >> PAGE_SHIFT


def pte_present(pte):
    """x86 pte_present(): a PROT_NONE PTE (present bit clear, _PAGE_PROTNONE set) counts."""
    return bool(pte & (_PAGE_PRESENT | _PAGE_PROTNONE))


def table_index(addr, level):
    return (addr >> SHIFTS[level]) & (PTRS_PER_TABLE - 1)


def _alloc_table(machine, level, base):
    page = machine.alloc_page("pgtable")
    table = PageTable(level, page, base)
    page.table = table
    return table


def pgd_alloc(machine):
    """mm/pgtable: pgd_alloc(): a fresh, empty top-level table."""
    return _alloc_table(machine, 0, 0)


def lookup_pte_table(mm, addr, alloc=False):
    """Walk PGD -> PUD -> PMD to the PTE table for ``addr`` (``__pte_alloc`` when ``alloc``).

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
            shift = SHIFTS[level]
            child = _alloc_table(mm.machine, level + 1, table.base + (i << shift))
            table.entries[i] = (child.page.pfn << PAGE_SHIFT) | _PAGE_TABLE
            table = child
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
    table.entries[table_index(addr, 3)] = value


def pte_clear(mm, addr):
    table = lookup_pte_table(mm, addr)
    if table is not None:
        table.entries.pop(table_index(addr, 3), None)


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


def free_pgtables(mm, start, end, floor, ceiling):
    """mm/memory.c: free_pgd_range(): free the tables that only covered ``[start, end)``.

    A table is freed when the whole region it maps lies inside ``[floor, ceiling)`` (the gap
    between the surviving neighbours) and overlaps the unmapped range; ``ceiling == 0``
    means the top of the address space. The PGD itself is only freed at exit.
    Simplification: the kernel rounds floor and ceiling level by level; freeing exactly the
    tables whose span lies in the gap gives the same result for empty tables.
    Returns the number of table pages freed.
    """
    top = ceiling or (1 << 48)
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
            phys.free_page(child.page)
            freed += 1
    return freed


def free_all_pgtables(mm):
    """Free every table including the PGD (exit_mmap, after every PTE was zapped)."""
    tables = list(iter_tables(mm))
    for table in tables:
        mm.machine.phys.free_page(table.page)
    mm.pgd = None
    return len(tables)
