"""Page faults, copy-on-write and zapping (mm/memory.c, arch/x86/mm/fault.c, Linux 6.18).

An access goes through :func:`access_page`: the hardware walk first; if the PTE does not
allow it, the x86 fault entry (``do_user_addr_fault``) finds the VMA, checks the access
(``access_error``) and calls :func:`handle_mm_fault`, then the walk is retried.

Simplification: no THP, no fault-around for file pages, no NUMA hinting faults.
"""

from . import filemap, pgtable, rmap
from .errors import BusError, SegmentationFault
from .flags import (_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX, _PAGE_PRESENT, _PAGE_PROTNONE,
                    _PAGE_RW, _PAGE_SPECIAL, _PAGE_USER, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE,
                    PTE_PFN_MASK, SEGV_ACCERR, SEGV_MAPERR, STACK_GUARD_GAP, VM_ACCESS_FLAGS,
                    VM_EXEC, VM_GROWSDOWN, VM_MAYSHARE, VM_READ, VM_SHARED, VM_WRITE)

#: A reserved frame standing for the vDSO / vvar pages.
VDSO_PFN = 2
_P, _U, _A = _PAGE_PRESENT, _PAGE_USER, _PAGE_ACCESSED
PAGE_NONE = _PAGE_PROTNONE | _A
PAGE_READONLY = _P | _U | _A | _PAGE_NX
PAGE_READONLY_EXEC = _P | _U | _A
PAGE_COPY = PAGE_READONLY
PAGE_COPY_EXEC = PAGE_READONLY_EXEC
PAGE_SHARED = _P | _PAGE_RW | _U | _A | _PAGE_NX
PAGE_SHARED_EXEC = _P | _PAGE_RW | _U | _A
#: _PAGE_CHG_MASK: the bits pte_modify() keeps when mprotect changes the protection.
_PAGE_CHG_MASK = PTE_PFN_MASK | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_SPECIAL


def vm_get_page_prot(vm_flags):
    """arch/x86/mm/pgprot.c: protection_map[]: private writable mappings are never
    writable in ``vm_page_prot`` (write access is granted per PTE, which is how COW works)."""
    r, w, x = vm_flags & VM_READ, vm_flags & VM_WRITE, vm_flags & VM_EXEC
    shared = vm_flags & VM_SHARED
    if not (r or w or x):
        return PAGE_NONE
    if w and shared:
        return PAGE_SHARED_EXEC if x else PAGE_SHARED
    return PAGE_COPY_EXEC if x else PAGE_READONLY


pte_present = pgtable.pte_present


def pte_protnone(pte):
    return (pte & (_PAGE_PRESENT | _PAGE_PROTNONE)) == _PAGE_PROTNONE


def pte_modify(pte, prot):
    """arch/x86: pte_modify(): keep the PFN and A/D/special bits, take the new protection."""
    return (pte & _PAGE_CHG_MASK) | prot


def mk_pte(page, prot):
    return (page.pfn << PAGE_SHIFT) | prot


def vm_normal_page(mm, pte):
    """mm/memory.c: vm_normal_page(): the Page behind a PTE, or None for the zero page."""
    page = mm.machine.phys.pages[pgtable.pte_pfn(pte)]
    return None if pte & _PAGE_SPECIAL else page


# -- the access path --------------------------------------------------------------------------

def access_page(mm, addr, write):
    """Translate one user access; fault as the kernel would. Returns ``(page, pte_after)``.

    Raises :class:`SegmentationFault` without changing any state when the access is refused.
    """
    pte = pgtable.get_pte(mm, addr)
    if not _hw_allows(pte, write):
        fault = check_user_access(mm, addr, write)
        handle_mm_fault(mm, fault, addr & PAGE_MASK, write)
        pte = pgtable.get_pte(mm, addr)
        assert _hw_allows(pte, write), f"fault at {addr:#x} did not make the PTE usable"
    # The CPU sets the accessed bit, and the dirty bit on a write.
    pte |= _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
    pgtable.set_pte_at(mm, addr & PAGE_MASK, pte)
    page = mm.machine.phys.pages[pgtable.pte_pfn(pte)]
    return page, pte


def _hw_allows(pte, write):
    return bool(pte & _PAGE_PRESENT) and bool(pte & _PAGE_USER) and (not write or pte & _PAGE_RW)


def check_user_access(mm, addr, write):
    """arch/x86/mm/fault.c: do_user_addr_fault() up to handle_mm_fault(): find the VMA (growing
    a stack downwards if needed) and apply access_error(). Returns the VMA; raises
    SegmentationFault otherwise. Makes no change (a stack expansion is reported, not done)."""
    access = "write" if write else "read"
    vma = mm.find_vma(addr)
    if vma is None:
        raise SegmentationFault(addr, SEGV_MAPERR, access, "no VMA contains this address")
    if vma.vm_start > addr:
        if not vma.vm_flags & VM_GROWSDOWN:
            raise SegmentationFault(addr, SEGV_MAPERR, access, (
                f"the address is in the gap below the VMA at {vma.vm_start:#x}"))
        prev = mm.vma_prev(vma)
        new_start = addr & PAGE_MASK
        if prev is not None and not prev.vm_flags & VM_GROWSDOWN and prev.vm_flags & VM_ACCESS_FLAGS:
            if new_start - prev.vm_end < STACK_GUARD_GAP:
                raise SegmentationFault(addr, SEGV_MAPERR, access, (
                    "growing the stack here would come within the 1 MiB stack guard gap "
                    "of the mapping below"))
        if prev is not None and new_start < prev.vm_end:
            raise SegmentationFault(addr, SEGV_MAPERR, access, "the stack cannot grow over another VMA")
    if write and not vma.vm_flags & VM_WRITE:
        raise SegmentationFault(addr, SEGV_ACCERR, access, (
            f"the VMA {vma.vm_start:#x}-{vma.vm_end:#x} is {vma.perms()}: not writable"))
    if not vma.vm_flags & VM_ACCESS_FLAGS:
        raise SegmentationFault(addr, SEGV_ACCERR, access, (
            f"the VMA {vma.vm_start:#x}-{vma.vm_end:#x} is PROT_NONE"))
    f = vma.vm_file
    if f is not None and not f.shmem and vma.vm_start <= addr:
        index = vma.linear_page_index(addr & PAGE_MASK)
        if index * PAGE_SIZE >= f.size and not pgtable.get_pte(mm, addr & PAGE_MASK):
            raise BusError(addr, access, (
                f"page {index} of {f.path} is past the end of the file ({f.size} bytes)"))
    return vma


def expand_downwards(vma, address):
    """mm/mmap.c: expand_downwards(): grow a VM_GROWSDOWN stack VMA to ``address``."""
    mm = vma.vm_mm
    grow = (vma.vm_start - address) >> PAGE_SHIFT
    rmap.anon_vma_prepare(vma)
    mm.set_range(vma, address, vma.vm_end, vma.vm_pgoff - grow)


def handle_mm_fault(mm, vma, address, write):
    """mm/memory.c: handle_mm_fault() -> handle_pte_fault() for one page of ``vma``."""
    if vma.vm_start > address:
        expand_downwards(vma, address)
    # __handle_mm_fault() allocates the page-table levels first; a frame allocated later
    # (which may reclaim) can then be mapped without allocating again.
    pgtable.lookup_pte_table(mm, address, alloc=True)
    pte = pgtable.get_pte(mm, address)
    if pte and not pte_present(pte):
        from . import swap
        result = swap.do_swap_page(vma, address, pte, write)
        pte = pgtable.get_pte(mm, address)
        if write and not pte & _PAGE_RW:
            result += "; then " + do_wp_page(vma, address, pte)
        return result
    if not pte:
        if vma.vm_file is None and vma.vm_ops is None:
            return do_anonymous_page(vma, address, write)
        if vma.vm_file is None:
            return special_mapping_fault(vma, address)
        return do_fault(vma, address, write)
    if write and not pte & _PAGE_RW:
        return do_wp_page(vma, address, pte)
    # Spurious: the PTE already allows it; the hardware sets A/D.
    return "spurious"


def do_anonymous_page(vma, address, write):
    """mm/memory.c: do_anonymous_page(): a read maps the shared zero page; a write gets a
    zeroed page of its own, after anon_vma_prepare()."""
    mm = vma.vm_mm
    phys = mm.machine.phys
    prot = vm_get_page_prot(vma.vm_flags)
    if not write:
        pgtable.set_pte_at(mm, address, mk_pte(phys.zero_page, prot) | _PAGE_SPECIAL)
        return "zero page"
    rmap.anon_vma_prepare(vma)
    page = mm.machine.alloc_page("anon")
    entry = mk_pte(page, prot) | _PAGE_DIRTY
    if vma.vm_flags & VM_WRITE:
        entry |= _PAGE_RW
    rmap.folio_add_new_anon_rmap(page, vma, address)
    mm.rss["anon"] += 1
    pgtable.set_pte_at(mm, address, entry)
    return "new anonymous page"


def special_mapping_fault(vma, address):
    """mm/mmap.c: special_mapping_fault() / vvar_fault(): [vdso] and [vvar] pages are kernel
    pages; they are mapped read-only and are not counted as user pages.
    Simplification: every such page maps one reserved kernel frame."""
    mm = vma.vm_mm
    page = mm.machine.phys.pages[VDSO_PFN]
    pgtable.set_pte_at(mm, address, mk_pte(page, vm_get_page_prot(vma.vm_flags)) | _PAGE_SPECIAL)
    return "kernel page of a special mapping"


def do_fault(vma, address, write):
    """mm/memory.c: do_fault(): read -> do_read_fault (with fault-around), private write ->
    do_cow_fault, shared write -> do_shared_fault."""
    mm = vma.vm_mm
    machine = mm.machine
    index = vma.linear_page_index(address)
    prot = vma_page_prot(vma)
    if not write:
        return do_read_fault(vma, address, index)
    page = filemap.filemap_fault(machine, vma, index)
    if not vma.vm_flags & VM_SHARED:
        # do_cow_fault(): copy the file page into a new anonymous page. The reference we
        # hold keeps reclaim from dropping the file page while the new one is allocated.
        rmap.anon_vma_prepare(vma)
        page.refcount += 1
        try:
            new = machine.alloc_page("anon")
        finally:
            machine.phys.put_page(page)
        new.write(0, page.read(0, PAGE_SIZE))
        rmap.folio_add_new_anon_rmap(new, vma, address)
        mm.rss["anon"] += 1
        pgtable.set_pte_at(mm, address, mk_pte(new, prot) | _PAGE_DIRTY | _PAGE_RW)
        return "private copy of a file page (do_cow_fault)"
    # do_shared_fault(): the page-cache page itself, writable and dirty.
    _map_file_page(mm, address, page, prot | _PAGE_RW | _PAGE_DIRTY)
    page.dirty = True
    return "page-cache page mapped writable (do_shared_fault)"


#: mm/memory.c: fault_around_bytes (64 KiB): a read fault maps up to 16 cached pages.
FAULT_AROUND_PAGES = 16


def do_read_fault(vma, address, index):
    """mm/memory.c: do_read_fault(): fault-around first (do_fault_around maps the pages
    already in the page cache in the 64 KiB-aligned window, within the VMA and the PTE
    table); the page itself is read in if it was not among them. A regular file's missing
    page is read with read-around and the fault retried, so its neighbours get mapped too;
    a shmem page is allocated and mapped alone."""
    mm = vma.vm_mm
    machine = mm.machine
    file = vma.vm_file
    if not file.shmem and index not in file.mapping.i_pages:
        filemap.filemap_fault(machine, vma, index)      # read-around, then retry
    mapped = do_fault_around(vma, address)
    if pgtable.get_pte(mm, address):
        return f"page-cache page, with {mapped - 1} neighbour(s) mapped by fault-around"
    page = filemap.filemap_fault(machine, vma, index)
    _map_file_page(mm, address, page, vma_page_prot(vma) & ~_PAGE_RW)
    return "page-cache page" + (f"; {mapped} cached neighbour(s) mapped" if mapped else "")


def do_fault_around(vma, address):
    """mm/memory.c: do_fault_around() -> filemap_map_pages(). Returns the number mapped."""
    mm = vma.vm_mm
    file = vma.vm_file
    nr = FAULT_AROUND_PAGES
    start = max(address & ~(nr * PAGE_SIZE - 1), vma.vm_start,
                address & ~((1 << PAGE_SHIFT + 9) - 1))
    end = min(start + nr * PAGE_SIZE, vma.vm_end, (address | ((1 << PAGE_SHIFT + 9) - 1)) + 1)
    last = filemap.file_pages(file) - 1
    prot = vma_page_prot(vma) & ~_PAGE_RW
    mapped = 0
    for addr in range(start, end, PAGE_SIZE):
        index = vma.linear_page_index(addr)
        page = file.mapping.i_pages.get(index)
        if page is None or (index > last and not file.shmem) or pgtable.get_pte(mm, addr):
            continue
        _map_file_page(mm, addr, page, prot)
        mapped += 1
    return mapped


def _map_file_page(mm, address, page, entry_bits):
    """finish_fault() / set_pte_range() for a page-cache page."""
    page.refcount += 1
    rmap.folio_add_file_rmap_pte(page)
    mm.rss["file"] += 1
    pgtable.set_pte_at(mm, address, mk_pte(page, entry_bits))


def vma_page_prot(vma):
    """mm/mmap.c: vma_set_page_prot(): a shared writable mapping of a regular file wants
    write notifications (dirty tracking), so its PTEs start read-only; shmem does not."""
    prot = vm_get_page_prot(vma.vm_flags)
    if vma.vm_file is not None and not vma.vm_file.shmem:
        prot &= ~_PAGE_RW
    return prot


def do_wp_page(vma, address, pte):
    """mm/memory.c: do_wp_page(): a write to a present, write-protected PTE.

    Shared mappings make the page writable (wp_page_shared). A private anonymous page is
    reused when it is PageAnonExclusive or when we hold its only reference
    (wp_can_reuse_anon_folio); otherwise, and for the zero page and file pages, COW copies.
    """
    mm = vma.vm_mm
    page = vm_normal_page(mm, pte)
    if vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        page.dirty = True
        pgtable.set_pte_at(mm, address, pte | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED)
        return "shared page made writable"
    if page is not None and page.kind == "anon":
        if page.anon_exclusive:
            reason = "reused: the page is exclusive to this process"
        elif wp_can_reuse_anon_folio(page, vma):
            reason = "reused: no other process holds the page any more"
        else:
            reason = None
        if reason:
            page.anon_exclusive = True
            pgtable.set_pte_at(mm, address, pte | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED)
            return reason
    return wp_page_copy(vma, address, pte, page)


def wp_can_reuse_anon_folio(page, vma):
    """mm/memory.c: wp_can_reuse_anon_folio(): reuse when ours is the only reference (a page
    in the swap cache gives its slot up first); folio_move_anon_rmap() then points the page
    at this VMA's anon_vma so later rmap walks skip the other processes."""
    swapcache = 1 if page.swap is not None else 0
    if page.refcount > 1 + swapcache:
        return False
    if swapcache:
        from . import swap
        swap.folio_free_swap(vma.vm_mm.machine, page)
    if page.refcount != 1:
        return False
    page.mapping = vma.anon_vma
    return True


def wp_page_copy(vma, address, pte, old):
    """mm/memory.c: wp_page_copy(): break COW with a new exclusive anonymous page (zeroed when
    the old PTE mapped the zero page)."""
    mm = vma.vm_mm
    phys = mm.machine.phys
    rmap.anon_vma_prepare(vma)
    if old is not None:
        old.refcount += 1            # held across the allocation, as the kernel does
    try:
        new = mm.machine.alloc_page("anon")
    finally:
        if old is not None:
            phys.put_page(old)
    if old is not None:
        new.write(0, old.read(0, PAGE_SIZE))
    rmap.folio_add_new_anon_rmap(new, vma, address)
    entry = mk_pte(new, vm_get_page_prot(vma.vm_flags)) | _PAGE_DIRTY | _PAGE_ACCESSED
    if vma.vm_flags & VM_WRITE:
        entry |= _PAGE_RW
    pgtable.set_pte_at(mm, address, entry)
    mm.rss["anon"] += 1
    if old is not None:
        if old.kind == "file":
            mm.rss["file"] -= 1
        else:
            mm.rss["anon"] -= 1
        rmap.folio_remove_rmap_pte(old)
        phys.put_page(old)
        return "copied the page"
    return "copied the zero page"


# -- zapping -----------------------------------------------------------------------------------

def zap_vma_range(vma, start, end):
    """mm/memory.c: zap_page_range_single() / unmap_vmas(): clear the PTEs of
    ``[start, end)`` and drop the pages' mappings and references.

    Returns the number of PTEs cleared.
    """
    mm = vma.vm_mm
    phys = mm.machine.phys
    cleared = 0
    for addr, table, index, pte in list(pgtable.iter_ptes(mm, start, end)):
        del table.entries[index]
        cleared += 1
        if not pte_present(pte):
            from . import swap
            swap.free_swap_and_cache(mm.machine, pte)
            mm.rss["swap"] -= 1
            continue
        page = vm_normal_page(mm, pte)
        if page is None:
            continue
        if pte & _PAGE_DIRTY and page.kind == "file":
            page.dirty = True
        mm.rss["anon" if page.kind == "anon" else "file"] -= 1
        rmap.folio_remove_rmap_pte(page)
        phys.put_page(page)
    return cleared


def change_protection(vma, start, end, try_writable):
    """mm/mprotect.c: change_protection(): rewrite the present PTEs of ``[start, end)`` with
    the VMA's new protection. Exclusive anonymous pages of a writable private VMA become
    writable at once (MM_CP_TRY_CHANGE_WRITABLE). Returns the number of PTEs changed."""
    mm = vma.vm_mm
    prot = vm_get_page_prot(vma.vm_flags)
    changed = 0
    for addr, table, index, pte in list(pgtable.iter_ptes(mm, start, end)):
        if not pte_present(pte):
            continue
        new = pte_modify(pte, prot)
        if (try_writable and not new & _PAGE_RW and vma.vm_flags & VM_WRITE
                and not pte_protnone(new)):
            page = vm_normal_page(mm, new)
            if page is not None and page.kind == "anon" and page.anon_exclusive:
                new |= _PAGE_RW
        if new != pte:
            table.entries[index] = new
            changed += 1
    return changed


def populate_vma_page_range(vma, start, end):
    """mm/gup.c: populate_vma_page_range(): fault every page in, as MAP_POPULATE and
    MADV_POPULATE do; private writable mappings take write faults (COW broken now)."""
    if not vma.vm_flags & VM_ACCESS_FLAGS:
        return 0
    write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    mm = vma.vm_mm
    n = 0
    for addr in range(start, end, PAGE_SIZE):
        pte = pgtable.get_pte(mm, addr)
        if not _hw_allows(pte, write):
            handle_mm_fault(mm, vma, addr, write)
            n += 1
    return n
