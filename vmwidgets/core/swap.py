"""Reclaim, swap and the OOM killer (mm/vmscan.c, mm/rmap.c: try_to_unmap(),
mm/swapfile.c, mm/swap_state.c, mm/memory.c: do_swap_page(), mm/oom_kill.c; Linux 6.18).

Reclaim takes pages from the cold end of the LRU. A page whose PTEs were accessed since
the last look (``page_referenced``: the accessed bits, cleared as they are read) gets a
second chance; otherwise ``try_to_unmap`` removes every mapping found by the rmap walk.
An anonymous page is written to a swap slot and each PTE becomes a swap entry; a clean
file page is dropped (it can be read again), a dirty one is written back first.

Simplification: one LRU list with second chance stands in for the active/inactive lists
of anonymous and file pages; swap I/O is instant; there is no swap readahead.
"""

from . import pgtable, rmap
from .errors import OutOfMemory
from .flags import _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_RW, PAGE_SIZE, VM_LOCKED, VM_WRITE

#: x86-64 swap PTE layout used here (present and PROT_NONE bits clear):
#: bit 3 marks an exclusive entry (_PAGE_SWP_EXCLUSIVE), bits 9.. hold the slot offset.
#: Simplification: the kernel also stores the swap type and inverts the offset (L1TF).
SWP_EXCLUSIVE = 1 << 3
SWP_OFFSET_SHIFT = 9
#: include/linux/swap.h: MAX_SWAPFILES_SHIFT, as pagemap encodes type | offset << 5.
MAX_SWAPFILES_SHIFT = 5


def is_swap_pte(pte):
    return bool(pte) and not pgtable.pte_present(pte)


def swp_offset(pte):
    return pte >> SWP_OFFSET_SHIFT


def mk_swap_pte(slot, exclusive):
    return (slot << SWP_OFFSET_SHIFT) | (SWP_EXCLUSIVE if exclusive else 0)


class SwapSlot:
    """One slot of the swap area: ``count`` PTEs refer to it (``swap_map``), ``data`` is
    what was written out, ``cache`` the page while it sits in the swap cache."""

    __slots__ = ("offset", "count", "data", "cache")

    def __init__(self, offset):
        self.offset = offset
        self.count = 0
        self.data = None
        self.cache = None


class SwapArea:
    """A single swap device of ``nr_slots`` pages (slot 0 is the header, never used)."""

    def __init__(self, nr_slots):
        self.nr_slots = nr_slots
        self.slots = {}
        self._free = list(range(nr_slots - 1, 0, -1))

    @property
    def nr_free(self):
        return len(self._free)

    def get_swap_page(self):
        """mm/swapfile.c: folio_alloc_swap(): a free slot, or None when swap is full."""
        if not self._free:
            return None
        slot = SwapSlot(self._free.pop())
        self.slots[slot.offset] = slot
        return slot

    def release(self, slot):
        del self.slots[slot.offset]
        self._free.append(slot.offset)

    def full_half(self):
        """vm_swap_full(): more than half of the swap in use."""
        return self.nr_free * 2 < self.nr_slots - 1


# -- LRU ---------------------------------------------------------------------------------------

def lru_add(machine, page):
    """folio_add_lru(): the page becomes the newest on the LRU."""
    machine.lru_clock += 1
    page.lru = machine.lru_clock


def page_referenced(machine, page):
    """mm/rmap.c: folio_referenced(): how many mappings have the accessed bit set; the bits
    are cleared as they are counted (ptep_clear_flush_young)."""
    referenced = 0
    for proc, vma, address in list(rmap.rmap_walk(machine, page.pfn)):
        table = pgtable.lookup_pte_table(vma.vm_mm, address)
        index = pgtable.table_index(address, 3)
        pte = table.entries[index]
        if pte & _PAGE_ACCESSED:
            referenced += 1
            table.entries[index] = pte & ~_PAGE_ACCESSED
    return referenced


def try_to_unmap(machine, page, slot):
    """mm/rmap.c: try_to_unmap(): remove every PTE mapping ``page``. Anonymous PTEs become
    swap entries for ``slot`` (exclusive when the page was PageAnonExclusive); file PTEs are
    simply cleared, their dirty bits moving to the page. Returns the number unmapped."""
    n = 0
    for proc, vma, address in list(rmap.rmap_walk(machine, page.pfn)):
        mm = vma.vm_mm
        table = pgtable.lookup_pte_table(mm, address)
        index = pgtable.table_index(address, 3)
        pte = table.entries[index]
        if pte & _PAGE_DIRTY:
            page.dirty = True
        if slot is not None:
            table.entries[index] = mk_swap_pte(slot.offset, page.anon_exclusive)
            slot.count += 1
            mm.rss["anon"] -= 1
            mm.rss["swap"] += 1
        else:
            del table.entries[index]
            mm.rss["file"] -= 1
        rmap.folio_remove_rmap_pte(page)
        page.refcount -= 1
        n += 1
    return n


def shrink_page(machine, page):
    """mm/vmscan.c: shrink_folio_list() for one cold page. Returns True if it was freed."""
    for proc, vma, _ in rmap.rmap_walk(machine, page.pfn):
        if vma.vm_flags & VM_LOCKED:
            return False
    pinned = page.refcount - page.mapcount - (1 if page.kind == "file" or page.swap else 0)
    if pinned:
        return False                    # someone holds a reference: keep it
    if page.kind == "file" and page.mapping.host.shmem:
        return False                    # Simplification: shmem pages are not swapped out
    if page.kind == "anon":
        slot = page.swap
        if slot is None:
            slot = machine.swap.get_swap_page()
            if slot is None:
                return False            # swap is full: anonymous memory cannot go
            slot.cache = page
            page.swap = slot
            page.refcount += 1          # the swap cache's reference
        try_to_unmap(machine, page, slot)
        slot.data = bytes(page.data) if page.data is not None else None
        slot.cache = None
        page.swap = None
        machine.stats["pswpout"] += 1
        machine.phys.put_page(page)     # drop the swap cache's reference: freed
        return True
    # A page-cache page: unmap, write back if dirty, then drop it from the cache.
    try_to_unmap(machine, page, None)
    f = page.mapping.host
    if page.dirty and not f.shmem:
        lo = page.index * PAGE_SIZE
        if lo < f.size:
            f.data[lo:lo + PAGE_SIZE] = page.read(0, min(PAGE_SIZE, f.size - lo))
        machine.stats["pgpgout"] += 1
    del f.mapping.i_pages[page.index]
    machine.phys.put_page(page)
    return True


def reclaim(machine, nr_pages):
    """Reclaim up to ``nr_pages`` frames like kswapd; returns how many were freed."""
    freed = 0
    candidates = sorted((p for p in machine.phys.pages.values()
                         if p.kind in ("anon", "file") and p.lru), key=lambda p: p.lru)
    second_chance = []
    for page in candidates + [None]:
        if page is None:
            # One more pass over the pages that were referenced (their bits are now clear).
            if not second_chance:
                break
            candidates, second_chance = second_chance, []
            for page2 in candidates:
                if freed >= nr_pages:
                    break
                if page2.kind in ("anon", "file") and shrink_page(machine, page2):
                    freed += 1
            break
        if freed >= nr_pages:
            break
        if page.kind not in ("anon", "file"):
            continue
        if page_referenced(machine, page):
            lru_add(machine, page)
            second_chance.append(page)
            continue
        if shrink_page(machine, page):
            freed += 1
    machine.stats["pgsteal"] += freed
    return freed


# -- swap-in -----------------------------------------------------------------------------------

def do_swap_page(vma, address, pte, write):
    """mm/memory.c: do_swap_page(): bring a swapped-out page back (or find it in the swap
    cache). An exclusive entry comes back as an exclusive page (writable at once if the VMA
    is); the slot is freed when nothing else refers to it and swap is more than half full
    or the fault is a write (should_try_to_free_swap)."""
    mm = vma.vm_mm
    machine = mm.machine
    slot = machine.swap.slots[swp_offset(pte)]
    exclusive = bool(pte & SWP_EXCLUSIVE)
    page = slot.cache
    if page is None:
        page = machine.alloc_page("anon")
        if slot.data is not None:
            page.write(0, slot.data)
        # folio_add_new_anon_rmap(): a page that may still be shared with other processes
        # is filed under the root anon_vma, where rmap finds every process of the family.
        page.mapping = vma.anon_vma if exclusive else vma.anon_vma.root
        page.index = vma.linear_page_index(address)
        page.swap = slot
        slot.cache = page
        lru_add(machine, page)
        machine.stats["pswpin"] += 1
    page.mapcount += 1
    page.refcount += 1
    slot.count -= 1
    mm.rss["swap"] -= 1
    mm.rss["anon"] += 1
    from .memory import mk_pte, vm_get_page_prot
    entry = mk_pte(page, vm_get_page_prot(vma.vm_flags)) | _PAGE_ACCESSED
    if exclusive or page.refcount == 2 and slot.count == 0:
        page.anon_exclusive = True
        if vma.vm_flags & VM_WRITE:
            entry |= _PAGE_RW
            if write:
                entry |= _PAGE_DIRTY
    if slot.count == 0 and (machine.swap.full_half() or vma.vm_flags & VM_LOCKED
                            or write and page.refcount == 2):
        folio_free_swap(machine, page)
    pgtable.set_pte_at(mm, address, entry)
    return "swapped in" + (" (exclusive)" if page.anon_exclusive else "")


def folio_free_swap(machine, page):
    """mm/swapfile.c: folio_free_swap(): leave the swap cache once no PTE refers to the slot."""
    slot = page.swap
    if slot is None or slot.count:
        return False
    slot.cache = None
    page.swap = None
    machine.swap.release(slot)
    page.refcount -= 1
    return True


def free_swap_and_cache(machine, pte):
    """mm/swapfile.c: free_swap_and_cache(): a zapped swap entry drops its reference."""
    slot = machine.swap.slots[swp_offset(pte)]
    slot.count -= 1
    if slot.count == 0:
        if slot.cache is not None:
            page = slot.cache
            slot.cache = None
            page.swap = None
            machine.swap.release(slot)
            machine.phys.put_page(page)
        else:
            machine.swap.release(slot)


def copy_swap_pte(src_mm, table, index, pte):
    """mm/memory.c: copy_nonpresent_pte(): fork shares the slot; neither side is exclusive."""
    slot = src_mm.machine.swap.slots[swp_offset(pte)]
    slot.count += 1
    pte &= ~SWP_EXCLUSIVE
    table.entries[index] = pte
    return pte


# -- the OOM killer ------------------------------------------------------------------------------

def oom_badness(proc):
    """mm/oom_kill.c: oom_badness(): RSS + swap entries + page-table pages."""
    mm = proc.mm
    tables = sum(1 for _ in pgtable.iter_tables(mm)) if mm.pgd is not None else 0
    return mm.rss["anon"] + mm.rss["file"] + mm.rss["swap"] + tables


def out_of_memory(machine):
    """mm/oom_kill.c: out_of_memory(): kill the process with the largest badness. Returns
    the victim, or raises OutOfMemory when there is nobody left to kill."""
    victims = [p for p in machine.processes if p.alive]
    if not victims:
        raise OutOfMemory("out of memory and no process to kill")
    victim = max(victims, key=lambda p: (oom_badness(p), -p.pid))
    points = oom_badness(victim)
    victim.kill(f"Out of memory: Killed process {victim.pid} (demo) with badness {points} "
                f"(RSS + swap + page tables, in pages)")
    return victim

