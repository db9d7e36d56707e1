"""Files and the page cache (include/linux/fs.h, mm/filemap.c, mm/shmem.c).

A :class:`File` stands for an inode with its ``address_space``: the page cache
(``i_pages``, page index -> :class:`Page`) and ``i_mmap``, the VMAs mapping it.
An :class:`OpenFile` is a ``struct file``, an open file description: each open(2) makes
one, fork and dup share it, and ``vma->vm_file`` points at it (so two open(2)s of one file
give VMAs that do not merge). Shared anonymous memory is a shmem file, shown as
``/dev/zero (deleted)`` in maps.

Simplification: no readahead outside faults (read-around on a fault miss, as
do_sync_mmap_readahead() does, is modelled); reads are instant.
"""

import itertools

from .flags import PAGE_SIZE
from .. import trace
from ..trace import traced


class IMmap:
    """``address_space->i_mmap``: the VMAs mapping a file.

    The kernel keeps them in an interval tree (``struct rb_root_cached``, mm/interval_tree.c)
    keyed by the range of file pages each maps, and walks it in order of the first page
    (``vma_interval_tree_foreach``). Simplification: a dict here, walked in ``vm_pgoff``
    order, VMAs with the same offset in the order they were added (the kernel puts a fork
    child's VMA right after its parent's, vma_interval_tree_insert_after(); here it goes
    after all of them). The order is part of the model's output (rmap walks, and so call
    trees and flushes), so it must never depend on object addresses, as a set's would.
    """

    def __init__(self):
        self._vmas = {}            # vma -> insertion number
        self._added = 0

    def add(self, vma):
        if vma not in self._vmas:
            self._added += 1
            self._vmas[vma] = self._added

    def discard(self, vma):
        self._vmas.pop(vma, None)

    def __contains__(self, vma):
        return vma in self._vmas

    def __len__(self):
        return len(self._vmas)

    def __iter__(self):
        return iter(sorted(self._vmas, key=lambda v: (v.vm_pgoff, self._vmas[v])))

    def __repr__(self):
        return f"IMmap({list(self)!r})"


class AddressSpace:
    """``struct address_space``: the page cache of one file and the VMAs mapping it."""

    def __init__(self, host):
        self.host = host
        self.i_pages = {}
        self.i_mmap = IMmap()

    def __repr__(self):
        return f"AddressSpace({self.host.path!r})"


class File:
    """An inode and its contents: ``path``, ``ino``, ``dev`` (major, minor), ``data``."""

    _inos = itertools.count(1000)

    def __init__(self, path, data=b"", dev=(0xFE, 0), ino=None, shmem=False):
        self.path = path
        self.data = bytearray(data)
        self.dev = dev
        self.ino = ino if ino is not None else next(File._inos)
        self.shmem = shmem
        self.mapping = AddressSpace(self)

    @property
    def size(self):
        return len(self.data)

    def read_page(self, index):
        """The bytes of page ``index`` on disk (zeroes past the end of the file)."""
        chunk = bytes(self.data[index * PAGE_SIZE:(index + 1) * PAGE_SIZE])
        return chunk + bytes(PAGE_SIZE - len(chunk))

    def contents(self):
        """What a read(2) of the whole file returns now: the page cache wins over the disk
        copy, so writes through MAP_SHARED mappings are visible."""
        out = bytearray(self.data)
        for index, page in self.mapping.i_pages.items():
            lo = index * PAGE_SIZE
            if lo < len(out):
                out[lo:lo + PAGE_SIZE] = page.read(0, min(PAGE_SIZE, len(out) - lo))
        return bytes(out)

    def __repr__(self):
        return f"File({self.path!r}, ino={self.ino})"

    def __trace__(self):
        return f"file({self.path})"


class OpenFile:
    """``struct file`` (include/linux/fs.h): an open file description of the inode
    ``f_inode`` (a :class:`File`). open(2) makes a new one; fork() and dup() share it, and
    mmap() takes a reference (get_file()), so a mapping keeps it after close(2).
    ``vma->vm_file`` is one of these: is_mergeable_vma() compares it, not the inode.

    ``f_mode`` is how it was opened (``"r"``, ``"w"`` or ``"rw"``, for FMODE_READ and
    FMODE_WRITE); ``f_flags`` the open(2) flags. What the rest of the model reads of the
    file (``path``, ``dev``, ``ino``, ``shmem``, ``mapping``, the data) is the inode's.
    ``f_serial`` numbers the machine's open file descriptions, so that views comparing two
    states of a machine (which are copies) can tell whether two VMAs share one.
    """

    __slots__ = ("f_inode", "f_flags", "f_mode", "f_serial")

    def __init__(self, inode, flags=0, mode="rw", serial=0):
        self.f_inode = inode
        self.f_flags = flags
        self.f_mode = mode
        self.f_serial = serial

    @property
    def f_mapping(self):
        return self.f_inode.mapping

    mapping = f_mapping
    path = property(lambda self: self.f_inode.path)
    dev = property(lambda self: self.f_inode.dev)
    ino = property(lambda self: self.f_inode.ino)
    shmem = property(lambda self: self.f_inode.shmem)
    data = property(lambda self: self.f_inode.data)
    size = property(lambda self: self.f_inode.size)

    def read_page(self, index):
        return self.f_inode.read_page(index)

    def contents(self):
        return self.f_inode.contents()

    def __repr__(self):
        return f"OpenFile({self.path!r}, ino={self.ino}, mode={self.f_mode!r})"

    def __trace__(self):
        return self.f_inode.__trace__()


def file_pages(file):
    """Pages the file covers: ``DIV_ROUND_UP(i_size, PAGE_SIZE)``."""
    return (file.size + PAGE_SIZE - 1) // PAGE_SIZE


@traced(result=lambda r: r[0])
def filemap_fault(vma, index, flags):
    """mm/filemap.c: filemap_fault(): the page-cache page for ``index``.

    On a miss the kernel reads around it (:func:`do_sync_mmap_readahead`), gets the page
    itself (``__filemap_get_folio(FGP_CREAT)``) and, having dropped the lock for the I/O,
    returns VM_FAULT_RETRY | VM_FAULT_MAJOR: the fault is retried and finds the page
    (unless it is already a retry, FAULT_FLAG_TRIED). Returns ``(vm_fault_t, page)``; the
    page is None when the fault is to be retried."""
    from .memory import FAULT_FLAG_TRIED, VM_FAULT_LOCKED, VM_FAULT_MAJOR, VM_FAULT_RETRY, VmFault
    machine = vma.vm_mm.machine
    file = vma.vm_file
    page = file.mapping.i_pages.get(index)
    if page is not None:
        return VmFault(VM_FAULT_LOCKED), page
    do_sync_mmap_readahead(vma, index)
    page = filemap_get_page(machine, file, index)
    if not flags & FAULT_FLAG_TRIED:
        return VmFault(VM_FAULT_RETRY | VM_FAULT_MAJOR), None
    return VmFault(VM_FAULT_LOCKED | VM_FAULT_MAJOR), page


@traced(result=lambda r: None)
def do_sync_mmap_readahead(vma, index):
    """mm/filemap.c: do_sync_mmap_readahead(): read ``ra_pages`` pages centred on the fault
    (read_ahead_kb of the device), from ``index`` on for MADV_SEQUENTIAL, nothing more
    for MADV_RANDOM; never past the end of the file.
    Simplification: the page at ``index`` itself is read last, by filemap_fault()."""
    from .flags import VM_RAND_READ, VM_SEQ_READ
    machine = vma.vm_mm.machine
    file = vma.vm_file
    ra_pages = machine.read_ahead_kb * 1024 // PAGE_SIZE
    if vma.vm_flags & VM_RAND_READ or ra_pages <= 1:
        window = range(index, index + 1)
    elif vma.vm_flags & VM_SEQ_READ:
        window = range(index, index + ra_pages)
    else:
        start = max(0, index - ra_pages // 2)
        window = range(start, start + ra_pages)
    for i in window:
        if i < file_pages(file) and i != index:
            filemap_get_page(machine, file, i)


@traced(result=lambda r: r[0])
def shmem_fault(vma, index):
    """mm/shmem.c: shmem_fault(): the shmem page for ``index``, a new zeroed page the first
    time. Returns ``(vm_fault_t, page)``."""
    from .memory import VM_FAULT_LOCKED, VmFault
    return VmFault(VM_FAULT_LOCKED), filemap_get_page(vma.vm_mm.machine, vma.vm_file, index)


def filemap_get_page(machine, file, index):
    """The page-cache page for ``index``, read from the file on a miss
    (``__filemap_get_folio(FGP_CREAT)``, ``filemap_add_folio()`` and the read).

    The page cache holds one reference of its own.
    """
    page = file.mapping.i_pages.get(index)
    if page is None:
        page = machine.alloc_page("file")
        page.mapping = file.mapping
        page.index = index
        if not file.shmem:
            data = file.read_page(index).rstrip(b"\0")
            if data:
                page.write(0, data)
        file.mapping.i_pages[index] = page
        if trace._active is not None:
            trace.note(f"page cache: {file.path} index {index:#x} -> pfn {page.pfn:#x}"
                       + ("" if file.shmem else " (read from the file)"))
    return page


@traced(hide=("address",))
def filemap_map_pages(vma, address, start, end):
    """mm/filemap.c: filemap_map_pages(): map the pages of ``[start, end)`` already in the
    page cache (read-only), skipping PTEs already set and pages past the end of the file.
    Returns VM_FAULT_NOPAGE when the page at ``address`` was among them, else 0."""
    from . import pgtable
    from .memory import VM_FAULT_NOPAGE, VmFault, set_pte_range, vma_page_prot
    from .flags import _PAGE_RW
    mm = vma.vm_mm
    file = vma.vm_file
    last = file_pages(file) - 1
    prot = vma_page_prot(vma) & ~_PAGE_RW
    ret = 0
    for addr in range(start, end, PAGE_SIZE):
        index = vma.linear_page_index(addr)
        page = file.mapping.i_pages.get(index)
        if page is None or (index > last and not file.shmem) or pgtable.get_pte(mm, addr):
            continue
        set_pte_range(vma, addr, page, prot)
        if addr == address:
            ret = VM_FAULT_NOPAGE
    return VmFault(ret)


def shmem_zero_setup(machine):
    """mm/shmem.c: shmem_zero_setup(): the hidden file behind a MAP_SHARED|MAP_ANONYMOUS VMA."""
    return OpenFile(File("/dev/zero (deleted)", dev=(0, 1), ino=machine.next_shmem_ino(),
                         shmem=True), serial=machine.next_file_serial())


def shmem_release(machine, file):
    """mm/shmem.c: shmem_evict_inode() when the last mapping of an anonymous shared
    region goes: its page-cache pages are freed (nothing else can reach them)."""
    if not file.shmem or file.mapping.i_mmap:
        return 0
    pages = list(file.mapping.i_pages.values())
    file.mapping.i_pages.clear()
    for page in pages:
        machine.phys.put_page(page)
    return len(pages)
