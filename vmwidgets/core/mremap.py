"""mremap (mm/mremap.c after the 6.16 ``vma_remap_struct`` rework, with 6.17's moves of
several VMAs at once; mm/vma.c: copy_vma()).

A move copies the VMA to its new place (merging there if it can), moves the page-table
entries (the pages stay where they are and keep their ``index``), then unmaps the old
range. An anonymous VMA that was never faulted takes the page offset of its new address,
so it can merge there; a faulted one keeps its old offset.
"""

from dataclasses import dataclass

from . import pgtable, vma as vma_mod
from .errors import EFAULT, EINVAL, ENOMEM, syscall_error
from .flags import (MAP_FIXED, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
                    PAGE_SHIFT, PMD_SHIFT, TASK_SIZE, ULONG_MAX, VM_ACCOUNT, VM_DONTEXPAND,
                    VM_LOCKED, VM_LOCKONFAULT, VM_MAYSHARE, VM_PFNMAP, VM_SHARED,
                    offset_in_page, page_align)
from .mmap import get_unmapped_area, vm_enough_memory
from .mm_types import VmAreaStruct, vm_flags_reset
from .. import trace
from ..trace import traced


def _fail(err, why):
    return syscall_error(err, "mremap", why)


@dataclass
class VmaRemapStruct:
    """``struct vma_remap_struct`` (mm/mremap.c)."""

    addr: int
    old_len: int
    new_len: int
    flags: int
    new_addr: int
    vma: object = None

    def implies_new_addr(self):
        return bool(self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))

    @property
    def remap_type(self):
        if self.old_len == self.new_len:
            return "no_resize"
        return "shrink" if self.old_len > self.new_len else "expand"

    @property
    def delta(self):
        return abs(self.new_len - self.old_len)

    def __trace__(self):
        return (f"vrm[{self.addr:#x}+{self.old_len:#x} -> {self.new_addr:#x}+"
                f"{self.new_len:#x}]")


@traced(hide=("proc",), result=lambda r: r[0])
def do_mremap(proc, addr, old_len, new_len, flags, new_addr):
    """mm/mremap.c: do_mremap(). Returns ``(address, outcome)``."""
    vrm = VmaRemapStruct(addr, page_align(old_len), page_align(new_len), flags, new_addr)
    check_mremap_params(proc.mm, vrm, old_len, new_len)
    mm = proc.mm
    if vrm.flags & MREMAP_FIXED and vrm.old_len == vrm.new_len:
        return remap_move(proc, vrm)
    vrm.vma = mm.vma_lookup(vrm.addr)
    check_prep_vma(proc, vrm)
    if vrm.implies_new_addr():
        return mremap_to(proc, vrm)
    return mremap_at(proc, vrm)


def check_mremap_params(mm, vrm, raw_old, raw_new):
    flags = vrm.flags
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        raise _fail(EINVAL, f"unknown flags {flags:#x}")
    if offset_in_page(vrm.addr):
        raise _fail(EINVAL, f"old address {vrm.addr:#x} is not page aligned")
    if raw_old and not vrm.old_len or raw_new and not vrm.new_len:
        raise _fail(EINVAL, "a length wraps around when rounded up to a page")
    if not vrm.new_len:
        raise _fail(EINVAL, "new length is 0")
    if vrm.new_len > TASK_SIZE:
        raise _fail(EINVAL, "new length is larger than the address space")
    if not vrm.implies_new_addr():
        return
    if vrm.new_addr > TASK_SIZE - vrm.new_len:
        raise _fail(EINVAL, "the new range goes past the end of user space")
    if offset_in_page(vrm.new_addr):
        raise _fail(EINVAL, f"new address {vrm.new_addr:#x} is not page aligned")
    if not flags & MREMAP_MAYMOVE:
        raise _fail(EINVAL, "MREMAP_FIXED and MREMAP_DONTUNMAP need MREMAP_MAYMOVE")
    if flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        raise _fail(EINVAL, "MREMAP_DONTUNMAP cannot resize")
    if vrm.addr < vrm.new_addr + vrm.new_len and vrm.new_addr < vrm.addr + vrm.old_len:
        raise _fail(EINVAL, "the new range overlaps the old one")
    max_count = mm.machine.sysctl["vm.max_map_count"]
    if mm.map_count + 2 >= max_count - 3:
        raise _fail(ENOMEM, "a move could need more VMAs than vm.max_map_count allows")


@traced(hide=("proc",), result=lambda r: 0)
def check_prep_vma(proc, vrm):
    """mm/mremap.c: check_prep_vma(): the source must be one mapped VMA range."""
    vma = vrm.vma
    if vma is None:
        raise _fail(EFAULT, f"old address {vrm.addr:#x} is not mapped")
    if not vrm.implies_new_addr():
        vrm.new_addr = vrm.addr
    if vrm.remap_type != "expand" and not vrm.implies_new_addr():
        return
    old_len, new_len = vrm.old_len, vrm.new_len
    if not old_len and not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        raise _fail(EINVAL, "old length 0 would duplicate a private mapping")
    if vrm.flags & MREMAP_DONTUNMAP and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        raise _fail(EINVAL, "MREMAP_DONTUNMAP on a special mapping")
    if vrm.remap_type == "shrink":
        old_len = new_len
    if old_len > vma.vm_end - vrm.addr:
        raise _fail(EFAULT, "the old range crosses the end of its VMA")
    if new_len == old_len:
        return
    pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    if pgoff + (new_len >> PAGE_SHIFT) > ULONG_MAX:
        raise _fail(EINVAL, "page offset overflows")
    if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        raise _fail(EFAULT, "this special mapping cannot grow")


@traced(hide=("proc",), result=lambda r: r[0])
def mremap_at(proc, vrm):
    """mm/mremap.c: mremap_at(): resize in place (shrink_vma, expand_vma), or move when
    growing in place is impossible (MREMAP_MAYMOVE)."""
    if vrm.remap_type == "no_resize":
        return vrm.addr, "same size: nothing to do"
    if vrm.remap_type == "shrink":
        shrink_vma(proc, vrm)
        return vrm.addr, f"shrank in place; {vrm.addr + vrm.new_len:#x}-{vrm.addr + vrm.old_len:#x} unmapped"
    return expand_vma(proc, vrm)


@traced(hide=("proc",), result=lambda r: 0)
def shrink_vma(proc, vrm):
    """mm/mremap.c: shrink_vma(): unmap the tail ``[addr + new_len, addr + old_len)``."""
    vma_mod.do_vmi_munmap(proc.mm, vrm.addr + vrm.new_len, vrm.delta, "mremap")
    vrm.vma = proc.mm.vma_lookup(vrm.addr)


@traced(hide=("proc",), result=lambda r: r[0])
def expand_vma(proc, vrm):
    """mm/mremap.c: expand_vma(): grow in place when the range ends the VMA and the space
    after it is free (expand_vma_in_place), else move (vrm_set_new_addr, move_vma)."""
    mm = proc.mm
    vma = vrm.vma
    if vrm.addr + vrm.old_len == vma.vm_end and vma_expandable(mm, vma, vrm.delta):
        merged_next = expand_vma_in_place(proc, vrm)
        outcome = "grew in place" + (" and merged with the next VMA" if merged_next else "")
        return vrm.addr, outcome
    if not vrm.flags & MREMAP_MAYMOVE:
        raise _fail(ENOMEM, "cannot grow in place (the next page is in use or the range does "
                            "not reach the end of the VMA) and MREMAP_MAYMOVE is not set")
    vrm_set_new_addr(proc, vrm)
    return move_vma(proc, vrm)


@traced(hide=("proc",), result=lambda r: 0)
def expand_vma_in_place(proc, vrm):
    """mm/mremap.c: expand_vma_in_place(): charge the growth, then vma_merge_extend().
    Returns True when the VMA also merged with the next one."""
    mm = proc.mm
    vma = vrm.vma
    if vma.vm_flags & VM_ACCOUNT and not vm_enough_memory(mm.machine, vrm.delta >> PAGE_SHIFT):
        raise _fail(ENOMEM, "not enough memory to commit the growth")
    vmg = vma_merge_extend(mm, vma, vrm.delta)
    return "both" in vmg.outcome


@traced(hide=("mm",), result=lambda vmg: vmg.target)
def vma_merge_extend(mm, vma, delta):
    """mm/vma.c: vma_merge_extend(): vma_merge_new_range() for ``[vm_end, vm_end + delta)``
    with the VMA itself as ``prev`` (and the next VMA, which it may swallow).
    Returns the merge state."""
    vmg = vma_mod.VmaMergeStruct(
        mm=mm, prev=vma, next=mm.vma_next(vma), start=vma.vm_end, end=vma.vm_end + delta,
        pgoff=vma.vm_pgoff + vma.pages(), flags=vma.vm_flags, file=vma.vm_file,
        anon_vma=vma.anon_vma)
    if vma_mod.vma_merge_new_range(vmg) is None:
        raise _fail(ENOMEM, "could not extend the VMA")
    return vmg


def vma_expandable(mm, vma, delta):
    """mm/mremap.c: vma_expandable(): nothing mapped in ``[vm_end, vm_end + delta)``."""
    end = vma.vm_end + delta
    if end > TASK_SIZE:
        return False
    return not mm.vmas_in(vma.vm_end, end)


@traced(hide=("proc",), result=lambda r: r[0])
def mremap_to(proc, vrm):
    """mm/mremap.c: mremap_to(): MREMAP_FIXED / MREMAP_DONTUNMAP."""
    mm = proc.mm
    if vrm.flags & MREMAP_FIXED:
        do_munmap(mm, vrm.new_addr, vrm.new_len)
        vrm.vma = mm.vma_lookup(vrm.addr)
        if vrm.vma is None:
            raise _fail(EFAULT, "the old range was unmapped")
    if vrm.remap_type == "shrink":
        shrink_vma(proc, vrm)
        vrm.old_len = vrm.new_len
    vrm_set_new_addr(proc, vrm)
    return move_vma(proc, vrm)


@traced(hide=("mm",))
def do_munmap(mm, start, len):
    """mm/mmap.c: do_munmap(): do_vmi_munmap() on a fresh iterator."""
    return vma_mod.do_vmi_munmap(mm, start, len, "mremap")


@traced(hide=("proc",), result=lambda r: 0)
def vrm_set_new_addr(proc, vrm):
    vma = vrm.vma
    pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    map_flags = (MAP_FIXED if vrm.flags & MREMAP_FIXED else 0) | (
        MAP_SHARED if vma.vm_flags & VM_MAYSHARE else 0)
    hint = vrm.new_addr if vrm.implies_new_addr() else 0
    got = get_unmapped_area(proc.mm, vma.vm_file, hint, vrm.new_len, pgoff, map_flags,
                            vma.vm_flags, proc.root)
    if got < 0:
        raise _fail(-got, "no free range to move the mapping to")
    vrm.new_addr = got


@traced(hide=("proc",), result=lambda r: r[0])
def move_vma(proc, vrm):
    """mm/mremap.c: move_vma(): copy the VMA and its PTEs (copy_vma_and_data), then unmap
    the old range (unmap_source_vma), or keep it empty with MREMAP_DONTUNMAP
    (dontunmap_complete)."""
    mm = proc.mm
    if mm.map_count >= mm.machine.sysctl["vm.max_map_count"] - 3:
        raise _fail(ENOMEM, "too close to vm.max_map_count to move a mapping")
    vma = vrm.vma
    old_addr, old_len, new_addr, new_len = vrm.addr, vrm.old_len, vrm.new_addr, vrm.new_len
    if vma.vm_flags & VM_ACCOUNT:
        charge = new_len if vrm.flags & MREMAP_DONTUNMAP else max(0, new_len - old_len)
        if charge and not vm_enough_memory(mm.machine, charge >> PAGE_SHIFT):
            raise _fail(ENOMEM, "not enough memory to commit the moved mapping")
    new_vma, merged = copy_vma_and_data(mm, vrm)
    if vrm.flags & MREMAP_DONTUNMAP:
        dontunmap_complete(vrm, new_vma)
    else:
        unmap_source_vma(mm, vrm)
    where = "merged at its new place" if merged else "a new VMA at its new place"
    return new_addr, f"moved {old_addr:#x} -> {new_addr:#x} ({where})"


@traced(hide=("mm",), result=lambda r: 0)
def copy_vma_and_data(mm, vrm):
    """mm/mremap.c: copy_vma_and_data(): the destination VMA (copy_vma), then the PTEs
    (move_page_tables). Returns ``(new_vma, merged)``; ``vrm.vma`` is the source VMA (a
    merge may have replaced it)."""
    vma = vrm.vma
    new_pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma, vrm.vma, merged = copy_vma(mm, vma, vrm.new_addr, vrm.new_len, new_pgoff)
    move_page_tables(mm, vrm.addr, vrm.new_addr, min(vrm.old_len, vrm.new_len))
    return new_vma, merged


@traced(hide=("new_vma",), result=lambda r: None)
def dontunmap_complete(vrm, new_vma):
    """mm/mremap.c: dontunmap_complete(): the old VMA stays, empty; it loses VM_LOCKED, and
    its anon_vma links when the whole VMA moved."""
    vma = vrm.vma
    old_addr, old_len = vrm.addr, vrm.old_len
    vm_flags_reset(vma, vma.vm_flags & ~(VM_LOCKED | VM_LOCKONFAULT))
    if new_vma is not vma and old_addr == vma.vm_start and old_addr + old_len == vma.vm_end:
        from . import rmap
        rmap.unlink_anon_vmas(vma)


@traced(hide=("mm",), result=lambda r: None)
def unmap_source_vma(mm, vrm):
    """mm/mremap.c: unmap_source_vma(): do_vmi_munmap() of the old range. A failure is
    ignored, as the kernel does (an old length of 0, duplicating a shared mapping, unmaps
    nothing)."""
    try:
        vma_mod.do_vmi_munmap(mm, vrm.addr, vrm.old_len, "mremap")
    except OSError:
        pass


@traced(hide=("mm", "pgoff"), result=lambda r: r[0])
def copy_vma(mm, vma, addr, length, pgoff):
    """mm/vma.c: copy_vma(): the VMA for the destination, merged with its neighbours when
    possible. Returns ``(new_vma, source_vma, merged)``; the source changes if it was
    merged into the destination (only possible when never faulted)."""
    if vma.is_anonymous() and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    nxt, prev = mm.find_vma_prev(addr)
    vmg = vma_mod.VmaMergeStruct(mm=mm, prev=prev, next=nxt, start=addr, end=addr + length,
                                 pgoff=pgoff, flags=vma.vm_flags, file=vma.vm_file,
                                 anon_vma=vma.anon_vma, copied_from=vma)
    vma_start = vma.vm_start
    new_vma = vma_mod.vma_merge_new_range(vmg)
    if new_vma is not None:
        if new_vma.vm_start <= vma_start < new_vma.vm_end:
            vma = new_vma
        return new_vma, vma, True
    new_vma = VmAreaStruct(mm, addr, addr + length, vma.vm_flags, pgoff, vma.vm_file, vma.vm_ops)
    new_vma.anon_vma = vma.anon_vma
    from . import rmap
    rmap.anon_vma_clone(new_vma, vma)        # a no-op for a VMA without anon_vma
    mm.insert(new_vma)
    if new_vma.vm_file is not None:
        new_vma.vm_file.mapping.i_mmap.add(new_vma)
    return new_vma, vma, False


# mm/mremap.c: move_page_tables() (6.18). Simplification: PTEs move one by one (no
# move_pgt_entry() of whole PMD tables); the move_ptes() level is not shown.
@traced(hide=("mm",))
def move_page_tables(mm, old_addr, new_addr, length):
    """mm/mremap.c: move_page_tables(): move every PTE; pages and their rmap stay as they are.

    The move goes in extents that end at a 2 MiB boundary of the old or the new address
    (get_extent()); move_ptes() flushes an extent's old range (flush_tlb_range) when it
    moved a present PTE. Simplification: whole PMDs are never moved (move_normal_pmd)."""
    from . import tlb as tlb_mod
    pmd = 1 << PMD_SHIFT
    delta = new_addr - old_addr
    end = old_addr + length
    moved = 0
    extent, present = None, False
    for addr, _t, _i, _pte in list(pgtable.iter_ptes(mm, old_addr, end)):
        lo1, lo2 = addr & ~(pmd - 1), ((addr + delta) & ~(pmd - 1)) - delta
        here = (max(lo1, lo2, old_addr), min(lo1 + pmd, lo2 + pmd, end))
        if here != extent:
            if present:
                tlb_mod.flush_tlb_mm_range(mm, extent[0], extent[1], PAGE_SHIFT, False, "mremap")
            extent, present = here, False
        dst = addr + delta
        pgtable.lookup_pte_table(mm, dst, alloc=True)   # may reclaim: read the PTE after
        table = pgtable.lookup_pte_table(mm, addr)
        pte = pgtable.set_pte(table, pgtable.table_index(addr, 3), 0) if table else None
        if pte:
            pgtable.set_pte_at(mm, dst, pte)
            moved += 1
            present = present or pgtable.pte_present(pte)
    if present:
        tlb_mod.flush_tlb_mm_range(mm, extent[0], extent[1], PAGE_SHIFT, False, "mremap")
    return moved


@traced(hide=("proc",), result=lambda r: r[0])
def remap_move(proc, vrm):
    """mm/mremap.c: remap_move() (6.17+): MREMAP_FIXED without resizing moves every VMA in
    the range, keeping the gaps between them."""
    mm = proc.mm
    start, end = vrm.addr, vrm.addr + vrm.old_len
    target = vrm.new_addr
    res = None
    last_end = None
    outcomes = []
    cursor = start
    while True:
        # Look the next VMA up afresh: moving one may have split another (its target unmap).
        vma = mm.find_vma(cursor)
        if vma is None or vma.vm_start >= end:
            break
        if res is None and start < vma.vm_start:
            raise _fail(EFAULT, f"old address {start:#x} is not mapped")
        addr = max(vma.vm_start, cursor)
        length = min(end, vma.vm_end) - addr
        if length <= 0:
            break       # MREMAP_DONTUNMAP left the last source VMA in place
        offset = vma.vm_start - last_end if last_end is not None else 0
        last_end = vma.vm_end
        multi_allowed = vma.vm_file is None or vma.vm_file.shmem
        if not multi_allowed and (res is not None or vma.vm_end < end):
            raise _fail(EFAULT, "a file mapping can only be moved on its own")
        step = VmaRemapStruct(addr, length, length, vrm.flags, target + offset, vma)
        check_prep_vma(proc, step)
        got, outcome = mremap_to(proc, step)
        outcomes.append(outcome)
        if res is None:
            res = got
        target = got + length
        cursor = addr + length
    if res is None:
        raise _fail(EFAULT, f"old address {start:#x} is not mapped")
    return res, "; ".join(outcomes)
