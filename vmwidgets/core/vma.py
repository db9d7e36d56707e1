"""Merging, splitting and unmapping VMAs (mm/vma.c, Linux 6.18).

The two merge entry points are the kernel's: :func:`vma_merge_new_range` for a range
that is not mapped yet (mmap, brk, mremap's copy) and :func:`vma_merge_existing_range`
for part or all of an existing VMA whose flags change (mprotect, madvise).
The anon_vma rule is the 6.16+ one (commit "mm/vma: fix incorrectly disallowed anonymous
VMA merges"): only VMAs forked from a parent that still shares pages refuse to merge.

Simplification: no mempolicy, userfaultfd context, anon names or sticky flags; every
VMA here is compared on flags, file, anon_vma and page offset only.
"""

from dataclasses import dataclass, field

from . import filemap, memory, pgtable, rmap
from .errors import ENOMEM, EINVAL, syscall_error
from .flags import PAGE_SHIFT, VM_SOFTDIRTY, VM_SPECIAL, TASK_SIZE, page_align
from ..trace import traced


@dataclass
class VmaMergeStruct:
    """``struct vma_merge_struct`` (mm/vma.h): a proposed range and its neighbours."""

    mm: object
    prev: object
    next: object
    start: int
    end: int
    pgoff: int
    flags: int
    file: object = None
    anon_vma: object = None
    middle: object = None
    copied_from: object = None
    just_expand: bool = False
    target: object = None
    outcome: str = ""          # which merge happened, in words: for narration and tests

    def __trace__(self):
        return f"vmg[{self.start:#x}-{self.end:#x}]"


def vma_had_uncowed_parents(vma):
    """mm/vma.c: a forked VMA whose chain still has the parent's anon_vmas on it."""
    return vma is not None and vma.anon_vma is not None and len(vma.anon_vma_chain) != 1


def is_mergeable_vma(vmg, merge_next):
    """mm/vma.c: is_mergeable_vma(): same flags (VM_SOFTDIRTY aside) and the same file:
    ``vma->vm_file != vmg->file`` compares the open file description (:class:`OpenFile`,
    ``struct file``), not the inode, so mappings made through two open(2)s of one file never
    merge, while a dup()'d or fork-inherited fd counts as the same file."""
    vma = vmg.next if merge_next else vmg.prev
    return not ((vma.vm_flags ^ vmg.flags) & ~VM_SOFTDIRTY) and vma.vm_file is vmg.file


def is_mergeable_anon_vma(vmg, merge_next):
    """mm/vma.c: is_mergeable_anon_vma() as of 6.16."""
    tgt = vmg.next if merge_next else vmg.prev
    src = vmg.middle
    if tgt.anon_vma is None and vmg.anon_vma is not None:
        # We would dup the source's anon_vma into the target.
        return not vma_had_uncowed_parents(src) and not vma_had_uncowed_parents(vmg.copied_from)
    if tgt.anon_vma is not None and vmg.anon_vma is None:
        return not vma_had_uncowed_parents(tgt)
    return tgt.anon_vma is vmg.anon_vma


def can_vma_merge_before(vmg):
    """Can the range merge in front of ``vmg.next``? (mm/vma.c)"""
    pglen = (vmg.end - vmg.start) >> PAGE_SHIFT
    return (is_mergeable_vma(vmg, True) and is_mergeable_anon_vma(vmg, True)
            and vmg.next.vm_pgoff == vmg.pgoff + pglen)


def can_vma_merge_after(vmg):
    """Can the range merge after ``vmg.prev``? (mm/vma.c)"""
    prev = vmg.prev
    return (is_mergeable_vma(vmg, False) and is_mergeable_anon_vma(vmg, False)
            and prev.vm_pgoff + prev.pages() == vmg.pgoff)


def can_vma_merge_left(vmg):
    return vmg.prev is not None and vmg.prev.vm_end == vmg.start and can_vma_merge_after(vmg)


def can_vma_merge_right(vmg, can_merge_left):
    """Merging with next; when prev merges too, prev's and next's anon_vmas must agree."""
    nxt = vmg.next
    if nxt is None or vmg.end != nxt.vm_start or not can_vma_merge_before(vmg):
        return False
    if not can_merge_left:
        return True
    a, b = vmg.prev.anon_vma, nxt.anon_vma
    return a is None or b is None or a is b


def can_merge_remove_vma(vma):
    """A VMA with a ``vm_ops->close`` (special mappings) may not be removed by a merge."""
    return vma.vm_ops is None


# -- the tree updates ----------------------------------------------------------------------

def _remove_merged(mm, keep, gone):
    """vma_complete(): a VMA swallowed by a merge leaves the tree and its anon_vmas."""
    mm.remove(gone)
    if gone.vm_file is not None:
        gone.vm_file.mapping.i_mmap.discard(gone)
    if gone.anon_vma_chain:
        rmap.unlink_anon_vmas(gone)


@traced(null=True)
def vma_merge_new_range(vmg):
    """mm/vma.c: vma_merge_new_range(): grow a neighbour over ``[start, end)`` if possible
    (:func:`vma_expand`).

    Returns the VMA that now covers the range, or ``None`` (then the caller makes a new VMA).
    """
    mm, prev, nxt = vmg.mm, vmg.prev, vmg.next
    if vmg.flags & VM_SPECIAL or (prev is None and nxt is None):
        return None
    left = can_vma_merge_left(vmg)
    right = not vmg.just_expand and can_vma_merge_right(vmg, left)
    if not left and not right:
        return None
    start, end, pgoff = vmg.start, vmg.end, vmg.pgoff
    if right:
        end = nxt.vm_end
        target = nxt
    if left:
        start, pgoff, target = prev.vm_start, prev.vm_pgoff, prev
        if right and not can_merge_remove_vma(nxt):
            end = vmg.end
            right = False
    vma_expand(vmg, target, start, end, pgoff, right and target is not nxt)
    vmg.target = target
    vmg.outcome = ("merged with both neighbours" if left and right else
                   "merged with the previous VMA" if left else "merged with the next VMA")
    return target


@traced(hide=("vmg", "start", "end", "pgoff", "remove_next"), result=lambda r: 0)
def vma_expand(vmg, target, start, end, pgoff, remove_next):
    """mm/vma.c: vma_expand(): ``target`` grows to ``[start, end)``, swallowing the next VMA
    when ``remove_next`` (whose pages it takes over: dup_anon_vma())."""
    mm, nxt = vmg.mm, vmg.next
    if remove_next:
        rmap.dup_anon_vma(target, nxt)
    if vmg.copied_from is not None:
        rmap.dup_anon_vma(target, vmg.copied_from)
    if remove_next:
        _remove_merged(mm, target, nxt)
    mm.set_range(target, start, end, pgoff)


@traced(null=True)
def vma_merge_existing_range(vmg):
    """mm/vma.c: vma_merge_existing_range(): merge ``[start, end)`` of ``vmg.middle``, whose
    flags become ``vmg.flags``, with prev and/or next. Returns the merged VMA or ``None``."""
    mm, middle, prev = vmg.mm, vmg.middle, vmg.prev
    start, end = vmg.start, vmg.end
    left_side = start == middle.vm_start
    right_side = end == middle.vm_end
    if vmg.flags & VM_SPECIAL or (not left_side and not right_side):
        return None
    merge_left = left_side and can_vma_merge_left(vmg)
    nxt = None
    merge_right = False
    if right_side:
        nxt = vmg.next = mm.vma_next(middle)
        merge_right = can_vma_merge_right(vmg, merge_left)
    if not merge_left and not merge_right:
        return None
    remove_middle = left_side and right_side
    if remove_middle and not can_merge_remove_vma(middle):
        return None
    if merge_left and merge_right and not can_merge_remove_vma(nxt):
        merge_right = False
    pglen = (end - start) >> PAGE_SHIFT

    if merge_left and merge_right:
        # |<------------------->|   prev grows over middle and next
        # |-----*********-------|
        rmap.dup_anon_vma(prev, nxt if nxt.anon_vma is not None else middle)
        _remove_merged(mm, prev, middle)
        _remove_merged(mm, prev, nxt)
        mm.set_range(prev, prev.vm_start, nxt.vm_end, prev.vm_pgoff)
        merged, vmg.outcome = prev, "merged with both neighbours"
    elif merge_left:
        # |<------->|      prev grows; middle shrinks from below or goes
        # |-----*****----|
        rmap.dup_anon_vma(prev, middle)
        if remove_middle:
            _remove_merged(mm, prev, middle)
        else:
            mm.set_range(middle, end, middle.vm_end, middle.vm_pgoff + pglen)
        mm.set_range(prev, prev.vm_start, end, prev.vm_pgoff)
        merged = prev
        vmg.outcome = "merged with the previous VMA" + (
            "" if remove_middle else "; the rest of the VMA shrank")
    else:
        #       |<------->|   next grows down; middle shrinks from above or goes
        # |-----*****-----|
        rmap.dup_anon_vma(nxt, middle)
        if remove_middle:
            _remove_merged(mm, nxt, middle)
        else:
            mm.set_range(middle, middle.vm_start, start, middle.vm_pgoff)
        mm.set_range(nxt, start, nxt.vm_end, nxt.vm_pgoff - ((nxt.vm_start - start) >> PAGE_SHIFT))
        merged = nxt
        vmg.outcome = "merged with the next VMA" + (
            "" if remove_middle else "; the rest of the VMA shrank")
    vmg.target = merged
    return merged


@traced(name="__split_vma", hide=("mm",), result=lambda r: 0)
def __split_vma(mm, vma, addr, new_below):
    """mm/vma.c: __split_vma(): cut ``vma`` at ``addr``; the new object is the lower part if
    ``new_below``, else the upper. Returns the new VMA. No map_count check."""
    assert vma.vm_start < addr < vma.vm_end, (vma, hex(addr))
    new = vma.dup()
    if new_below:
        new.vm_end = addr
    else:
        new.vm_start = addr
        new.vm_pgoff += (addr - vma.vm_start) >> PAGE_SHIFT
    rmap.anon_vma_clone(new, vma)      # a no-op for a VMA without anon_vma
    if new_below:
        mm.set_range(vma, addr, vma.vm_end, vma.vm_pgoff + ((addr - new.vm_start) >> PAGE_SHIFT))
    else:
        mm.set_range(vma, vma.vm_start, addr, vma.vm_pgoff)
    mm.insert(new)
    if new.vm_file is not None:
        new.vm_file.mapping.i_mmap.add(new)
    return new


@traced(hide=("mm", "syscall"), result=lambda r: 0)
def split_vma(mm, vma, addr, new_below, syscall):
    """mm/vma.c: split_vma(): refuses with ENOMEM at ``vm.max_map_count``."""
    if mm.map_count >= mm.machine.sysctl["vm.max_map_count"]:
        raise syscall_error(ENOMEM, syscall, (
            f"splitting the VMA at {addr:#x} would exceed vm.max_map_count "
            f"({mm.machine.sysctl['vm.max_map_count']} VMAs)"))
    return __split_vma(mm, vma, addr, new_below)


@traced(name="vma_modify_flags", hide=("mm", "syscall"), result=lambda r: r[0])
def vma_modify(mm, prev, vma, start, end, new_flags, syscall):
    """mm/vma.c: vma_modify_flags(): merge ``[start, end)`` of ``vma`` with a neighbour under
    its new flags, or split it so that exactly that range is one VMA.

    Returns ``(vma, outcome)``: the VMA now covering the range (its flags are set by the
    caller) and a sentence saying what happened.
    """
    vmg = VmaMergeStruct(mm=mm, prev=prev, next=None, start=start, end=end,
                         pgoff=vma.vm_pgoff + ((start - vma.vm_start) >> PAGE_SHIFT),
                         flags=new_flags, file=vma.vm_file, anon_vma=vma.anon_vma, middle=vma)
    return _vma_modify(vmg, syscall)


vma_modify_flags = vma_modify


@traced(name="vma_modify", hide=("syscall",), result=lambda r: r[0])
def _vma_modify(vmg, syscall):
    """mm/vma.c: vma_modify(): try vma_merge_existing_range(), else split_vma() at the
    edges of the range."""
    mm, vma, start, end = vmg.mm, vmg.middle, vmg.start, vmg.end
    merged = vma_merge_existing_range(vmg)
    if merged is not None:
        return merged, vmg.outcome
    outcome = []
    if vma.vm_start < start:
        split_vma(mm, vma, start, True, syscall)
        outcome.append(f"split at {start:#x}")
    if vma.vm_end > end:
        split_vma(mm, vma, end, False, syscall)
        outcome.append(f"split at {end:#x}")
    return vma, " and ".join(outcome) or "changed in place"


# -- munmap ------------------------------------------------------------------------------------

@dataclass
class VmaMunmapStruct:
    """``struct vma_munmap_struct`` (mm/vma.h): the VMAs being unmapped from
    ``[start, end)``; ``clear_ptes`` until their PTEs and page tables are gone."""

    mm: object
    start: int
    end: int
    vmas: list = field(default_factory=list)
    clear_ptes: bool = True

    def __trace__(self):
        return f"vms[{self.start:#x}-{self.end:#x}]"


@traced(hide=("mm", "syscall"))
def do_vmi_munmap(mm, start, length, syscall="munmap"):
    """mm/vma.c: do_vmi_munmap(): check the arguments, then unmap ``[start, start+len)``."""
    if start & ((1 << PAGE_SHIFT) - 1):
        raise syscall_error(EINVAL, syscall, f"address {start:#x} is not page aligned")
    if start > TASK_SIZE or length > TASK_SIZE - start:
        raise syscall_error(EINVAL, syscall, "the range goes past the end of user space")
    end = start + page_align(length)
    if end == start:
        raise syscall_error(EINVAL, syscall, "length is 0")
    if not mm.vmas_in(start, end):          # vma_find(): nothing mapped there
        return 0
    do_vmi_align_munmap(mm, start, end, syscall)
    return 0


@traced(hide=("mm", "syscall"), result=lambda detached: 0)
def do_vmi_align_munmap(mm, start, end, syscall):
    """mm/vma.c: do_vmi_align_munmap(): vms_gather_munmap_vmas() splits the VMAs at the edges
    (the pieces outside the range are the new objects) and takes the VMAs out of the tree;
    vms_complete_munmap_vmas() zaps their pages, frees the page tables no VMA still needs
    and frees the VMAs. Returns the list of removed VMAs (already detached)."""
    vms = VmaMunmapStruct(mm, start, end)
    vms_gather_munmap_vmas(vms, syscall)
    vms_complete_munmap_vmas(vms)
    return vms.vmas


# mm/vma.c: vms_gather_munmap_vmas() (6.18). Simplification: the VMAs leave the tree here
# (the kernel moves them to a side tree here and clears their range in the main tree just
# after, in do_vmi_align_munmap(), or overwrites it with the new VMA in __mmap_region()).
@traced(hide=("syscall",))
def vms_gather_munmap_vmas(vms, syscall):
    """Split the first and last VMA at the range's edges (ENOMEM when the split of one VMA
    in the middle would pass vm.max_map_count) and detach the VMAs of the range."""
    mm, start, end = vms.mm, vms.start, vms.end
    vmas = mm.vmas_in(start, end)
    first = vmas[0]
    if first.vm_start < start:
        if end < first.vm_end and mm.map_count >= mm.machine.sysctl["vm.max_map_count"]:
            raise syscall_error(ENOMEM, syscall, (
                f"unmapping the middle of a VMA needs one more VMA than vm.max_map_count "
                f"({mm.machine.sysctl['vm.max_map_count']}) allows"))
        __split_vma(mm, first, start, True)
    last = vmas[-1]
    if last.vm_end > end:
        __split_vma(mm, last, end, False)
    vms.vmas = mm.vmas_in(start, end)
    for vma in vms.vmas:
        mm.remove(vma)
    return 0


@traced(result=lambda r: None)
def vms_clear_ptes(vms):
    """mm/vma.c: vms_clear_ptes(): unmap_vmas() zaps the PTEs of the detached VMAs, then
    free_pgtables() frees the page tables between the surviving neighbours."""
    if not vms.clear_ptes:
        return
    mm, start, end = vms.mm, vms.start, vms.end
    from . import tlb as tlb_mod
    cause = mm.machine.syscall_name
    tlb = tlb_mod.tlb_gather_mmu(mm, cause if cause in tlb_mod.CAUSES else "munmap")
    memory.unmap_vmas(mm, vms.vmas, start, end)
    prev = mm.find_vma_prev(start)[1]
    nxt = mm.find_vma(start)
    floor = prev.vm_end if prev is not None else 0
    ceiling = nxt.vm_start if nxt is not None else 0
    free_pgtables(mm, vms.vmas, start, end, floor, ceiling)
    tlb_mod.tlb_finish_mmu(tlb)
    vms.clear_ptes = False


@traced(result=lambda r: None)
def vms_clean_up_area(vms):
    """mm/vma.c: vms_clean_up_area(): for a MAP_FIXED mmap over old VMAs, clear their PTEs
    while the new mapping is being set up."""
    vms_clear_ptes(vms)


@traced(result=lambda r: None)
def vms_complete_munmap_vmas(vms):
    """mm/vma.c: vms_complete_munmap_vmas(): clear the PTEs if not done yet, then free each
    detached VMA (remove_vma)."""
    if not vms.vmas:
        return
    vms_clear_ptes(vms)
    for vma in vms.vmas:
        remove_vma(vma)


def unmap_region(mm, detached, start, end):
    """mm/vma.c: unmap_region() for VMAs already out of the tree: zap the PTEs, free the
    page tables between the surviving neighbours, then free the VMAs (remove_vma)."""
    vms = VmaMunmapStruct(mm, start, end, list(detached))
    vms_complete_munmap_vmas(vms)


@traced(hide=("vmas", "start", "end"), result=lambda r: None)
def free_pgtables(mm, vmas, start, end, floor, ceiling):
    """mm/memory.c: free_pgtables(): unlink each VMA from its anon_vmas
    (unlink_anon_vmas) and from its file (unlink_file_vma_batch_add), then free the page
    tables of ``[start, end)`` that lie within ``[floor, ceiling)`` (free_pgd_range)."""
    for vma in vmas:
        rmap.unlink_anon_vmas(vma)
        if vma.vm_file is not None:
            vma.vm_file.mapping.i_mmap.discard(vma)
    pgtable.free_pgd_range(mm, start, end, floor, ceiling)


@traced(result=lambda r: None)
def remove_vma(vma):
    """mm/vma.c: remove_vma(): close and free the VMA; dropping its file reference releases
    an anonymous shared (shmem) region with its last mapping."""
    if vma.vm_file is not None:
        filemap.shmem_release(vma.vm_mm.machine, vma.vm_file)
