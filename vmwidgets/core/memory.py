"""Page faults, copy-on-write and zapping (mm/memory.c, arch/x86/mm/fault.c, Linux 6.18).

An access goes through :func:`access_page`: the hardware walk first; if the PTE does not
allow it, the CPU raises a page fault: :func:`exc_page_fault` > :func:`do_user_addr_fault`
finds the VMA (:func:`lock_vma_under_rcu`, or :func:`lock_mm_and_find_vma`, which grows a
stack), checks the access (``access_error``) and calls :func:`handle_mm_fault` >
``__handle_mm_fault`` > :func:`handle_pte_fault`, which dispatches to
:func:`do_anonymous_page`, :func:`do_fault`, ``do_swap_page`` or :func:`do_wp_page`; then
the access is tried again. Each of these is a traced function, named as in the kernel.

Simplification: no THP, no NUMA hinting faults, no userfaultfd.
"""

from . import filemap, pgtable, rmap
from .errors import BusError, SegmentationFault
from .. import trace
from ..trace import traced
from .flags import (_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX, _PAGE_PRESENT, _PAGE_PROTNONE,
                    _PAGE_RW, _PAGE_SPECIAL, _PAGE_USER, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE,
                    SEGV_ACCERR, SEGV_MAPERR, STACK_GUARD_GAP, VM_ACCESS_FLAGS,
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


pte_modify = pgtable.pte_modify


def mk_pte(page, prot):
    return (page.pfn << PAGE_SHIFT) | prot


def vm_normal_page(mm, pte):
    """mm/memory.c: vm_normal_page(): the Page behind a PTE, or None for the zero page."""
    page = mm.machine.phys.pages[pgtable.pte_pfn(pte)]
    return None if pte & _PAGE_SPECIAL else page


# -- vm_fault_t and fault flags -----------------------------------------------------------------

#: include/linux/mm_types.h: vm_fault_t bits the model returns.
VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_LOCKED = 0x000200
VM_FAULT_RETRY = 0x000400
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV
_VM_FAULT_NAMES = ((VM_FAULT_OOM, "OOM"), (VM_FAULT_SIGBUS, "SIGBUS"), (VM_FAULT_MAJOR, "MAJOR"),
                   (VM_FAULT_SIGSEGV, "SIGSEGV"), (VM_FAULT_NOPAGE, "NOPAGE"),
                   (VM_FAULT_LOCKED, "LOCKED"), (VM_FAULT_RETRY, "RETRY"))

#: include/linux/mm_types.h: enum fault_flag, the bits the model uses.
#: Simplification: ALLOW_RETRY, KILLABLE and INTERRUPTIBLE (always set for user faults) are
#: implied and not shown.
FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_VMA_LOCK = 1 << 12
_FAULT_FLAG_NAMES = ((FAULT_FLAG_WRITE, "WRITE"), (FAULT_FLAG_TRIED, "TRIED"),
                     (FAULT_FLAG_USER, "USER"), (FAULT_FLAG_VMA_LOCK, "VMA_LOCK"))


class VmFault(int):
    """A ``vm_fault_t``: shows as ``0`` or its bits (``RETRY|MAJOR``) in a call tree."""

    __slots__ = ()

    def __or__(self, other):
        return VmFault(int(self) | int(other))

    __ror__ = __or__

    def __trace__(self):
        return "|".join(n for bit, n in _VM_FAULT_NAMES if self & bit) or "0"

    def __repr__(self):
        return f"VmFault({self.__trace__()})"


class FaultFlags(int):
    """``vmf->flags``: shows as ``WRITE|USER|VMA_LOCK`` in a call tree."""

    __slots__ = ()

    def __or__(self, other):
        return FaultFlags(int(self) | int(other))

    def __trace__(self):
        return "|".join(n for bit, n in _FAULT_FLAG_NAMES if self & bit) or "0"


FAULT_OK = VmFault(0)


# -- the access path --------------------------------------------------------------------------

def access_page(mm, addr, write):
    """Translate one user access; fault as the kernel would. Returns ``(page, pte_after)``.

    The hardware walk first: an access the PTE allows is a hit (no kernel code runs, only
    the CPU setting the accessed/dirty bits); otherwise the CPU raises a page fault
    (:func:`exc_page_fault`) and retries the access.
    Raises :class:`SegmentationFault` without changing any state when the access is refused.
    """
    index = pgtable.table_index(addr, 3)
    table = pgtable.lookup_pte_table(mm, addr)
    pte = table.entries.get(index, 0) if table is not None else 0
    if not _hw_allows(pte, write):
        exc_page_fault(mm, addr, write)
        table = pgtable.lookup_pte_table(mm, addr)
        pte = table.entries.get(index, 0)
        assert _hw_allows(pte, write), f"fault at {addr:#x} did not make the PTE usable"
    # The CPU sets the accessed bit, and the dirty bit on a write (only ever through a
    # writable PTE: _PAGE_SAVED_DIRTY is a software bit the CPU neither reads nor sets).
    new = pte | _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
    if new != pte:
        table.entries[index] = new
        if trace._active is not None:
            trace.note(f"cpu sets A/D bits: pte {addr & PAGE_MASK:#x}: "
                       f"{pgtable.pte_text(pte)} -> {pgtable.pte_text(new)}")
    page = mm.machine.phys.pages[pgtable.pte_pfn(new)]
    return page, new


def _hw_allows(pte, write):
    return bool(pte & _PAGE_PRESENT) and bool(pte & _PAGE_USER) and (
        not write or pgtable.pte_write(pte))


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


@traced(result=lambda r: None)
def exc_page_fault(mm, address, write):
    """arch/x86/mm/fault.c: exc_page_fault(), the #PF entry; handle_page_fault() is
    always_inline, so the next function is do_user_addr_fault()."""
    return do_user_addr_fault(mm, address, write)


# arch/x86/mm/fault.c: do_user_addr_fault() (6.18). Simplification: the checks of
# lock_mm_and_find_vma() and access_error() (and filemap_fault()'s end-of-file SIGBUS) are
# made first, by check_user_access(), so that a refused access changes nothing; the kernel
# may have grown a stack VMA before it finds the access bad.
@traced(result=lambda r: None)
def do_user_addr_fault(mm, address, write):
    """Try the fault under the per-VMA lock (:func:`lock_vma_under_rcu`); if there is no
    VMA at the address (a stack to grow) or the fault asks for a retry (it dropped the
    lock to read a file), take the mmap lock (:func:`lock_mm_and_find_vma`) and fault
    again with FAULT_FLAG_TRIED."""
    flags = FaultFlags(FAULT_FLAG_USER | (FAULT_FLAG_WRITE if write else 0))
    try:
        check_user_access(mm, address, write)
    except SegmentationFault as exc:
        vma = lock_vma_under_rcu(mm, address)
        if vma is None:
            vma = lock_mm_and_find_vma(mm, address, refused=exc)
        if exc.si_code == SEGV_ACCERR:
            bad_area_access_error(address, exc)
        bad_area_nosemaphore(address, exc)
    except BusError as exc:
        lock_vma_under_rcu(mm, address)
        do_sigbus(address, exc)
    vma = lock_vma_under_rcu(mm, address)
    if vma is not None:
        fault = handle_mm_fault(vma, address, flags | FAULT_FLAG_VMA_LOCK)
        if not fault & VM_FAULT_RETRY:
            return fault
        flags |= FAULT_FLAG_TRIED
    while True:
        vma = lock_mm_and_find_vma(mm, address)
        fault = handle_mm_fault(vma, address, flags)
        if not fault & VM_FAULT_RETRY:
            return fault
        flags |= FAULT_FLAG_TRIED


@traced(hide=("mm",), null=True)
def lock_vma_under_rcu(mm, address):
    """mm/mmap_lock.c: lock_vma_under_rcu(): the VMA containing ``address`` (read-locked),
    or NULL, found without the mmap lock."""
    return mm.vma_lookup(address)


@traced(hide=("mm", "refused"), null=True)
def lock_mm_and_find_vma(mm, address, refused=None):
    """mm/mmap_lock.c: lock_mm_and_find_vma(): take the mmap lock and find the VMA, growing
    a stack VMA down to ``address`` (expand_stack_locked()). NULL when there is none (the
    model knows beforehand: ``refused``)."""
    vma = mm.find_vma(address)
    if refused is not None:
        return vma if refused.si_code == SEGV_ACCERR else None
    if vma.vm_start > address:
        expand_stack_locked(vma, address)
    return vma


@traced(result=lambda r: 0)
def expand_stack_locked(vma, address):
    """mm/mmap.c: expand_stack_locked(): a VM_GROWSDOWN VMA grows with expand_downwards()."""
    return expand_downwards(vma, address)


@traced(result=lambda r: 0)
def expand_downwards(vma, address):
    """mm/mmap.c: expand_downwards(): grow a VM_GROWSDOWN stack VMA to ``address``."""
    mm = vma.vm_mm
    grow = (vma.vm_start - address) >> PAGE_SHIFT
    rmap.anon_vma_prepare(vma)
    mm.set_range(vma, address, vma.vm_end, vma.vm_pgoff - grow)


@traced(hide=("exc",))
def bad_area_nosemaphore(address, exc):
    """arch/x86/mm/fault.c: bad_area_nosemaphore(): no VMA: SIGSEGV with SEGV_MAPERR."""
    raise exc


@traced(hide=("exc",))
def bad_area_access_error(address, exc):
    """arch/x86/mm/fault.c: bad_area_access_error(): the VMA forbids it: SEGV_ACCERR."""
    raise exc


@traced(hide=("exc",))
def do_sigbus(address, exc):
    """arch/x86/mm/fault.c: do_sigbus(): the fault handler returned VM_FAULT_SIGBUS (a
    file page past the end of the file)."""
    raise exc


@traced
def handle_mm_fault(vma, address, flags):
    """mm/memory.c: handle_mm_fault(): the architecture-independent fault handler."""
    return _handle_mm_fault(vma, address, flags)


# mm/memory.c: __handle_mm_fault() (6.18). Simplification: the PTE table is allocated here
# with the upper levels (the kernel allocates it in do_anonymous_page() / finish_fault()), so
# that a frame allocated later (which may reclaim) is mapped without allocating again.
@traced(name="__handle_mm_fault")
def _handle_mm_fault(vma, address, flags):
    """Walk (and fill) the upper page-table levels, then :func:`handle_pte_fault`."""
    pgtable.lookup_pte_table(vma.vm_mm, address, alloc=True)
    return handle_pte_fault(vma, address, flags)


@traced
def handle_pte_fault(vma, address, flags):
    """mm/memory.c: handle_pte_fault(): no PTE -> do_pte_missing(); a swap entry ->
    do_swap_page(); a write to a write-protected PTE -> do_wp_page(); otherwise the fault
    was spurious (another CPU fixed the PTE) and only the accessed/dirty bits change."""
    pte = pgtable.get_pte(vma.vm_mm, address)
    if not pte:
        return do_pte_missing(vma, address, flags)
    if not pte_present(pte):
        from . import swap
        return swap.do_swap_page(vma, address, pte, flags)
    if flags & FAULT_FLAG_WRITE and not pgtable.pte_write(pte):
        return do_wp_page(vma, address, pte)
    return FAULT_OK


@traced
def do_pte_missing(vma, address, flags):
    """mm/memory.c: do_pte_missing(): anonymous VMAs -> do_anonymous_page(), else do_fault()."""
    if vma.is_anonymous():
        return do_anonymous_page(vma, address, flags)
    return do_fault(vma, address, flags)


@traced
def do_anonymous_page(vma, address, flags):
    """mm/memory.c: do_anonymous_page(): a read maps the shared zero page; a write gets a
    zeroed page of its own, after vmf_anon_prepare() (its __vmf_anon_prepare())."""
    mm = vma.vm_mm
    phys = mm.machine.phys
    prot = vm_get_page_prot(vma.vm_flags)
    if not flags & FAULT_FLAG_WRITE:
        pgtable.set_pte_at(mm, address, mk_pte(phys.zero_page, prot) | _PAGE_SPECIAL)
        return FAULT_OK
    vmf_anon_prepare(vma)
    page = alloc_anon_folio(vma, address)
    entry = mk_pte(page, prot)
    if vma.vm_flags & VM_WRITE:
        entry = pgtable.pte_mkwrite(pgtable.pte_mkdirty(entry), vma)
    rmap.folio_add_new_anon_rmap(page, vma, address)
    mm.rss["anon"] += 1
    pgtable.set_pte_at(mm, address, entry)
    return FAULT_OK


def vmf_anon_prepare(vma):
    """mm/internal.h: vmf_anon_prepare(), a static inline wrapper (so not in the call tree):
    :func:`__vmf_anon_prepare` (6.18; it ends the VMA read lock on VM_FAULT_RETRY, which the
    model never returns)."""
    return __vmf_anon_prepare(vma)


@traced(name="__vmf_anon_prepare", result=lambda r: 0)
def __vmf_anon_prepare(vma):
    """mm/memory.c: __vmf_anon_prepare(): make sure the VMA has an anon_vma before its first
    anonymous page: nothing to do when it has one, else __anon_vma_prepare() (called
    directly, not through the inline anon_vma_prepare()). Simplification: a fault under the
    per-VMA lock takes the mmap lock here with mmap_read_trylock(), which in the model
    always succeeds, so it never returns VM_FAULT_RETRY."""
    if vma.anon_vma is not None:
        return vma.anon_vma, True
    return rmap.__anon_vma_prepare(vma)


@traced
def alloc_anon_folio(vma, address):
    """mm/memory.c: alloc_anon_folio(): a zeroed order-0 folio for an anonymous fault."""
    return vma.vm_mm.machine.alloc_page("anon")


@traced(hide=("need_zero",))
def folio_prealloc(vma, address, need_zero):
    """mm/memory.c: folio_prealloc(): the new page of a COW (zeroed when copying the zero
    page)."""
    return vma.vm_mm.machine.alloc_page("anon")


@traced
def special_mapping_fault(vma, address):
    """mm/mmap.c: special_mapping_fault() / vvar_fault(): [vdso] and [vvar] pages are kernel
    pages; they are mapped read-only and are not counted as user pages.
    Simplification: every such page maps one reserved kernel frame, mapped here rather than
    by finish_fault()."""
    mm = vma.vm_mm
    page = mm.machine.phys.pages[VDSO_PFN]
    pgtable.set_pte_at(mm, address, mk_pte(page, vm_get_page_prot(vma.vm_flags)) | _PAGE_SPECIAL)
    return VmFault(VM_FAULT_NOPAGE)


@traced
def do_fault(vma, address, flags):
    """mm/memory.c: do_fault(): read -> do_read_fault (with fault-around), private write ->
    do_cow_fault, shared write -> do_shared_fault."""
    if not flags & FAULT_FLAG_WRITE:
        return do_read_fault(vma, address, flags)
    if not vma.vm_flags & VM_SHARED:
        return do_cow_fault(vma, address, flags)
    return do_shared_fault(vma, address, flags)


@traced(result=lambda r: r[0])
def __do_fault(vma, address, flags):
    """mm/memory.c: __do_fault(): ``vma->vm_ops->fault``: filemap_fault() for a file,
    shmem_fault() for shmem, special_mapping_fault() for [vdso]/[vvar].
    Returns ``(vm_fault_t, page)``; the page is None with VM_FAULT_RETRY or NOPAGE."""
    file = vma.vm_file
    if file is None:
        return special_mapping_fault(vma, address), None
    index = vma.linear_page_index(address)
    if file.shmem:
        return filemap.shmem_fault(vma, index)
    return filemap.filemap_fault(vma, index, flags)


@traced
def finish_fault(vma, address, page, entry_bits):
    """mm/memory.c: finish_fault(): map the page the fault handler found (or the COW copy)
    with set_pte_range()."""
    set_pte_range(vma, address, page, entry_bits)
    return FAULT_OK


@traced(hide=("entry_bits",), result=lambda r: None)
def set_pte_range(vma, address, page, entry_bits):
    """mm/memory.c: set_pte_range(): rmap, counters and the PTE for one page: a COW copy is
    a new anonymous page, a page-cache page gains a file mapping."""
    mm = vma.vm_mm
    if page.kind == "anon":
        rmap.folio_add_new_anon_rmap(page, vma, address)
        mm.rss["anon"] += 1
    else:
        page.refcount += 1
        rmap.folio_add_file_rmap_pte(page)
        mm.rss["file"] += 1
    pgtable.set_pte_at(mm, address, mk_pte(page, entry_bits))


@traced
def do_cow_fault(vma, address, flags):
    """mm/memory.c: do_cow_fault(): a private write to a file page: a new anonymous page
    (allocated first), filled from the page-cache page."""
    machine = vma.vm_mm.machine
    vmf_anon_prepare(vma)
    new = folio_prealloc(vma, address, False)
    ret, page = __do_fault(vma, address, flags)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        machine.phys.put_page(new)          # folio_put(): the fault is retried
        return ret
    new.write(0, page.read(0, PAGE_SIZE))   # copy_mc_user_highpage()
    # mm/memory.c: set_pte_range() (6.18): a write fault maps maybe_mkwrite(pte_mkdirty()).
    prot = pgtable.maybe_mkwrite(pgtable.pte_mkdirty(vma_page_prot(vma)), vma)
    return ret | finish_fault(vma, address, new, prot)


@traced
def do_shared_fault(vma, address, flags):
    """mm/memory.c: do_shared_fault(): a shared write maps the page-cache page itself,
    writable and dirty (no ->page_mkwrite in the model's filesystem)."""
    ret, page = __do_fault(vma, address, flags)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    ret |= finish_fault(vma, address, page,
                        pgtable.maybe_mkwrite(pgtable.pte_mkdirty(vma_page_prot(vma)), vma))
    fault_dirty_shared_page(vma, page)
    return ret


@traced(result=lambda r: None)
def fault_dirty_shared_page(vma, page):
    """mm/memory.c: fault_dirty_shared_page(): the written page-cache page is dirty."""
    if not page.dirty and trace._active is not None:
        trace.note(f"pfn {page.pfn:#x} dirty")
    page.dirty = True


#: mm/memory.c: fault_around_bytes (64 KiB): a read fault maps up to 16 cached pages.
FAULT_AROUND_PAGES = 16


@traced
def do_read_fault(vma, address, flags):
    """mm/memory.c: do_read_fault(): fault-around first (do_fault_around maps the pages
    already in the page cache in the 64 KiB-aligned window, within the VMA and the PTE
    table); if that did not map the page, ``->fault`` finds it. A regular file's missing
    page is read with read-around and the fault returns VM_FAULT_RETRY: the retried fault
    maps it and its neighbours by fault-around. A shmem page is allocated and mapped alone."""
    if vma.vm_file is not None:             # should_fault_around(): ->map_pages exists
        ret = do_fault_around(vma, address)
        if ret:
            return ret
    ret, page = __do_fault(vma, address, flags)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    return ret | finish_fault(vma, address, page, vma_page_prot(vma) & ~_PAGE_RW)


@traced
def do_fault_around(vma, address):
    """mm/memory.c: do_fault_around(): the window of up to 16 pages around ``address``
    (within the VMA and its PTE table), handed to filemap_map_pages(). Returns
    VM_FAULT_NOPAGE when the faulting page itself got mapped."""
    nr = FAULT_AROUND_PAGES
    start = max(address & ~(nr * PAGE_SIZE - 1), vma.vm_start,
                address & ~((1 << PAGE_SHIFT + 9) - 1))
    end = min(start + nr * PAGE_SIZE, vma.vm_end, (address | ((1 << PAGE_SHIFT + 9) - 1)) + 1)
    return filemap.filemap_map_pages(vma, address, start, end)


def vma_wants_writenotify(vma):
    """mm/mmap.c: vma_wants_writenotify() (6.18), as the model's filesystems answer it: a
    shared writable mapping of a regular file (its filesystem has ->page_mkwrite and
    writeback); not shmem, which tracks no dirty pages."""
    return ((vma.vm_flags & (VM_SHARED | VM_WRITE)) == (VM_SHARED | VM_WRITE)
            and vma.vm_file is not None and not vma.vm_file.shmem)


def vma_wants_manual_pte_write_upgrade(vma):
    """include/linux/mm.h: vma_wants_manual_pte_write_upgrade() (6.18): mprotect tries to
    make PTEs writable one by one (MM_CP_TRY_CHANGE_WRITABLE) where vm_page_prot cannot
    say writable: a private VM_WRITE mapping (COW), a shared one with write notifications."""
    if vma.vm_flags & VM_SHARED:
        return vma_wants_writenotify(vma)
    return bool(vma.vm_flags & VM_WRITE)


# mm/mprotect.c: can_change_pte_writable() (6.18). Simplification: no soft-dirty or uffd-wp
# tracking, so maybe_change_pte_writable() only refuses PROT_NONE PTEs.
def can_change_pte_writable(vma, pte):
    """May mprotect make this (read-only, present) PTE writable without a write fault? In
    a private mapping only an exclusive anonymous page (the write fault would reuse it); in
    a shared one a dirty PTE (pte_dirty(): D or the saved dirty bit), whose filesystem was
    already notified."""
    if not vma.vm_flags & VM_WRITE or pte_protnone(pte):
        return False
    if not vma.vm_flags & VM_SHARED:
        page = vm_normal_page(vma.vm_mm, pte)
        return page is not None and page.kind == "anon" and page.anon_exclusive
    return pgtable.pte_dirty(pte)


def vma_page_prot(vma):
    """mm/mmap.c: vma_set_page_prot(): a shared writable mapping of a regular file wants
    write notifications (dirty tracking), so its PTEs start read-only; shmem does not."""
    prot = vm_get_page_prot(vma.vm_flags)
    if vma.vm_file is not None and not vma.vm_file.shmem:
        prot &= ~_PAGE_RW
    return prot


@traced(hide=("pte",))
def do_wp_page(vma, address, pte):
    """mm/memory.c: do_wp_page(): a write to a present, write-protected PTE.

    Shared mappings make the page writable (wp_page_shared). A private anonymous page is
    reused when it is PageAnonExclusive or when we hold its only reference
    (wp_can_reuse_anon_folio); otherwise, and for the zero page and file pages, COW copies.
    """
    mm = vma.vm_mm
    page = vm_normal_page(mm, pte)
    if vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        return wp_page_shared(vma, address, pte, page)
    if page is not None and page.kind == "anon":
        if page.anon_exclusive:
            if trace._active is not None:
                trace.note(f"pfn {page.pfn:#x} is PageAnonExclusive: reuse it")
            reuse = True
        else:
            reuse = wp_can_reuse_anon_folio(page, vma)
        if reuse:
            page.anon_exclusive = True
            wp_page_reuse(vma, address, pte, page)
            return FAULT_OK
    return wp_page_copy(vma, address, pte, page)


@traced(hide=("pte",), result=lambda r: None)
def wp_page_reuse(vma, address, pte, page):
    """mm/memory.c: wp_page_reuse(): the page stays; its PTE becomes young, dirty and
    writable (maybe_mkwrite(pte_mkdirty()): a dirty bit saved while it was write-protected
    is back in _PAGE_DIRTY)."""
    entry = pgtable.maybe_mkwrite(pgtable.pte_mkdirty(pgtable.pte_mkyoung(pte)), vma)
    pgtable.set_pte_at(vma.vm_mm, address, entry)


@traced(hide=("pte",))
def wp_page_shared(vma, address, pte, page):
    """mm/memory.c: wp_page_shared(): a shared page is written in place (no ->page_mkwrite
    in the model's filesystem): wp_page_reuse(), then the page is dirty."""
    wp_page_reuse(vma, address, pte, page)
    fault_dirty_shared_page(vma, page)
    return FAULT_OK


@traced
def wp_can_reuse_anon_folio(page, vma):
    """mm/memory.c: wp_can_reuse_anon_folio(): reuse when ours is the only reference (a page
    in the swap cache gives its slot up first); folio_move_anon_rmap() then points the page
    at this VMA's anon_vma so later rmap walks skip the other processes."""
    swapcache = 1 if page.swap is not None else 0
    if page.refcount > 1 + swapcache:
        if trace._active is not None:
            trace.note(f"pfn {page.pfn:#x} refcount {page.refcount}: shared, copy it")
        return False
    if swapcache:
        from . import swap
        swap.folio_free_swap(vma.vm_mm.machine, page)
    if page.refcount != 1:
        return False
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x} refcount 1: reuse it, now filed under "
                   f"{trace.fmt_value(vma.anon_vma)}")
    page.mapping = vma.anon_vma
    return True


@traced(hide=("pte",))
def wp_page_copy(vma, address, pte, old):
    """mm/memory.c: wp_page_copy(): break COW with a new exclusive anonymous page (zeroed when
    the old PTE mapped the zero page)."""
    mm = vma.vm_mm
    phys = mm.machine.phys
    vmf_anon_prepare(vma)
    if old is not None:
        old.refcount += 1            # held across the allocation, as the kernel does
    try:
        new = folio_prealloc(vma, address, old is None)
    finally:
        if old is not None:
            phys.put_page(old)
    if old is not None:
        new.write(0, old.read(0, PAGE_SIZE))     # __wp_page_copy_user()
    rmap.folio_add_new_anon_rmap(new, vma, address)
    entry = pgtable.pte_mkyoung(mk_pte(new, vm_get_page_prot(vma.vm_flags)))
    entry = pgtable.maybe_mkwrite(pgtable.pte_mkdirty(entry), vma)
    # mm/memory.c: wp_page_copy() (6.18): clear and flush the old PTE first
    # (ptep_clear_flush), so that no TLB keeps the old page while the new one is mapped.
    from . import tlb as tlb_mod
    table = pgtable.lookup_pte_table(mm, address)
    tlb_mod.ptep_clear_flush(vma, address, table, pgtable.table_index(address, 3), "COW")
    pgtable.set_pte_at(mm, address, entry)
    mm.rss["anon"] += 1
    if old is not None:
        if old.kind == "file":
            mm.rss["file"] -= 1
        else:
            mm.rss["anon"] -= 1
        rmap.folio_remove_rmap_pte(old)
        phys.put_page(old)
    return FAULT_OK


# -- zapping -----------------------------------------------------------------------------------

@traced(hide=("vmas",), result=lambda n: None)
def unmap_vmas(mm, vmas, start, end):
    """mm/memory.c: unmap_vmas(): zap the PTEs of every VMA in ``vmas`` within
    ``[start, end)``. Returns the number of PTEs cleared."""
    cleared = 0
    for vma in vmas:
        lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
        if lo < hi:
            cleared += unmap_single_vma(vma, lo, hi)
    return cleared


@traced(result=lambda n: None)
def unmap_single_vma(vma, start, end):
    """mm/memory.c: unmap_single_vma() -> unmap_page_range()."""
    return unmap_page_range(vma, start, end)


# mm/memory.c: unmap_page_range() (6.18). Simplification: zap_p4d_range / zap_pud_range /
# zap_pmd_range are not shown; each PTE table is one zap_pte_range() call. The page
# references are batched in the mmu_gather (tlb.MmuGather) and dropped after its flush; a
# dirty file page does not force an early flush (the kernel's delay_rmap force_flush).
@traced(result=lambda n: None)
def unmap_page_range(vma, start, end):
    """Clear the PTEs of ``[start, end)`` PTE table by PTE table. Returns the number cleared."""
    cleared = 0
    batch = []
    for item in list(pgtable.iter_ptes(vma.vm_mm, start, end)):
        if batch and item[1] is not batch[0][1]:
            cleared += zap_pte_range(vma, batch[0][0], batch[-1][0] + PAGE_SIZE, batch)
            batch = []
        batch.append(item)
    if batch:
        cleared += zap_pte_range(vma, batch[0][0], batch[-1][0] + PAGE_SIZE, batch)
    return cleared


@traced(hide=("ptes",), result=lambda n: None)
def zap_pte_range(vma, start, end, ptes):
    """mm/memory.c: zap_pte_range(): clear each PTE and drop what it held: a page's
    mapping and reference (zap_present_ptes), a swap slot's reference (zap_nonpresent_ptes).
    Returns the number of PTEs cleared."""
    mm = vma.vm_mm
    from . import tlb as tlb_mod
    tlb = tlb_mod.current_gather(mm)
    own = tlb is None
    if own:
        tlb = tlb_mod.tlb_gather_mmu(mm, "munmap")
    cleared = 0
    for addr, table, index, pte in ptes:
        pgtable.set_pte(table, index, 0)
        cleared += 1
        if not pte_present(pte):
            from . import swap
            swap.free_swap_and_cache(mm.machine, pte)
            mm.rss["swap"] -= 1
            continue
        tlb_mod.tlb_remove_tlb_entry(tlb, addr)
        page = vm_normal_page(mm, pte)
        if page is None:
            continue
        if page.kind == "file" and pgtable.pte_dirty(pte):
            page.dirty = True               # folio_mark_dirty()
        mm.rss["anon" if page.kind == "anon" else "file"] -= 1
        rmap.folio_remove_rmap_pte(page)
        tlb_mod.tlb_remove_page(tlb, page)      # the reference goes after the flush
    if own:
        tlb_mod.tlb_finish_mmu(tlb)
    return cleared


@traced(result=lambda n: None)
def zap_page_range_single_batched(vma, start, end):
    """mm/memory.c: zap_page_range_single_batched() (MADV_DONTNEED): unmap_single_vma() on
    one range. Returns the number of PTEs cleared."""
    return unmap_single_vma(vma, start, end)


# mm/mprotect.c: change_protection() (6.18). Simplification: change_protection_range() and
# the p4d/pud/pmd levels are not shown; each PTE table is one change_pte_range() call.
@traced
def change_protection(vma, start, end, try_writable):
    """mm/mprotect.c: change_protection(): rewrite the present PTEs of ``[start, end)`` with
    the VMA's new protection (vm_page_prot). With ``try_writable``
    (MM_CP_TRY_CHANGE_WRITABLE) PTEs the write fault would simply make writable become
    writable at once (can_change_pte_writable). Returns the number of PTEs changed."""
    changed = 0
    batch = []
    for item in list(pgtable.iter_ptes(vma.vm_mm, start, end)):
        if batch and item[1] is not batch[0][1]:
            changed += change_pte_range(vma, batch[0][0], batch[-1][0] + PAGE_SIZE, batch,
                                        try_writable)
            batch = []
        batch.append(item)
    if batch:
        changed += change_pte_range(vma, batch[0][0], batch[-1][0] + PAGE_SIZE, batch,
                                    try_writable)
    return changed


@traced(hide=("ptes", "try_writable"))
def change_pte_range(vma, start, end, ptes, try_writable):
    """mm/mprotect.c: change_pte_range(): the PTEs of one table: pte_modify() with the
    VMA's vm_page_prot (a dirty PTE that loses RW keeps its dirtiness in
    _PAGE_SAVED_DIRTY), then pte_mkwrite() where can_change_pte_writable() allows it."""
    mm = vma.vm_mm
    from . import tlb as tlb_mod
    tlb = tlb_mod.current_gather(mm)
    prot = vma_page_prot(vma)               # vma->vm_page_prot (vma_set_page_prot())
    changed = 0
    for addr, table, index, pte in ptes:
        if not pte_present(pte):
            continue
        new = pte_modify(pte, prot)
        if try_writable and not pgtable.pte_write(new) and can_change_pte_writable(vma, new):
            new = pgtable.pte_mkwrite(new, vma)
        if new != pte:
            pgtable.set_pte(table, index, new)
            changed += 1
            if tlb is not None and tlb_mod.pte_needs_flush(pte, new):
                tlb_mod.tlb_flush_pte_range(tlb, addr, PAGE_SIZE)
    return changed


# mm/gup.c: populate_vma_page_range() -> __get_user_pages() (6.18). Simplification: a fault
# that asks for a retry is retried at once with FAULT_FLAG_TRIED (the kernel returns to
# __get_user_pages_locked() to re-take the lock first).
@traced
def populate_vma_page_range(vma, start, end):
    """mm/gup.c: populate_vma_page_range(): fault every page in, as MAP_POPULATE and
    MADV_POPULATE do; private writable mappings take write faults (COW broken now).
    Returns the number of pages faulted."""
    if not vma.vm_flags & VM_ACCESS_FLAGS:
        return 0
    write = (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE
    return __get_user_pages(vma, start, end, write)


@traced(hide=("write",))
def __get_user_pages(vma, start, end, write):
    """mm/gup.c: __get_user_pages(): each page the page tables do not allow yet is faulted
    in by faultin_page()."""
    mm = vma.vm_mm
    n = 0
    for addr in range(start, end, PAGE_SIZE):
        if not _hw_allows(pgtable.get_pte(mm, addr), write):
            faultin_page(vma, addr, write)
            n += 1
    return n


@traced(hide=("write",), result=lambda r: 0)
def faultin_page(vma, address, write):
    """mm/gup.c: faultin_page(): handle_mm_fault() for one page (retried once when it asks)."""
    flags = FaultFlags(FAULT_FLAG_WRITE if write else 0)
    fault = handle_mm_fault(vma, address, flags)
    while fault & VM_FAULT_RETRY:
        flags |= FAULT_FLAG_TRIED
        fault = handle_mm_fault(vma, address, flags)
    return fault
