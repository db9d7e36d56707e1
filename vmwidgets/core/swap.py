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
from .errors import OutOfMemory, ProcessKilled
from .flags import _PAGE_ACCESSED, PAGE_SIZE, VM_LOCKED, VM_WRITE
from .. import trace
from ..trace import traced

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

    def __trace__(self):
        return f"swap slot {self.offset:#x}"


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
        if trace._active is not None:
            trace.note(f"swap slot {slot.offset:#x} allocated")
        return slot

    def release(self, slot):
        del self.slots[slot.offset]
        self._free.append(slot.offset)
        if trace._active is not None:
            trace.note(f"swap slot {slot.offset:#x} freed")

    def full_half(self):
        """vm_swap_full(): more than half of the swap in use."""
        return self.nr_free * 2 < self.nr_slots - 1


# -- LRU ---------------------------------------------------------------------------------------

def lru_add(machine, page):
    """folio_add_lru(): the page becomes the newest on the LRU."""
    machine.lru_clock += 1
    page.lru = machine.lru_clock


@traced(hide=("machine",))
def folio_referenced(machine, page):
    """mm/rmap.c: folio_referenced(): how many mappings have the accessed bit set; the bits
    are cleared as they are counted (folio_referenced_one(): ptep_clear_flush_young)."""
    found = []
    rmap.rmap_walk_apply(machine, page, lambda pg, vma, address: found.append(
        folio_referenced_one(pg, vma, address)))
    return sum(found)


page_referenced = folio_referenced


@traced(result=lambda r: None)
def folio_referenced_one(page, vma, address):
    """mm/rmap.c: folio_referenced_one(): test and clear the accessed bit of one PTE.
    Returns 1 if it was set."""
    table = pgtable.lookup_pte_table(vma.vm_mm, address)
    index = pgtable.table_index(address, 3)
    pte = table.entries[index]
    if pte & _PAGE_ACCESSED:
        pgtable.set_pte(table, index, pgtable.pte_mkold(pte))
        return 1
    return 0


@traced(hide=("machine",))
def try_to_unmap(machine, page, slot):
    """mm/rmap.c: try_to_unmap(): remove every PTE mapping ``page`` (rmap_walk() with
    try_to_unmap_one()). Anonymous PTEs become swap entries for ``slot`` (exclusive when
    the page was PageAnonExclusive); file PTEs are simply cleared, their dirty bits moving
    to the page. Returns the number unmapped."""
    done = []
    rmap.rmap_walk_apply(machine, page, lambda pg, vma, address: done.append(
        try_to_unmap_one(pg, vma, address, slot)))
    return len(done)


@traced(hide=("slot",), result=lambda r: None)
def try_to_unmap_one(page, vma, address, slot):
    """mm/rmap.c: try_to_unmap_one(): one PTE: a swap entry or nothing."""
    mm = vma.vm_mm
    table = pgtable.lookup_pte_table(mm, address)
    index = pgtable.table_index(address, 3)
    pte = table.entries[index]
    # mm/rmap.c: try_to_unmap_one() (6.18): if (pte_dirty(pteval)) folio_mark_dirty(folio):
    # a write-protected PTE's saved dirty bit counts too.
    if pgtable.pte_dirty(pte):
        page.dirty = True
    # mm/rmap.c: try_to_unmap_one() (6.18): reclaim (TTU_BATCH_FLUSH) defers the flush when
    # another CPU may hold the mm (set_tlb_ubc_flush_pending(), flushed by
    # try_to_unmap_flush() before the page is freed); otherwise ptep_clear_flush().
    from . import tlb as tlb_mod
    if tlb_mod.should_defer_flush(mm):
        pgtable.set_pte(table, index, 0)
        tlb_mod.set_tlb_ubc_flush_pending(mm)
    else:
        tlb_mod.ptep_clear_flush(vma, address, table, index, "reclaim")
    if slot is not None:
        pgtable.set_pte(table, index, mk_swap_pte(slot.offset, page.anon_exclusive))
        slot.count += 1
        mm.rss["anon"] -= 1
        mm.rss["swap"] += 1
    else:
        pgtable.set_pte(table, index, 0)
        mm.rss["file"] -= 1
    rmap.folio_remove_rmap_pte(page)
    page.refcount -= 1


@traced(name="folio_alloc_swap", hide=("machine",), result=lambda slot: 0 if slot else -12)
def add_to_swap(machine, page):
    """mm/swapfile.c: folio_alloc_swap(): a swap slot for an anonymous page, which enters
    the swap cache (one more reference). None when swap is full."""
    slot = machine.swap.get_swap_page()
    if slot is not None:
        slot.cache = page
        page.swap = slot
        page.refcount += 1          # the swap cache's reference
    return slot


@traced(hide=("machine", "slot"), result=lambda r: None)
def pageout(machine, page, slot=None):
    """mm/vmscan.c: pageout(): write the page out: an anonymous page to its swap slot, a
    dirty page-cache page back to its file."""
    if slot is not None:
        slot.data = bytes(page.data) if page.data is not None else None
        machine.stats["pswpout"] += 1
        if trace._active is not None:
            trace.note(f"pfn {page.pfn:#x} written to swap slot {slot.offset:#x}")
        return
    f = page.mapping.host
    lo = page.index * PAGE_SIZE
    if lo < f.size:
        f.data[lo:lo + PAGE_SIZE] = page.read(0, min(PAGE_SIZE, f.size - lo))
    machine.stats["pgpgout"] += 1
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x} written back to {f.path} index {page.index:#x}")


@traced(name="__remove_mapping", hide=("machine",), result=lambda r: None)
def remove_mapping(machine, page):
    """mm/vmscan.c: __remove_mapping(): take the page out of the swap cache or the page
    cache and free it (its last reference)."""
    if page.kind == "anon":
        page.swap.cache = None
        page.swap = None
    else:
        f = page.mapping.host
        del f.mapping.i_pages[page.index]
        if trace._active is not None:
            trace.note(f"page cache: {f.path} index {page.index:#x} removed")
    machine.phys.put_page(page)


def shrink_page(machine, page):
    """One cold page of shrink_folio_list(): unmap it everywhere, write it out, free it.
    Returns True if it was freed."""
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
            slot = add_to_swap(machine, page)
            if slot is None:
                return False            # swap is full: anonymous memory cannot go
        try_to_unmap(machine, page, slot)
        pageout(machine, page, slot)
        try_to_unmap_flush(machine)
        remove_mapping(machine, page)   # drop the swap cache's reference: freed
        return True
    # A page-cache page: unmap, write back if dirty, then drop it from the cache.
    try_to_unmap(machine, page, None)
    if page.dirty and not page.mapping.host.shmem:
        pageout(machine, page)
    try_to_unmap_flush(machine)
    remove_mapping(machine, page)
    return True


def try_to_unmap_flush(machine):
    """mm/rmap.c: try_to_unmap_flush(): the batched TLB flush, before the page is freed.
    Simplification: once per page (the kernel batches a whole shrink_folio_list() call)."""
    from . import tlb as tlb_mod
    tlb_mod.try_to_unmap_flush(machine)


# mm/vmscan.c: shrink_folio_list() (6.18). Simplification: one LRU with a second chance
# stands in for the active and inactive lists; a referenced page is kept (its accessed bits
# are now clear) and tried again in a second pass.
@traced(hide=("machine", "folios", "check_refs"), result=lambda r: r[0])
def shrink_folio_list(machine, folios, nr_to_reclaim, check_refs=True):
    """Try to free each of ``folios`` (coldest first) until ``nr_to_reclaim`` are freed.
    With ``check_refs``, a page referenced since the last look (folio_referenced) is kept
    and made the newest on the LRU. Returns ``(freed, kept)``."""
    freed = 0
    kept = []
    for page in folios:
        if freed >= nr_to_reclaim:
            break
        if page.kind not in ("anon", "file"):
            continue
        if check_refs and folio_referenced(machine, page):
            lru_add(machine, page)
            kept.append(page)
            continue
        if shrink_page(machine, page):
            freed += 1
    return freed, kept


@traced(hide=("machine",))
def shrink_node(machine, nr_pages):
    """mm/vmscan.c: shrink_node(): reclaim up to ``nr_pages`` frames from the LRU, coldest
    first; returns how many were freed.
    Simplification: shrink_node_memcgs / shrink_lruvec / shrink_inactive_list are not shown."""
    # A page allocated for a fault still being served (do_cow_fault's new page while the
    # file page is read) has no rmap yet; the kernel adds it to the LRU only once it is
    # mapped (folio_add_lru_vma), so reclaim cannot see it.
    candidates = sorted((p for p in machine.phys.pages.values()
                         if p.kind in ("anon", "file") and p.lru and p.mapping is not None),
                        key=lambda p: p.lru)
    freed, second_chance = shrink_folio_list(machine, candidates, nr_pages)
    if freed < nr_pages and second_chance:
        # One more pass over the pages that were referenced (their bits are now clear).
        more, _ = shrink_folio_list(machine, second_chance, nr_pages - freed, False)
        freed += more
    machine.stats["pgsteal"] += freed
    return freed


@traced(hide=("machine", "pages"))
def reclaim_pages(machine, pages):
    """mm/vmscan.c: reclaim_pages() (MADV_PAGEOUT): shrink_folio_list() on exactly these
    pages, whether or not they were referenced. Returns how many were freed."""
    return reclaim_folio_list(machine, pages)


@traced(hide=("machine", "pages"))
def reclaim_folio_list(machine, pages):
    """mm/vmscan.c: reclaim_folio_list(): shrink_folio_list() without reference checks."""
    freed, _ = shrink_folio_list(machine, pages, len(pages), False)
    return freed


def reclaim(machine, nr_pages):
    """Reclaim up to ``nr_pages`` frames like kswapd; returns how many were freed."""
    return balance_pgdat(machine, nr_pages)


@traced(hide=("machine",))
def balance_pgdat(machine, nr_pages):
    """mm/vmscan.c: balance_pgdat(), kswapd's work (kswapd_shrink_node() -> shrink_node())."""
    return shrink_node(machine, nr_pages)


@traced(hide=("machine",))
def try_to_free_pages(machine, nr_pages):
    """mm/vmscan.c: try_to_free_pages(): direct reclaim by an allocation that found no free
    frame (do_try_to_free_pages() -> shrink_zones() -> shrink_node())."""
    return shrink_node(machine, nr_pages)


@traced(name="__alloc_pages_slowpath", hide=("machine",))
def alloc_pages_slowpath(machine, kind):
    """mm/page_alloc.c: __alloc_pages_slowpath(): no free frame: direct reclaim
    (__alloc_pages_direct_reclaim), and when that frees nothing the OOM killer
    (__alloc_pages_may_oom); then try again. If the OOM killer picks the process whose
    fault is being served, it dies with SIGKILL (ProcessKilled)."""
    while True:
        if not try_to_free_pages(machine, 32):
            victim = out_of_memory(machine)
            if victim is machine.current:
                raise ProcessKilled(victim.pid, victim.kill_reason) from None
        try:
            return machine.phys.alloc_page(kind)
        except OutOfMemory:
            continue


# -- swap-in -----------------------------------------------------------------------------------

@traced(hide=("pte",))
def do_swap_page(vma, address, pte, flags):
    """mm/memory.c: do_swap_page(): bring a swapped-out page back (or find it in the swap
    cache). An exclusive entry comes back as an exclusive page (writable at once if the VMA
    is); the slot is freed when nothing else refers to it and swap is more than half full
    or the fault is a write (should_try_to_free_swap). A write that still finds the PTE
    read-only goes on to do_wp_page()."""
    from .memory import FAULT_FLAG_WRITE, do_wp_page
    write = bool(flags & FAULT_FLAG_WRITE)
    ret = _swapin(vma, address, pte, write)
    new = pgtable.get_pte(vma.vm_mm, address)
    if write and not pgtable.pte_write(new):
        ret |= do_wp_page(vma, address, new)
    return ret


def _swapin(vma, address, pte, write):
    from .memory import VM_FAULT_MAJOR, VmFault
    mm = vma.vm_mm
    machine = mm.machine
    slot = machine.swap.slots[swp_offset(pte)]
    exclusive = bool(pte & SWP_EXCLUSIVE)
    page = swap_cache_get_folio(slot)
    major = page is None
    if page is None:
        page = swapin_readahead(vma, address, slot, exclusive)
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
            entry = pgtable.pte_mkwrite(entry, vma)
            if write:
                entry = pgtable.pte_mkdirty(entry)
    if slot.count == 0 and (machine.swap.full_half() or vma.vm_flags & VM_LOCKED
                            or write and page.refcount == 2):
        folio_free_swap(machine, page)
    pgtable.set_pte_at(mm, address, entry)
    return VmFault(VM_FAULT_MAJOR if major else 0)


@traced(null=True)
def swap_cache_get_folio(slot):
    """mm/swap_state.c: swap_cache_get_folio(): the page still in the swap cache for this
    slot (not yet freed after swap-out, or shared and already swapped in), or NULL."""
    return slot.cache


# mm/swap_state.c: swapin_readahead() (6.18). Simplification: no readahead of neighbouring
# slots; the one page is read at once.
@traced(hide=("exclusive",))
def swapin_readahead(vma, address, slot, exclusive):
    """A new page for the slot, read from swap, in the swap cache and on the LRU."""
    machine = vma.vm_mm.machine
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
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x} read from swap slot {slot.offset:#x}, in the swap cache")
    return page


@traced(hide=("machine",))
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


@traced(name="free_swap_and_cache", hide=("machine", "pte"), result=lambda r: None)
def free_swap_and_cache(machine, pte):
    """mm/swapfile.c: free_swap_and_cache_nr(): a zapped swap entry drops its reference."""
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


@traced(hide=("machine",))
def out_of_memory(machine):
    """mm/oom_kill.c: out_of_memory(): kill the process with the largest badness. Returns
    the victim, or raises OutOfMemory when there is nobody left to kill."""
    victims = [p for p in machine.processes if p.alive]
    if not victims:
        raise OutOfMemory("out of memory and no process to kill")
    victim = max(victims, key=lambda p: (oom_badness(p), -p.pid))
    oom_kill_process(victim, oom_badness(victim))
    return victim


# mm/oom_kill.c: oom_kill_process() -> __oom_kill_process() (6.18). Simplification: the victim
# exits at once (its do_exit() runs here) instead of on its way back to user space, and there
# is no oom_reaper.
@traced(hide=("points",), result=lambda r: None)
def oom_kill_process(victim, points):
    """Kill the chosen process (__oom_kill_process)."""
    __oom_kill_process(victim, f"Out of memory: Killed process {victim.pid} (demo) with "
                               f"badness {points} (RSS + swap + page tables, in pages)")


@traced(name="__oom_kill_process", hide=("message",), result=lambda r: None)
def __oom_kill_process(victim, message):
    """mm/oom_kill.c: __oom_kill_process(): SIGKILL to the victim, which exits."""
    victim.kill(message)

