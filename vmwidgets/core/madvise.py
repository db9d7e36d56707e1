"""madvise (mm/madvise.c, Linux 6.18).

Holes in the range are skipped and reported as ENOMEM at the end, after the advice was
applied to the mapped parts. Advice that changes VMA flags merges and splits like mprotect.

Simplification: MADV_WILLNEED, COLD and PAGEOUT are accepted and do nothing yet (there is
no reclaim); MADV_HUGEPAGE only sets the flag (no THP); guard regions, KSM merging,
MADV_REMOVE and MADV_COLLAPSE are not modelled and say so.
"""

from . import memory, pgtable, vma as vma_mod
from .mm_types import vm_flags_reset
from ..trace import traced
from .errors import EINVAL, ENOMEM, syscall_error
from .flags import (_PAGE_ACCESSED, MADV_COLD, MADV_COLLAPSE, MADV_DODUMP, MADV_DOFORK,
                    MADV_DONTDUMP, MADV_DONTFORK, MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE,
                    MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_HUGEPAGE, MADV_KEEPONFORK,
                    MADV_MERGEABLE, MADV_NOHUGEPAGE, MADV_NORMAL, MADV_PAGEOUT,
                    MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_RANDOM, MADV_REMOVE,
                    MADV_SEQUENTIAL, MADV_UNMERGEABLE, MADV_WILLNEED, MADV_WIPEONFORK,
                    PAGE_SIZE, ULONG_MAX, VM_DONTCOPY, VM_DONTDUMP, VM_HUGEPAGE, VM_HUGETLB, VM_IO,
                    VM_LOCKED, VM_MAYSHARE, VM_MERGEABLE, VM_MIXEDMAP, VM_NOHUGEPAGE, VM_PFNMAP,
                    VM_RAND_READ, VM_READ, VM_SEQ_READ, VM_SHARED, VM_SPECIAL, VM_WIPEONFORK, VM_WRITE, VM_DONTEXPAND,
                    offset_in_page, page_align)

_VALID = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED, MADV_FREE,
          MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK, MADV_MERGEABLE, MADV_UNMERGEABLE,
          MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK,
          MADV_KEEPONFORK, MADV_COLD, MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE,
          MADV_DONTNEED_LOCKED, MADV_COLLAPSE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE}
_NOT_MODELLED = {MADV_REMOVE: "MADV_REMOVE", MADV_COLLAPSE: "MADV_COLLAPSE",
                 MADV_GUARD_INSTALL: "MADV_GUARD_INSTALL", MADV_GUARD_REMOVE: "MADV_GUARD_REMOVE"}


@traced(hide=("proc",), result=lambda r: 0)
def do_madvise(proc, start, len_in, behavior):
    """mm/madvise.c: do_madvise(). Returns a list of outcome sentences."""
    fail = lambda err, why: syscall_error(err, "madvise", why)  # noqa: E731
    if behavior not in _VALID:
        raise fail(EINVAL, f"unknown advice {behavior}")
    if offset_in_page(start):
        raise fail(EINVAL, f"address {start:#x} is not page aligned")
    length = page_align(len_in)
    if len_in and not length:
        raise fail(EINVAL, "length wraps around when rounded up to a page")
    end = start + length
    if end > ULONG_MAX:
        raise fail(EINVAL, "the range wraps around the end of the address space")
    if end == start:
        return ["length 0: nothing to do"]
    if behavior in _NOT_MODELLED:
        raise NotImplementedError(f"{_NOT_MODELLED[behavior]} is not modelled by vmwidgets yet")
    return madvise_do_behavior(proc, start, end, behavior)


@traced(hide=("proc",), result=lambda r: 0)
def madvise_do_behavior(proc, start, end, behavior):
    """mm/madvise.c: madvise_do_behavior(): MADV_POPULATE_* fault the range in; other
    advice walks the VMAs."""
    if behavior in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        return madvise_populate(proc, start, end, behavior == MADV_POPULATE_WRITE)
    if behavior not in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        return madvise_walk_vmas(proc, start, end, behavior)
    # mm/madvise.c: madvise_init_tlb() / madvise_finish_tlb() (6.18): MADV_DONTNEED and
    # MADV_FREE gather over every VMA of the range and flush once at the end.
    # Simplification: no CONFIG_PT_RECLAIM (a zap of a whole 2 MiB PTE table frees it).
    from . import tlb as tlb_mod
    tlb = tlb_mod.tlb_gather_mmu(proc.mm, "madvise")
    try:
        return madvise_walk_vmas(proc, start, end, behavior)
    finally:
        tlb_mod.tlb_finish_mmu(tlb)


@traced(hide=("proc", "behavior"), result=lambda r: 0)
def madvise_walk_vmas(proc, start, end, behavior):
    """mm/madvise.c: madvise_walk_vmas(): visit each VMA piece; a hole gives ENOMEM at the end."""
    mm = proc.mm
    outcomes = []
    unmapped_error = False
    vma, prev = mm.find_vma_prev(start)
    if vma is not None and start > vma.vm_start:
        prev = vma
    while True:
        if vma is None:
            unmapped_error = True
            break
        if start < vma.vm_start:
            unmapped_error = True
            start = vma.vm_start
            if start >= end:
                break
        tmp = min(vma.vm_end, end)
        prev, outcome = madvise_vma_behavior(mm, vma, prev, start, tmp, behavior)
        outcomes.append(outcome)
        start = tmp
        if prev is not None and start < prev.vm_end:
            start = prev.vm_end
        if start >= end:
            break
        vma = mm.find_vma(prev.vm_end if prev is not None else start)
    if unmapped_error:
        exc = syscall_error(ENOMEM, "madvise", "part of the range is not mapped (the advice was "
                                               "still applied to the mapped parts)")
        exc.outcomes = outcomes
        raise exc
    return outcomes


@traced(hide=("mm", "prev"), result=lambda r: 0)
def madvise_vma_behavior(mm, vma, prev, start, end, behavior):
    """mm/madvise.c: madvise_vma_behavior() for one VMA piece. Returns ``(prev, outcome)``."""
    rng = f"{start:#x}-{end:#x}"
    fail = lambda why: syscall_error(EINVAL, "madvise", why)  # noqa: E731
    if behavior in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE):
        forbidden = VM_PFNMAP | (0 if behavior == MADV_DONTNEED_LOCKED else VM_LOCKED)
        if vma.vm_flags & VM_HUGETLB == 0 and vma.vm_flags & forbidden:
            raise fail(f"cannot discard pages of the VMA at {vma.vm_start:#x} (locked or PFN map)")
        if behavior == MADV_FREE and not vma.is_anonymous():
            raise fail("MADV_FREE works only on private anonymous memory")
        return vma, f"{rng}: {madvise_dontneed_free(vma, start, end, behavior)}"
    if behavior in (MADV_COLD, MADV_PAGEOUT):
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP | VM_HUGETLB):
            raise fail(f"cannot page out the locked or special VMA at {vma.vm_start:#x}")
        pageout = behavior == MADV_PAGEOUT
        return vma, f"{rng}: " + (madvise_pageout(vma, start, end) if pageout
                                  else madvise_cold(vma, start, end))
    if behavior == MADV_WILLNEED:
        return vma, f"{rng}: advice noted (no readahead in this model)"
    new_flags = vma.vm_flags
    if behavior == MADV_NORMAL:
        new_flags &= ~(VM_RAND_READ | VM_SEQ_READ)
    elif behavior == MADV_SEQUENTIAL:
        new_flags = (new_flags & ~VM_RAND_READ) | VM_SEQ_READ
    elif behavior == MADV_RANDOM:
        new_flags = (new_flags & ~VM_SEQ_READ) | VM_RAND_READ
    elif behavior == MADV_DONTFORK:
        new_flags |= VM_DONTCOPY
    elif behavior == MADV_DOFORK:
        if vma.vm_flags & VM_IO:
            raise fail("MADV_DOFORK on an I/O mapping")
        new_flags &= ~VM_DONTCOPY
    elif behavior == MADV_WIPEONFORK:
        if vma.vm_file is not None or vma.vm_flags & VM_SHARED:
            raise fail("MADV_WIPEONFORK works only on private anonymous memory")
        new_flags |= VM_WIPEONFORK
    elif behavior == MADV_KEEPONFORK:
        new_flags &= ~VM_WIPEONFORK
    elif behavior == MADV_DONTDUMP:
        new_flags |= VM_DONTDUMP
    elif behavior == MADV_DODUMP:
        if new_flags & VM_SPECIAL:
            raise fail("MADV_DODUMP on a special mapping")
        new_flags &= ~VM_DONTDUMP
    elif behavior == MADV_MERGEABLE:
        # mm/ksm.c: ksm_madvise() leaves shared and special mappings alone.
        if not vma.vm_flags & (VM_SHARED | VM_MAYSHARE | VM_PFNMAP | VM_IO | VM_DONTEXPAND
                               | VM_HUGETLB | VM_MIXEDMAP):
            new_flags |= VM_MERGEABLE
    elif behavior == MADV_UNMERGEABLE:
        new_flags &= ~VM_MERGEABLE
    elif behavior == MADV_HUGEPAGE:
        new_flags = (new_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    elif behavior == MADV_NOHUGEPAGE:
        new_flags = (new_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE
    if new_flags == vma.vm_flags:
        return vma, f"{rng}: flags unchanged"
    return madvise_update_vma(mm, vma, prev, start, end, new_flags, rng)


@traced(hide=("mm", "prev", "rng"), result=lambda r: 0)
def madvise_update_vma(mm, vma, prev, start, end, new_flags, rng):
    """mm/madvise.c: madvise_update_vma(): the range gets the new flags: merged with a
    neighbour or split out (vma_modify_flags), then vm_flags_reset()."""
    vma, outcome = vma_mod.vma_modify(mm, prev, vma, start, end, new_flags, "madvise")
    vm_flags_reset(vma, new_flags)
    return vma, f"{rng}: {outcome}"


@traced(hide=("behavior",), result=lambda r: 0)
def madvise_dontneed_free(vma, start, end, behavior):
    """mm/madvise.c: madvise_dontneed_free(): MADV_DONTNEED zaps the range
    (madvise_dontneed_single_vma), MADV_FREE marks its pages lazily freeable
    (madvise_free_single_vma). Returns an outcome sentence."""
    if behavior == MADV_FREE:
        return f"{madvise_free(vma, start, end)} page(s) marked lazily freeable"
    return f"{madvise_dontneed_single_vma(vma, start, end)} PTE(s) zapped"


@traced(result=lambda r: 0)
def madvise_dontneed_single_vma(vma, start, end):
    """mm/madvise.c: madvise_dontneed_single_vma(): zap_page_range_single_batched().
    Returns the number of PTEs cleared."""
    return memory.zap_page_range_single_batched(vma, start, end)


@traced(name="madvise_free_single_vma", result=lambda r: 0)
def madvise_free(vma, start, end):
    """mm/madvise.c: madvise_free_single_vma(): clean, exclusive anonymous pages become
    lazily freeable (their PTEs become old and clean: D and a saved dirty bit both go);
    reclaim may drop them later."""
    mm = vma.vm_mm
    from . import tlb as tlb_mod
    tlb = tlb_mod.current_gather(mm)
    n = 0
    for addr, table, index, pte in list(pgtable.iter_ptes(mm, start, end)):
        if not memory.pte_present(pte):
            continue
        page = memory.vm_normal_page(mm, pte)
        if page is None or page.kind != "anon" or page.mapcount != 1:
            continue
        # mm/madvise.c: madvise_free_pte_range() (6.18): a young or dirty PTE goes through
        # clear_young_dirty_ptes(CYDP_CLEAR_YOUNG | CYDP_CLEAR_DIRTY): pte_mkold(),
        # pte_mkclean(); then tlb_remove_tlb_entries().
        if pgtable.pte_young(pte) or pgtable.pte_dirty(pte):
            pgtable.set_pte(table, index, pgtable.pte_mkclean(pgtable.pte_mkold(pte)))
            if tlb is not None:
                tlb_mod.tlb_flush_pte_range(tlb, addr, PAGE_SIZE)
        page.dirty = False
        n += 1
    return n


@traced(result=lambda r: 0)
def madvise_cold(vma, start, end):
    """mm/madvise.c: madvise_cold(): age the pages (madvise_cold_or_pageout_pte_range)."""
    return madvise_cold_or_pageout(vma, start, end, False)


@traced(result=lambda r: 0)
def madvise_pageout(vma, start, end):
    """mm/madvise.c: madvise_pageout(): reclaim the pages at once
    (madvise_cold_or_pageout_pte_range -> reclaim_pages)."""
    return madvise_cold_or_pageout(vma, start, end, True)


@traced(name="madvise_cold_or_pageout_pte_range", hide=("pageout",), result=lambda r: None)
def madvise_cold_or_pageout(vma, start, end, pageout):
    """mm/madvise.c: madvise_cold_or_pageout_pte_range(): pages mapped only here are aged
    (COLD: moved to the cold end of the LRU) or reclaimed at once (PAGEOUT, ignoring their
    accessed bits). Anonymous pages need swap to go; without it they stay."""
    from . import swap, tlb as tlb_mod
    mm = vma.vm_mm
    machine = mm.machine
    # mm/madvise.c: madvise_cold() / madvise_pageout() (6.18): one mmu_gather per VMA; COLD
    # flushes the PTEs whose accessed bit it cleared (tlb_remove_tlb_entries()).
    tlb = tlb_mod.tlb_gather_mmu(mm, "madvise")
    try:
        pages = []
        for addr, table, index, pte in list(pgtable.iter_ptes(mm, start, end)):
            if not memory.pte_present(pte):
                continue
            page = memory.vm_normal_page(mm, pte)
            if page is None or page.mapcount != 1 or page.kind not in ("anon", "file"):
                continue
            if not pageout and pte & _PAGE_ACCESSED:
                tlb_mod.tlb_flush_pte_range(tlb, addr, PAGE_SIZE)
            pgtable.set_pte(table, index, pgtable.pte_mkold(pte))
            pages.append(page)
        if not pageout:
            for page in pages:
                page.lru = min(page.lru, 1)
            return f"{len(pages)} page(s) moved to the cold end of the LRU"
        freed = swap.reclaim_pages(machine, pages)
        return f"{freed} of {len(pages)} page(s) paged out"
    finally:
        tlb_mod.tlb_finish_mmu(tlb)


@traced(hide=("proc", "write"), result=lambda r: 0)
def madvise_populate(proc, start, end, write):
    """mm/madvise.c: madvise_populate() -> faultin_page_range(): fault the range in, VMA by
    VMA. A hole gives ENOMEM; a VMA that get_user_pages may not touch this way (no VM_READ
    for a read, no VM_WRITE for a write, I/O or PFN maps) gives EINVAL. Pages before the
    failure stay populated."""
    mm = proc.mm
    addr = start
    n = 0
    while addr < end:
        vma = mm.vma_lookup(addr)
        if vma is None:
            raise syscall_error(ENOMEM, "madvise", f"{addr:#x} is not mapped")
        need = VM_WRITE if write else VM_READ
        if vma.vm_flags & (VM_IO | VM_PFNMAP) or not vma.vm_flags & need:
            raise syscall_error(EINVAL, "madvise", (
                f"the VMA at {vma.vm_start:#x} ({vma.perms()}) cannot be populated for "
                f"{'writing' if write else 'reading'} (mm/gup.c: check_vma_flags)"))
        stop = min(end, vma.vm_end)
        for a in range(addr, stop, PAGE_SIZE):
            if not memory._hw_allows(pgtable.get_pte(mm, a), write):
                memory.faultin_page(vma, a, write)
                n += 1
        addr = stop
    return [f"{start:#x}-{end:#x}: {n} page(s) faulted in"]
