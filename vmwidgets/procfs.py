"""/proc views of the model, in the kernel's formats (fs/proc/task_mmu.c, fs/proc/page.c).

>>> import vmwidgets as vw
>>> p = vw.Machine().spawn()
>>> a = p.mmap(0, 4096, vw.PROT_READ, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> print([l for l in p.proc_maps().splitlines() if l.startswith(f"{a:x}")][0])
7ffff7ff6000-7ffff7ff7000 r--p 00000000 00:00 0 
"""

from dataclasses import dataclass

from .core import pgtable
from .core.flags import (KPF_ANON, KPF_BUDDY, KPF_DIRTY, KPF_LRU, KPF_MMAP, KPF_PGTABLE,
                         KPF_RESERVED, KPF_SWAPBACKED, KPF_SWAPCACHE, KPF_UPTODATE, KPF_ZERO_PAGE,
                         PAGE_SHIFT, PM_FILE, PM_MMAP_EXCLUSIVE, PM_PFRAME_MASK, PM_PRESENT,
                         PM_SOFT_DIRTY, PM_SWAP)
from .core.memory import pte_present, vm_normal_page
from .core.swap import MAX_SWAPFILES_SHIFT, swp_offset

#: fs/proc/task_mmu.c: the name column starts after 25 + 6 * sizeof(void *) - 1 characters.
_NAME_COLUMN = 25 + 6 * 8 - 1
VSYSCALL_LINE = "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0"


def vma_name(vma):
    """The last column of a maps line, or None (fs/proc/task_mmu.c: get_vma_name)."""
    mm = vma.vm_mm
    if vma.vm_file is not None:
        return vma.vm_file.path
    if vma.vm_ops is not None:
        return vma.vm_ops.name
    if vma.vm_start <= mm.brk and vma.vm_end >= mm.start_brk:
        return "[heap]"
    if vma.vm_start <= mm.start_stack <= vma.vm_end:
        return "[stack]"
    return None


def maps_line(vma):
    """One /proc/PID/maps line, byte for byte as show_map_vma() prints it."""
    f = vma.vm_file
    pgoff = vma.vm_pgoff << PAGE_SHIFT if f is not None else 0
    major, minor = f.dev if f is not None else (0, 0)
    ino = f.ino if f is not None else 0
    head = (f"{vma.vm_start:08x}-{vma.vm_end:08x} {vma.perms()} {pgoff:08x} "
            f"{major:02x}:{minor:02x} {ino} ")
    name = vma_name(vma)
    if name is None:
        return head
    return head.ljust(_NAME_COLUMN) + " " + name


def proc_maps(mm):
    """The whole /proc/PID/maps text, ``[vsyscall]`` last as on x86-64."""
    lines = [maps_line(vma) for vma in mm.mm_mt]
    lines.append(VSYSCALL_LINE.ljust(_NAME_COLUMN) + " [vsyscall]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PagemapEntry:
    """One /proc/PID/pagemap entry. ``int(entry)`` is the kernel's 64-bit encoding."""

    present: bool
    swapped: bool
    file_shared: bool
    exclusive: bool
    soft_dirty: bool
    pfn: int

    def __int__(self):
        return ((PM_PRESENT if self.present else 0) | (PM_SWAP if self.swapped else 0)
                | (PM_FILE if self.file_shared else 0)
                | (PM_MMAP_EXCLUSIVE if self.exclusive else 0)
                | (PM_SOFT_DIRTY if self.soft_dirty else 0) | (self.pfn & PM_PFRAME_MASK))

    @classmethod
    def from_int(cls, value):
        """Decode a raw entry (e.g. read from the live kernel)."""
        return cls(bool(value & PM_PRESENT), bool(value & PM_SWAP), bool(value & PM_FILE),
                   bool(value & PM_MMAP_EXCLUSIVE), bool(value & PM_SOFT_DIRTY),
                   value & PM_PFRAME_MASK)


def pagemap_entry(mm, addr, show_pfn=True):
    """fs/proc/task_mmu.c: pte_to_pagemap_entry() for the page holding ``addr``.

    ``exclusive`` is set when exactly one PTE maps the page (its mapcount is 1), which is
    what the kernel reports, not PageAnonExclusive. The zero page is never exclusive.
    Soft-dirty is always clear: our kernels are built without CONFIG_MEM_SOFT_DIRTY.
    """
    pte = pgtable.get_pte(mm, addr)
    if not pte:
        return PagemapEntry(False, False, False, False, False, 0)
    if not pte_present(pte):
        # A swap entry: type 0, offset in the PFN field's upper bits (MAX_SWAPFILES_SHIFT).
        frame = swp_offset(pte) << MAX_SWAPFILES_SHIFT if show_pfn else 0
        return PagemapEntry(False, True, False, False, False, frame)
    page = vm_normal_page(mm, pte)
    pfn = pgtable.pte_pfn(pte) if show_pfn else 0
    file_shared = page is not None and page.kind != "anon"
    exclusive = page is not None and page.mapcount == 1
    return PagemapEntry(True, False, file_shared, exclusive, False, pfn)


def kpagecount(machine, pfn):
    """fs/proc/page.c: /proc/kpagecount: how many PTEs map the frame (0 for the zero page)."""
    page = machine.phys.pages[pfn]
    if page.kind in ("anon", "file"):
        return page.mapcount
    return 0


def kpageflags(machine, pfn):
    """fs/proc/page.c: /proc/kpageflags: the KPF_* bits of a frame."""
    page = machine.phys.pages[pfn]
    bits = {
        "free": [KPF_BUDDY],
        "zero": [KPF_ZERO_PAGE, KPF_RESERVED],
        "kernel": [KPF_RESERVED],
        "pgtable": [KPF_PGTABLE],
        "anon": [KPF_ANON, KPF_SWAPBACKED, KPF_UPTODATE, KPF_LRU]
        + ([KPF_SWAPCACHE] if page.swap is not None else []),
        "file": [KPF_UPTODATE, KPF_LRU],
    }[page.kind]
    if page.kind in ("anon", "file"):
        if page.mapcount:
            bits.append(KPF_MMAP)
        if page.dirty:
            bits.append(KPF_DIRTY)
        if page.kind == "file" and page.mapping.host.shmem:
            bits.append(KPF_SWAPBACKED)
    return sum(1 << b for b in bits)
