"""mprotect (mm/mprotect.c, Linux 6.18).

The VMAs before a hole keep their new protection when the hole makes the call fail with
ENOMEM: the kernel changes them one by one.
"""

from . import memory, vma as vma_mod
from .errors import EACCES, EINVAL, ENOMEM, syscall_error
from .flags import (PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_SEM, PROT_WRITE,
                    PAGE_SHIFT, VM_ACCESS_FLAGS, VM_ACCOUNT, VM_GROWSDOWN, VM_HUGETLB,
                    VM_NORESERVE, VM_SHARED, VM_WRITE, calc_vm_prot_bits, offset_in_page,
                    page_align, ULONG_MAX)
from .mmap import vm_enough_memory
from .mm_types import vm_flags_reset
from ..trace import traced


@traced(hide=("proc",), result=lambda r: 0)
def do_mprotect_pkey(proc, start, length, prot):
    """mm/mprotect.c: do_mprotect_pkey() without pkeys. Returns a list of outcome sentences."""
    mm = proc.mm
    fail = lambda err, why: syscall_error(err, "mprotect", why)  # noqa: E731
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP:
        raise fail(EINVAL, "PROT_GROWSDOWN and PROT_GROWSUP together")
    if offset_in_page(start):
        raise fail(EINVAL, f"address {start:#x} is not page aligned")
    if length == 0:
        return ["length 0: nothing to do"]
    length = page_align(length)
    end = (start + length) & ULONG_MAX
    if end <= start:
        raise fail(ENOMEM, "the range wraps around the end of the address space")
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        raise fail(EINVAL, f"unknown protection bits {prot:#x}")
    vmas = mm.vmas_in(start, end)
    if not vmas:
        raise fail(ENOMEM, f"no mapping in {start:#x}-{end:#x}")
    vma = vmas[0]
    if grows & PROT_GROWSDOWN:
        start = vma.vm_start
        if not vma.vm_flags & VM_GROWSDOWN:
            raise fail(EINVAL, "PROT_GROWSDOWN on a VMA that does not grow down")
    elif grows & PROT_GROWSUP:
        raise fail(EINVAL, "PROT_GROWSUP on a VMA that does not grow up")
    elif vma.vm_start > start:
        raise fail(ENOMEM, f"{start:#x} is not mapped")
    prev = mm.vma_prev(vma)
    if start > vma.vm_start:
        prev = vma
    # mm/mprotect.c: do_mprotect_pkey() (6.18): one mmu_gather for the whole call; the
    # PTEs whose change needs it (x86 pte_needs_flush()) are flushed at tlb_finish_mmu().
    from . import tlb as tlb_mod
    tlb = tlb_mod.tlb_gather_mmu(mm, "mprotect")
    try:
        outcomes = []
        nstart = start
        tmp = vma.vm_start
        while True:
            vma = mm.find_vma(nstart)
            if vma is None or vma.vm_start >= end:
                break
            if vma.vm_start != tmp:
                raise fail(ENOMEM, f"hole at {tmp:#x}-{vma.vm_start:#x}; the VMAs before it were "
                                   "already changed")
            newflags = calc_vm_prot_bits(prot) | (vma.vm_flags & ~VM_ACCESS_FLAGS)
            if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
                raise fail(EACCES, (f"the VMA at {vma.vm_start:#x} may not get that protection "
                                    "(its VM_MAY* bits forbid it, e.g. a read-only shared file)"))
            vma, outcome = mprotect_fixup(mm, vma, prev, nstart, min(vma.vm_end, end), newflags)
            outcomes.append(outcome)
            prev = vma
            tmp = nstart = vma.vm_end
            if nstart >= end:
                break
        if tmp < end:
            raise fail(ENOMEM, f"hole at {tmp:#x}: the range is not fully mapped; the VMAs before "
                               "it were already changed")
        return outcomes
    finally:
        tlb_mod.tlb_finish_mmu(tlb)


@traced(hide=("mm", "prev"), result=lambda r: 0)
def mprotect_fixup(mm, vma, prev, start, end, newflags):
    """mm/mprotect.c: mprotect_fixup(): merge or split, set the flags, rewrite the PTEs.

    Returns ``(vma, outcome)`` where ``vma`` now covers ``[start, end)``.
    """
    oldflags = vma.vm_flags
    rng = f"{start:#x}-{end:#x}"
    if newflags == oldflags:
        return vma, f"{rng}: protection unchanged"
    nrpages = (end - start) >> PAGE_SHIFT
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            if not vm_enough_memory(mm.machine, nrpages):
                raise syscall_error(ENOMEM, "mprotect", "not enough memory to commit the "
                                    "newly writable pages")
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma.is_anonymous() and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    vma, outcome = vma_mod.vma_modify(mm, prev, vma, start, end, newflags, "mprotect")
    vm_flags_reset(vma, newflags)
    try_writable = memory.vma_wants_manual_pte_write_upgrade(vma)   # MM_CP_TRY_CHANGE_WRITABLE
    changed = memory.change_protection(vma, start, end, try_writable)
    detail = f"; {changed} PTE(s) rewritten" if changed else ""
    return vma, f"{rng} -> {vma.perms()}: {outcome}{detail}"
