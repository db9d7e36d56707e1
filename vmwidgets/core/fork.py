"""fork and exit: duplicating and tearing down an address space (kernel/fork.c, mm/mmap.c:
dup_mmap() and exit_mmap(), mm/memory.c: copy_page_range(); Linux 6.18).

fork copies the VMAs; anonymous VMAs that have pages join their parent's anon_vma tree
(``anon_vma_fork``); the page tables are copied only where a fault could not rebuild them
(VMAs with an anon_vma), and every private writable PTE is write-protected in both
processes so that the first write on either side copies (COW). Nothing is copied at fork.

Simplification: no page pinning, so ``folio_try_dup_anon_rmap`` never has to copy at fork.
"""

from . import memory, pgtable, rmap, vma as vma_mod
from .errors import OutOfMemory, ProcessKilled
from .flags import (PAGE_SIZE, VM_DONTCOPY, VM_LOCKED, VM_LOCKONFAULT, VM_MAYWRITE,
                    VM_MIXEDMAP, VM_PFNMAP, VM_SHARED, VM_WIPEONFORK, TASK_SIZE)
from .memory import pte_present, vm_normal_page
from .. import trace
from ..trace import traced


# kernel/fork.c: kernel_clone() -> copy_process() -> copy_mm() -> dup_mm() (6.18).
# Simplification: only the memory part of a new task is modelled.
@traced(hide=("new_task",), result=lambda r: r[0].pid)
def kernel_clone(parent, new_task):
    """kernel/fork.c: kernel_clone(): fork. ``new_task()`` makes the child's task and mm
    (mm_alloc). Returns ``(child, outcome)``."""
    return copy_process(parent, new_task)


@traced(hide=("new_task",), result=lambda r: r[0].pid)
def copy_process(parent, new_task):
    """kernel/fork.c: copy_process(): the new task; its memory comes from copy_mm()."""
    return copy_mm(parent, new_task)


@traced(hide=("new_task",), result=lambda r: 0)
def copy_mm(parent, new_task):
    """kernel/fork.c: copy_mm(): without CLONE_VM the child gets a copy (dup_mm)."""
    return dup_mm(parent, new_task)


@traced(hide=("new_task",), result=lambda r: 0)
def dup_mm(parent, new_task):
    """kernel/fork.c: dup_mm(): a new mm (mm_init() allocates its PGD) filled by
    dup_mmap(). If that fails (out of memory), the half-built mm is torn down again
    (mmput()) and the error goes up."""
    child = new_task()
    try:
        outcome = dup_mmap(child, parent)
    except (OutOfMemory, ProcessKilled):
        mmput(child)
        raise
    return child, outcome


def is_cow_mapping(vm_flags):
    """include/linux/mm.h: a private mapping that may become writable."""
    return (vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


@traced(result=lambda r: 0)
def dup_mmap(child, parent):
    """mm/mmap.c: dup_mmap(): give ``child`` a copy of ``parent``'s address space: for each
    VMA, vm_area_dup(), anon_vma_fork(), then copy_page_range().

    Returns a list of sentences saying what happened to each VMA.
    """
    mm, oldmm = child.mm, parent.mm
    for attr in ("mmap_base", "task_size", "start_code", "end_code", "start_data", "end_data",
                 "start_brk", "brk", "start_stack"):
        setattr(mm, attr, getattr(oldmm, attr))
    outcome = []
    try:
        _dup_vmas(mm, oldmm, outcome)
    finally:
        # mm/mmap.c: dup_mmap() (6.18) ends with flush_tlb_mm(oldmm), success or not: the
        # parent's PTEs were write-protected for COW.
        from . import tlb as tlb_mod
        tlb_mod.flush_tlb_mm(oldmm, "fork")
    return outcome


def _dup_vmas(mm, oldmm, outcome):
    """The loop of dup_mmap() over the parent's VMAs."""
    for mpnt in list(oldmm.mm_mt):
        rng = f"{mpnt.vm_start:#x}-{mpnt.vm_end:#x}"
        if mpnt.vm_flags & VM_DONTCOPY:
            outcome.append(f"{rng}: not copied (MADV_DONTFORK)")
            continue
        tmp = mpnt.dup()
        tmp.vm_mm = mm
        tmp.id = mm.machine.new_id("vma")
        tmp.anon_vma = None
        if tmp.vm_flags & VM_WIPEONFORK:
            note = "wiped (MADV_WIPEONFORK): the child starts with empty memory here"
        else:
            reused = rmap.anon_vma_fork(tmp, mpnt)
            note = ("no anon_vma yet: nothing to share" if mpnt.anon_vma is None else
                    "reused an idle anon_vma of the family" if reused else
                    "joined the parent's anon_vma tree with a new anon_vma of its own")
        tmp.vm_flags &= ~(VM_LOCKED | VM_LOCKONFAULT)
        if tmp.vm_file is not None:
            tmp.vm_file.mapping.i_mmap.add(tmp)
        mm.insert(tmp)
        copied = 0
        if not tmp.vm_flags & VM_WIPEONFORK:
            copied = copy_page_range(tmp, mpnt)
        outcome.append(f"{rng}: {note}; {copied} PTE(s) copied")


def vma_needs_copy(src_vma):
    """mm/memory.c: vma_needs_copy(): only where a fault could not fill the PTEs again."""
    return bool(src_vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)) or src_vma.anon_vma is not None


@traced(result=lambda r: 0)
def copy_page_range(dst_vma, src_vma):
    """mm/memory.c: copy_page_range(): nothing to do unless vma_needs_copy(); then the
    PTEs, table by table (copy_pte_range). Returns the number of PTEs copied."""
    if not vma_needs_copy(src_vma):
        return 0
    n = 0
    batch = []
    for item in list(pgtable.iter_ptes(src_vma.vm_mm, src_vma.vm_start, src_vma.vm_end)):
        if batch and item[1] is not batch[0][1]:
            n += copy_pte_range(dst_vma, src_vma, batch[0][0], batch[-1][0] + PAGE_SIZE, batch)
            batch = []
        batch.append(item)
    if batch:
        n += copy_pte_range(dst_vma, src_vma, batch[0][0], batch[-1][0] + PAGE_SIZE, batch)
    return n


# mm/memory.c: copy_pte_range() (6.18). Simplification: copy_p4d_range / copy_pud_range /
# copy_pmd_range are not shown, nor copy_present_ptes() for each PTE (its changes are).
@traced(hide=("src_vma", "ptes"))
def copy_pte_range(dst_vma, src_vma, addr, end, ptes):
    """Copy the PTEs of one source table: present PTEs share the page (one more mapping and
    reference; private writable ones are write-protected in both processes), swap PTEs
    share the slot (copy_nonpresent_pte). Returns the number copied."""
    src_mm, dst_mm = src_vma.vm_mm, dst_vma.vm_mm
    cow = is_cow_mapping(src_vma.vm_flags)
    n = 0
    current = None
    for addr, table, index, _ in ptes:
        if table is not current:
            # Allocate the child's table before reading this table's PTEs: allocating may
            # reclaim and so change them (the kernel holds both PTE locks instead).
            pgtable.lookup_pte_table(dst_mm, addr, alloc=True)
            current = table
        pte = table.entries.get(index)
        if not pte:
            continue
        if not pte_present(pte):
            from . import swap
            pte = swap.copy_swap_pte(src_mm, table, index, pte)
            pgtable.set_pte_at(dst_mm, addr, pte)
            n += 1
            continue
        page = vm_normal_page(src_mm, pte)
        if page is not None:
            page.mapcount += 1
            page.refcount += 1
            if trace._active is not None:
                trace.note(f"pfn {page.pfn:#x}: mapcount {page.mapcount - 1} -> "
                           f"{page.mapcount}, refcount {page.refcount}"
                           + (", no longer exclusive" if page.anon_exclusive else ""))
            if page.kind == "anon":
                page.anon_exclusive = False     # folio_try_dup_anon_rmap_ptes()
                dst_mm.rss["anon"] += 1
            else:
                dst_mm.rss["file"] += 1
        # mm/memory.c: __copy_present_ptes() (6.18): a COW mapping's writable PTE is
        # write-protected in both processes (wrprotect_ptes() -> ptep_set_wrprotect() in the
        # parent, pte_wrprotect() for the child): a dirty one keeps its dirtiness in
        # _PAGE_SAVED_DIRTY. A shared mapping's PTE is clean in the child; it starts old.
        if cow and pgtable.pte_write(pte):
            wrprotected = pgtable.pte_wrprotect(pte)
            table.entries[index] = wrprotected
            if trace._active is not None:
                trace.note(f"parent pte {addr:#x}: {pgtable.pte_text(pte)} -> "
                           f"{pgtable.pte_text(wrprotected)} (COW)")
            pte = wrprotected
        if src_vma.vm_flags & VM_SHARED:
            pte = pgtable.pte_mkclean(pte)
        pgtable.set_pte_at(dst_mm, addr, pgtable.pte_mkold(pte))
        n += 1
    return n


# kernel/exit.c: do_exit() -> exit_mm() -> mmput() -> __mmput() (6.18). Simplification: only
# the memory part of an exit is modelled.
@traced(hide=("proc",))
def do_exit(proc):
    """kernel/exit.c: do_exit(): the task's address space goes (exit_mm). Returns a
    sentence on what was freed."""
    return exit_mm(proc)


@traced(hide=("proc",))
def exit_mm(proc):
    """kernel/exit.c: exit_mm(): the task lets go of its mm (enter_lazy_tlb: its CPU keeps
    it loaded, lazily) and drops its reference (mmput)."""
    from . import tlb as tlb_mod
    tlb_mod.exit_tasks(proc)
    return mmput(proc)


@traced(hide=("proc",), result=lambda r: None)
def mmput(proc):
    """kernel/fork.c: mmput(): the last user of the mm is gone: __mmput()."""
    return __mmput(proc)


@traced(name="__mmput", hide=("proc",), result=lambda r: None)
def __mmput(proc):
    """kernel/fork.c: __mmput(): exit_mmap(), then mmdrop() frees the PGD (__mmdrop)."""
    outcome = exit_mmap(proc)
    freed = __mmdrop(proc.mm)
    return f"{outcome}, {freed} page-table page(s) freed"


@traced(name="__mmdrop", result=lambda r: None)
def __mmdrop(mm):
    """kernel/fork.c: __mmdrop(): mm_free_pgd() -> pgd_free(). Returns the tables freed."""
    return pgtable.free_all_pgtables(mm)


@traced(hide=("proc",), result=lambda r: None)
def exit_mmap(proc):
    """mm/mmap.c: exit_mmap(): unmap everything (unmap_vmas), free the page tables below the
    PGD (free_pgtables), free the VMAs (remove_vma)."""
    mm = proc.mm
    vmas = list(mm.mm_mt)
    # mm/mmap.c: exit_mmap() (6.18): tlb_gather_mmu_fullmm() ... tlb_finish_mmu(): one full
    # flush (with freed_tables) before the pages and page tables are freed.
    from . import tlb as tlb_mod
    tlb = tlb_mod.tlb_gather_mmu(mm, "exit", fullmm=True)
    memory.unmap_vmas(mm, vmas, 0, TASK_SIZE)
    vma_mod.free_pgtables(mm, vmas, 0, TASK_SIZE, 0, 0)
    tlb_mod.tlb_finish_mmu(tlb)
    for vma in vmas:
        mm.remove(vma)
        vma_mod.remove_vma(vma)
    return f"{len(vmas)} VMA(s) unmapped"
