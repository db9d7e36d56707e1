"""mmap, munmap and brk, and choosing addresses (mm/mmap.c, mm/vma.c,
arch/x86/kernel/sys_x86_64.c, arch/x86/mm/mmap.c; Linux 6.18).

Simplification: no rlimits (RLIMIT_AS / DATA / MEMLOCK are infinity), no hugetlb, no
mlock accounting, no security modules; the overcommit heuristic (mode 0) compares a
request with RAM + swap as ``__vm_enough_memory`` does.
"""

from . import filemap, memory, vma as vma_mod
from .errors import (EEXIST, EINVAL, ENOMEM, EOVERFLOW, EPERM, EBADF, EACCES,
                     syscall_error)
from .flags import (MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_HUGETLB, MAP_NONBLOCK,
                    MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE,
                    MAP_STACK, MAP_TYPE, MAP_32BIT, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT,
                    STACK_GUARD_GAP, TASK_SIZE, ULONG_MAX, VM_ACCOUNT, VM_DATA_DEFAULT_FLAGS,
                    VM_GROWSDOWN, VM_LOCKED, VM_MAY_FLAGS, VM_MAYSHARE, VM_MAYWRITE,
                    VM_NOHUGEPAGE, VM_NORESERVE, VM_SHARED, VM_WRITE, calc_vm_flag_bits,
                    calc_vm_prot_bits, offset_in_page, page_align)
from .mm_types import VmAreaStruct
from .. import trace
from ..trace import errno_result, traced

PMD_SIZE = 1 << PMD_SHIFT
#: arch/x86/include/asm/page_64_types.h: DEFAULT_MAP_WINDOW (47-bit user space).
DEFAULT_MAP_WINDOW = TASK_SIZE
#: arch/x86/include/asm/processor.h: TASK_UNMAPPED_BASE for the legacy bottom-up layout.
TASK_UNMAPPED_BASE = page_align(TASK_SIZE // 3)


# -- address choice ------------------------------------------------------------------------------

def vm_start_gap(vma):
    """include/linux/mm.h: vm_start_gap(): a stack keeps ``stack_guard_gap`` free below it."""
    start = vma.vm_start
    if vma.vm_flags & VM_GROWSDOWN:
        start = max(0, start - STACK_GUARD_GAP)
    return start


def mmap_address_hint_valid(addr, length):
    """arch/x86/mm/hugetlbpage.c: mmap_address_hint_valid()."""
    if TASK_SIZE - length < addr:
        return False
    return (addr > DEFAULT_MAP_WINDOW) == (addr + length > DEFAULT_MAP_WINDOW)


@traced(hide=("mm",), result=errno_result)
def unmapped_area_topdown(mm, length, low_limit, high_limit):
    """mm/vma.c: unmapped_area_topdown(): the highest gap of ``length`` bytes below
    ``high_limit`` (respecting stack guard gaps), or None."""
    low_limit = max(low_limit, mm.machine.sysctl["vm.mmap_min_addr"])
    vmas = mm.mm_mt
    i = vmas.bisect_key_left(high_limit)
    # The gap above VMA i-1 ends at the next VMA's start gap or at high_limit.
    gap_end = high_limit
    if i < len(vmas):
        gap_end = min(gap_end, vm_start_gap(vmas[i]))
    while True:
        prev = vmas[i - 1] if i > 0 else None
        gap_start = max(prev.vm_end if prev is not None else 0, low_limit)
        if gap_end >= gap_start and gap_end - gap_start >= length:
            return (gap_end - length) & PAGE_MASK
        if prev is None or prev.vm_end <= low_limit:
            return None
        i -= 1
        gap_end = min(high_limit, vm_start_gap(prev))


@traced(name="unmapped_area", hide=("mm",), result=errno_result)
def unmapped_area_bottomup(mm, length, low_limit, high_limit):
    """mm/vma.c: unmapped_area(): the lowest gap of ``length`` bytes at or above ``low_limit``."""
    low_limit = max(low_limit, mm.machine.sysctl["vm.mmap_min_addr"])
    vmas = mm.mm_mt
    i = vmas.bisect_key_right(low_limit)
    gap_start = low_limit
    if i and vmas[i - 1].vm_end > gap_start:
        gap_start = vmas[i - 1].vm_end
    while True:
        nxt = vmas[i] if i < len(vmas) else None
        gap_end = min(high_limit, vm_start_gap(nxt)) if nxt is not None else high_limit
        if gap_end > gap_start and gap_end - gap_start >= length:
            return gap_start
        if nxt is None or nxt.vm_end >= high_limit:
            return None
        gap_start = max(gap_start, nxt.vm_end)
        i += 1


@traced(name="vm_unmapped_area", hide=("mm",), result=errno_result)
def vm_unmapped_area(mm, length, low_limit, high_limit, topdown):
    """mm/mmap.c: vm_unmapped_area(): the lowest (or, top-down, highest) free gap of
    ``length`` bytes in ``[low_limit, high_limit)``; None (the kernel: -ENOMEM) if none."""
    if topdown:
        return unmapped_area_topdown(mm, length, low_limit, high_limit)
    return unmapped_area_bottomup(mm, length, low_limit, high_limit)


@traced(name="arch_get_unmapped_area_topdown_vmflags", hide=("mm",), result=errno_result)
def arch_get_unmapped_area_topdown(mm, addr, length, flags):
    """arch/x86/kernel/sys_x86_64.c: arch_get_unmapped_area_topdown_vmflags(): the hint if
    it is free, else the highest gap below ``mmap_base``, else bottom-up from
    TASK_UNMAPPED_BASE (arch_get_unmapped_area_vmflags())."""
    if length > TASK_SIZE:
        return -ENOMEM
    if flags & MAP_FIXED:
        return addr
    if not flags & MAP_32BIT:
        if addr:
            addr &= PAGE_MASK
            if mmap_address_hint_valid(addr, length):
                vma = mm.find_vma(addr)
                if vma is None or addr + length <= vm_start_gap(vma):
                    return addr
        found = vm_unmapped_area(mm, length, PAGE_SIZE, mm.mmap_base, True)
        if found is not None:
            return found
    # Bottom-up fallback (arch_get_unmapped_area with the legacy base).
    found = arch_get_unmapped_area_bottomup(mm, length)
    return found if found is not None else -ENOMEM


@traced(name="arch_get_unmapped_area_vmflags", hide=("mm",), result=errno_result)
def arch_get_unmapped_area_bottomup(mm, length):
    """arch/x86/kernel/sys_x86_64.c: arch_get_unmapped_area_vmflags(), the legacy
    bottom-up search from TASK_UNMAPPED_BASE."""
    return vm_unmapped_area(mm, length, TASK_UNMAPPED_BASE, TASK_SIZE, False)


@traced(name="mm_get_unmapped_area_vmflags", hide=("mm",), result=errno_result)
def mm_get_unmapped_area_vmflags(mm, addr, length, flags):
    """mm/mmap.c: mm_get_unmapped_area_vmflags(): the mm's layout decides (top-down here)."""
    return arch_get_unmapped_area_topdown(mm, addr, length, flags)


@traced(name="__thp_get_unmapped_area", hide=("mm",), result=errno_result)
def thp_get_unmapped_area(mm, length, flags):
    """mm/huge_memory.c: thp_get_unmapped_area_vmflags() -> __thp_get_unmapped_area(): ask
    for 2 MiB more and align the start to 2 MiB inside it; plain search if that fails."""
    padded = mm_get_unmapped_area_vmflags(mm, 0, length + PMD_SIZE, flags)
    if padded >= 0:
        off_sub = (-padded) & (PMD_SIZE - 1)
        return padded + PMD_SIZE if not off_sub else padded + off_sub
    return mm_get_unmapped_area_vmflags(mm, 0, length, flags)


@traced(name="__get_unmapped_area", hide=("mm", "vm_flags", "root"), result=errno_result)
def get_unmapped_area(mm, file, addr, length, pgoff, flags, vm_flags=0, root=True):
    """mm/mmap.c: __get_unmapped_area(): pick (or check) the address of a new mapping.

    Anonymous private mappings whose length is a multiple of 2 MiB and that have no hint
    are aligned to 2 MiB so that THP can back them (thp_get_unmapped_area_vmflags).
    Returns the address, or a negative errno.
    Simplification: a file's or shmem's own ->get_unmapped_area is the mm's.
    """
    if length > TASK_SIZE:
        return -ENOMEM
    if (file is None and not flags & MAP_SHARED and not addr and length % PMD_SIZE == 0
            and not flags & MAP_FIXED):
        addr = thp_get_unmapped_area(mm, length, flags)
    else:
        addr = mm_get_unmapped_area_vmflags(mm, addr, length, flags)
    if addr < 0:
        return addr
    if addr > TASK_SIZE - length:
        return -ENOMEM
    if offset_in_page(addr):
        return -EINVAL
    if addr < mm.machine.sysctl["vm.mmap_min_addr"] and not root:
        return -EPERM  # security/commoncap.c: cap_mmap_addr()
    return addr


_GUA_REASON = {
    ENOMEM: "no free range of that size (or the range passes the end of user space)",
    EINVAL: "MAP_FIXED needs a page-aligned address",
    EPERM: "an unprivileged process may not map below vm.mmap_min_addr",
}


# -- accounting --------------------------------------------------------------------------------

def accountable_mapping(file, vm_flags):
    """mm/vma.h: accountable_mapping(): private writable mappings charge commit."""
    return (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


@traced(name="__vm_enough_memory", hide=("machine",))
def vm_enough_memory(machine, pages):
    """mm/util.c: __vm_enough_memory() for vm.overcommit_memory 0 (heuristic) and 1 (always)."""
    mode = machine.sysctl["vm.overcommit_memory"]
    if mode == 1:
        return True
    if mode == 0:
        return pages <= machine.phys.nr_pages + machine.swap_pages
    committed = machine.committed_pages() + pages
    limit = machine.phys.nr_pages * machine.sysctl["vm.overcommit_ratio"] // 100 + machine.swap_pages
    return committed <= limit


# -- mmap ----------------------------------------------------------------------------------------

def sys_mmap(proc, addr, length, prot, flags, fd, offset):
    """arch/x86/kernel/sys_x86_64.c: SYSCALL_DEFINE6(mmap): the offset must be page aligned;
    then ksys_mmap_pgoff() -> vm_mmap_pgoff() -> do_mmap() -> mmap_region().

    Returns ``(address, outcome)``: the new mapping's address and a sentence on what the
    kernel did (merged or new VMA).
    """
    if offset & ~PAGE_MASK & ULONG_MAX:
        raise syscall_error(EINVAL, "mmap", f"offset {offset:#x} is not a multiple of the "
                                            "page size")
    return ksys_mmap_pgoff(proc, addr, length, prot, flags, fd, offset >> PAGE_SHIFT)


@traced(hide=("proc",), result=lambda r: r[0])
def ksys_mmap_pgoff(proc, addr, len, prot, flags, fd, pgoff):
    """mm/mmap.c: ksys_mmap_pgoff(): look the file up (EBADF), refuse MAP_HUGETLB (no huge
    pages reserved), then vm_mmap_pgoff()."""
    fail = lambda err, why: syscall_error(err, "mmap", why)  # noqa: E731
    file = None
    if not flags & MAP_ANONYMOUS:
        file = proc.files.get(fd)
        if file is None:
            raise fail(EBADF, f"file descriptor {fd} is not open (and MAP_ANONYMOUS is not set)")
    if flags & MAP_HUGETLB:
        raise fail(ENOMEM, "MAP_HUGETLB needs reserved huge pages (vm.nr_hugepages is 0)")
    return vm_mmap_pgoff(proc, file, addr, len, prot, flags, pgoff, fd)


@traced(hide=("proc", "fd"), result=lambda r: r[0])
def vm_mmap_pgoff(proc, file, addr, len, prot, flags, pgoff, fd=-1):
    """mm/util.c: vm_mmap_pgoff(): do_mmap() under the mmap lock, then fault the pages in
    (mm_populate) for MAP_POPULATE or VM_LOCKED."""
    addr, outcome, populate = do_mmap(proc, file, addr, len, prot, flags, pgoff, fd)
    if populate:
        mm_populate(proc.mm, addr, addr + populate)
        outcome += "; pages populated"
    return addr, outcome


@traced(hide=("proc", "fd"), result=lambda r: r[0])
def do_mmap(proc, file, addr, len, prot, flags, pgoff, fd=-1):
    """mm/mmap.c: do_mmap(): check the request, choose the address (__get_unmapped_area),
    compute the VMA flags, then mmap_region(). Returns ``(address, outcome, populate)``:
    ``populate`` is the number of bytes vm_mmap_pgoff() must fault in."""
    length = len
    mm = proc.mm
    machine = mm.machine
    fail = lambda err, why: syscall_error(err, "mmap", why)  # noqa: E731
    if length == 0:
        raise fail(EINVAL, "length is 0")
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    if not flags & MAP_FIXED:
        addr &= PAGE_MASK
        min_addr = machine.sysctl["vm.mmap_min_addr"]
        if addr and addr < min_addr:
            addr = page_align(min_addr)
    length = page_align(length)
    if length == 0:
        raise fail(ENOMEM, "length is so large that rounding it up to a page wraps around")
    if pgoff + (length >> PAGE_SHIFT) > ULONG_MAX:
        raise fail(EOVERFLOW, "offset + length overflows")
    if mm.map_count > machine.sysctl["vm.max_map_count"]:
        raise fail(ENOMEM, f"the process already has more than vm.max_map_count "
                           f"({machine.sysctl['vm.max_map_count']}) VMAs")
    vm_flags = (calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags) | VM_MAY_FLAGS)
    if flags & MAP_STACK:
        vm_flags |= VM_NOHUGEPAGE
    got = get_unmapped_area(mm, file, addr, length, pgoff, flags, vm_flags, proc.root)
    if got < 0:
        raise fail(-got, _GUA_REASON.get(-got, "no address"))
    addr = got
    if flags & MAP_FIXED_NOREPLACE and mm.vmas_in(addr, addr + length):
        raise fail(EEXIST, f"MAP_FIXED_NOREPLACE: {addr:#x}-{addr + length:#x} overlaps an "
                           "existing mapping")
    map_type = flags & MAP_TYPE
    if file is not None:
        vm_flags = _file_vm_flags(proc, file, fd, map_type, vm_flags, prot, fail)
    else:
        if map_type == MAP_SHARED:
            if vm_flags & VM_GROWSDOWN:
                raise fail(EINVAL, "MAP_GROWSDOWN cannot be used with shared memory")
            pgoff = 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif map_type == MAP_PRIVATE:
            pgoff = addr >> PAGE_SHIFT
        else:
            raise fail(EINVAL, "flags must contain exactly one of MAP_SHARED or MAP_PRIVATE"
                       if map_type in (0, MAP_SHARED_VALIDATE) else
                       f"unknown mapping type {map_type:#x}")
    if flags & MAP_NORESERVE and machine.sysctl["vm.overcommit_memory"] != 2:
        vm_flags |= VM_NORESERVE
    vma, outcome = mmap_region(proc, file, addr, length, vm_flags, pgoff)
    populate = 0
    if vm_flags & VM_LOCKED or (flags & (MAP_POPULATE | MAP_NONBLOCK)) == MAP_POPULATE:
        populate = length
    return addr, outcome, populate


def _file_vm_flags(proc, file, fd, map_type, vm_flags, prot, fail):
    """The file part of do_mmap(): access checks against how the file was opened
    (``file->f_mode``)."""
    mode = file.f_mode
    if map_type in (MAP_SHARED, MAP_SHARED_VALIDATE):
        if prot & 0x2 and "w" not in mode:
            raise fail(EACCES, "PROT_WRITE with MAP_SHARED needs a file opened for writing")
        vm_flags |= VM_SHARED | VM_MAYSHARE
        if "w" not in mode:
            vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
    elif map_type != MAP_PRIVATE:
        raise fail(EINVAL, "flags must contain exactly one of MAP_SHARED or MAP_PRIVATE")
    if "r" not in mode:
        raise fail(EACCES, "the file was not opened for reading")
    if vm_flags & VM_GROWSDOWN:
        raise fail(EINVAL, "MAP_GROWSDOWN cannot be used with a file")
    return vm_flags


@traced(hide=("proc",), result=lambda r: r[0].vm_start)
def mmap_region(proc, file, addr, length, vm_flags, pgoff):
    """mm/vma.c: mmap_region(): architecture checks (none here), then __mmap_region().
    Returns ``(vma, outcome)``."""
    return __mmap_region(proc, file, addr, length, vm_flags, pgoff)


# mm/vma.c: __mmap_region() (6.18). Simplification: the commit charge and vm.max_map_count
# are checked before the overlapping VMAs are gathered (the kernel splits them first, so a
# refused MAP_FIXED mmap may leave them split).
@traced(name="__mmap_region", hide=("proc",), result=lambda r: r[0].vm_start)
def __mmap_region(proc, file, addr, length, vm_flags, pgoff):
    """Unmap what is in the way (__mmap_setup), merge with a neighbour
    (vma_merge_new_range) or make a new VMA (__mmap_new_vma), then finish
    (__mmap_complete). Returns ``(vma, outcome)``."""
    mm = proc.mm
    end = addr + length
    vms, vm_flags = __mmap_setup(mm, file, addr, end, vm_flags)
    vma, prev = mm.find_vma_prev(addr)
    vmg = vma_mod.VmaMergeStruct(mm=mm, prev=prev, next=vma, start=addr, end=end, pgoff=pgoff,
                                 flags=vm_flags, file=file)
    merged = None
    if prev is not None or vma is not None:
        merged = vma_mod.vma_merge_new_range(vmg)
    if merged is not None:
        new, outcome = merged, vmg.outcome
    else:
        new, outcome = __mmap_new_vma(mm, file, addr, end, vm_flags, pgoff), "a new VMA"
    __mmap_complete(vms, new)
    return new, outcome


@traced(name="__mmap_setup", hide=("mm", "file"), result=lambda r: 0)
def __mmap_setup(mm, file, addr, end, vm_flags):
    """mm/vma.c: __mmap_setup(): gather the VMAs in the way (vms_gather_munmap_vmas), check
    the commit charge (VM_ACCOUNT), and clear the old PTEs (vms_clean_up_area).
    Returns ``(vms, vm_flags)``."""
    machine = mm.machine
    length = end - addr
    pglen = length >> PAGE_SHIFT
    overlapping = mm.vmas_in(addr, end)
    nr_accounted = 0
    if overlapping:
        first = overlapping[0]
        if (first.vm_start < addr and end < first.vm_end
                and mm.map_count >= machine.sysctl["vm.max_map_count"]):
            raise syscall_error(ENOMEM, "mmap", (
                "MAP_FIXED in the middle of a VMA would split it past vm.max_map_count"))
        for v in overlapping:
            if v.vm_flags & VM_ACCOUNT:
                nr_accounted += (min(end, v.vm_end) - max(addr, v.vm_start)) >> PAGE_SHIFT
    if accountable_mapping(file, vm_flags):
        charged = pglen - nr_accounted
        if charged and not vm_enough_memory(machine, charged):
            raise syscall_error(ENOMEM, "mmap", (
                f"not enough memory to commit {charged} pages (RAM + swap under the "
                "vm.overcommit_memory policy)"))
        vm_flags |= VM_ACCOUNT
    vms = vma_mod.VmaMunmapStruct(mm, addr, end)
    if overlapping:
        vma_mod.vms_gather_munmap_vmas(vms, "mmap")
        vma_mod.vms_clean_up_area(vms)
    return vms, vm_flags


@traced(name="__mmap_new_vma", hide=("mm", "file", "vm_flags", "pgoff"))
def __mmap_new_vma(mm, file, addr, end, vm_flags, pgoff):
    """mm/vma.c: __mmap_new_vma(): vm_area_alloc(), the backing object (a MAP_SHARED
    anonymous mapping gets its shmem file: shmem_zero_setup), vma_iter_store_new(), and
    vma_link_file() for a file."""
    if file is None and vm_flags & VM_SHARED:
        file = filemap.shmem_zero_setup(mm.machine)
    new = VmAreaStruct(mm, addr, end, vm_flags, pgoff, file)
    mm.insert(new)
    if file is not None:
        file.mapping.i_mmap.add(new)
    return new


@traced(name="__mmap_complete", result=lambda r: None)
def __mmap_complete(vms, vma):
    """mm/vma.c: __mmap_complete(): free the VMAs the new mapping replaced
    (vms_complete_munmap_vmas), account, set vm_page_prot."""
    vma_mod.vms_complete_munmap_vmas(vms)


@traced(name="__mm_populate", hide=("mm",), result=lambda r: 0)
def mm_populate(mm, start, end):
    """mm/gup.c: __mm_populate(): fault in every page of every VMA in ``[start, end)``."""
    for vma in mm.vmas_in(start, end):
        memory.populate_vma_page_range(vma, max(start, vma.vm_start), min(end, vma.vm_end))


# -- munmap --------------------------------------------------------------------------------------

@traced(name="__vm_munmap", hide=("mm",))
def vm_munmap(mm, start, len):
    """mm/mmap.c: __vm_munmap(), what munmap(2) calls: do_vmi_munmap() under the mmap lock."""
    return vma_mod.do_vmi_munmap(mm, start, len, "munmap")


# -- brk ------------------------------------------------------------------------------------------

@traced(name="__do_sys_brk", hide=("proc",), result=lambda r: r[0])
def sys_brk(proc, brk):
    """mm/mmap.c: SYSCALL_DEFINE1(brk): move the program break; on any failure return the
    old break unchanged (never an errno). Shrinking unmaps (do_vmi_align_munmap), growing
    extends the heap VMA (do_brk_flags). Returns ``(break, outcome)``."""
    mm = proc.mm
    machine = mm.machine
    origbrk = mm.brk
    if brk < mm.start_brk:
        return origbrk, "refused: below the start of the heap"
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if newbrk == oldbrk:
        mm.brk = brk
        return brk, "the break moved within its last page; no VMA changed"
    if brk <= mm.brk:
        in_range = mm.vmas_in(newbrk, oldbrk)
        if not in_range:
            return origbrk, "refused: no heap VMA to shrink"
        mm.brk = brk
        try:
            vma_mod.do_vmi_align_munmap(mm, newbrk, oldbrk, "brk")
        except OSError as err:          # a split at vm.max_map_count: ENOMEM
            mm.brk = origbrk
            return origbrk, f"refused: shrinking the heap failed ({err.strerror})"
        return brk, f"heap shrank: {newbrk:#x}-{oldbrk:#x} unmapped"
    nxt = mm.vmas_in(oldbrk, newbrk + PAGE_SIZE + STACK_GUARD_GAP)
    if nxt and newbrk + PAGE_SIZE > vm_start_gap(nxt[0]):
        return origbrk, (f"refused: the heap would come too close to the mapping at "
                         f"{nxt[0].vm_start:#x}")
    length = (newbrk - oldbrk) & ULONG_MAX     # unsigned: a break near 2**64 wraps
    prev = mm.find_vma_prev(oldbrk)[1]
    brkvma = prev if prev is not None and prev.vm_start >= mm.start_brk else None
    refused = do_brk_flags(mm, brkvma, oldbrk, length)
    if refused:
        return origbrk, refused
    mm.brk = brk
    return brk, (f"heap VMA grew to {newbrk:#x}" if brkvma is not None and brkvma.vm_end == newbrk
                 else f"new heap VMA {oldbrk:#x}-{newbrk:#x}")


@traced(hide=("mm",), result=lambda refused: "-ENOMEM" if refused else 0)
def do_brk_flags(mm, brkvma, addr, len):
    """mm/vma.c: do_brk_flags(): extend the heap VMA ``brkvma`` over ``[addr, addr+len)``
    (vma_merge_new_range) or make a new VMA there. Returns None, or why it was refused
    (vm.max_map_count, commit charge)."""
    machine = mm.machine
    oldbrk, newbrk, length = addr, (addr + len) & ULONG_MAX, len
    flags = VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT
    if mm.map_count > machine.sysctl["vm.max_map_count"]:
        return "refused: too many VMAs"
    if not vm_enough_memory(machine, length >> PAGE_SHIFT):
        return "refused: not enough memory to commit"
    outcome = None
    if brkvma is not None and brkvma.vm_end == oldbrk:
        vmg = vma_mod.VmaMergeStruct(mm=mm, prev=brkvma, next=None, start=oldbrk, end=newbrk,
                                     pgoff=oldbrk >> PAGE_SHIFT, flags=flags, just_expand=True)
        if vma_mod.vma_merge_new_range(vmg) is not None:
            outcome = f"heap VMA grew to {newbrk:#x}"
    if outcome is None:
        mm.insert(VmAreaStruct(mm, oldbrk, newbrk, flags, oldbrk >> PAGE_SHIFT))
    return None
