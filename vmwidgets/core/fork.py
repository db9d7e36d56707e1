"""fork and exit: duplicating and tearing down an address space (kernel/fork.c, mm/mmap.c:
dup_mmap() and exit_mmap(), mm/memory.c: copy_page_range(); Linux 6.18).

fork copies the VMAs; anonymous VMAs that have pages join their parent's anon_vma tree
(``anon_vma_fork``); the page tables are copied only where a fault could not rebuild them
(VMAs with an anon_vma), and every private writable PTE is write-protected in both
processes so that the first write on either side copies (COW). Nothing is copied at fork.

Simplification: no page pinning, so ``folio_try_dup_anon_rmap`` never has to copy at fork.
"""

from . import pgtable, rmap, vma as vma_mod
from .flags import (_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_RW, VM_DONTCOPY, VM_LOCKED,
                    VM_LOCKONFAULT, VM_MAYWRITE, VM_MIXEDMAP, VM_PFNMAP, VM_SHARED,
                    VM_WIPEONFORK, TASK_SIZE)
from .memory import pte_present, vm_normal_page


def is_cow_mapping(vm_flags):
    """include/linux/mm.h: a private mapping that may become writable."""
    return (vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def dup_mmap(child, parent):
    """mm/mmap.c: dup_mmap(): give ``child`` a copy of ``parent``'s address space.

    Returns a list of sentences saying what happened to each VMA.
    """
    mm, oldmm = child.mm, parent.mm
    for attr in ("mmap_base", "task_size", "start_code", "end_code", "start_data", "end_data",
                 "start_brk", "brk", "start_stack"):
        setattr(mm, attr, getattr(oldmm, attr))
    outcome = []
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
        if not tmp.vm_flags & VM_WIPEONFORK and vma_needs_copy(mpnt):
            copied = copy_page_range(tmp, mpnt)
        outcome.append(f"{rng}: {note}; {copied} PTE(s) copied")
    return outcome


def vma_needs_copy(src_vma):
    """mm/memory.c: vma_needs_copy(): only where a fault could not fill the PTEs again."""
    return bool(src_vma.vm_flags & (VM_PFNMAP | VM_MIXEDMAP)) or src_vma.anon_vma is not None


def copy_page_range(dst_vma, src_vma):
    """mm/memory.c: copy_page_range() -> copy_present_pte() / copy_nonpresent_pte()."""
    src_mm, dst_mm = src_vma.vm_mm, dst_vma.vm_mm
    cow = is_cow_mapping(src_vma.vm_flags)
    n = 0
    current = None
    for addr, table, index, _ in list(pgtable.iter_ptes(src_mm, src_vma.vm_start,
                                                        src_vma.vm_end)):
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
            if page.kind == "anon":
                page.anon_exclusive = False     # folio_try_dup_anon_rmap_ptes()
                dst_mm.rss["anon"] += 1
            else:
                dst_mm.rss["file"] += 1
        if cow and pte & _PAGE_RW:
            table.entries[index] = pte & ~_PAGE_RW   # wrprotect in the parent too
            pte &= ~_PAGE_RW
        if src_vma.vm_flags & VM_SHARED:
            pte &= ~_PAGE_DIRTY
        pgtable.set_pte_at(dst_mm, addr, pte & ~_PAGE_ACCESSED)
        n += 1
    return n


def exit_mmap(proc):
    """mm/mmap.c: exit_mmap(): unmap everything, free the page tables, free the VMAs."""
    mm = proc.mm
    vmas = list(mm.mm_mt)
    for vma in vmas:
        mm.remove(vma)
    vma_mod.unmap_region(mm, vmas, 0, TASK_SIZE)
    freed = pgtable.free_all_pgtables(mm)
    return f"{len(vmas)} VMA(s) unmapped, {freed} page-table page(s) freed"
