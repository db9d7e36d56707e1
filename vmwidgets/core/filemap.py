"""Files and the page cache (include/linux/fs.h, mm/filemap.c, mm/shmem.c).

A :class:`File` stands for an inode with its ``address_space``: the page cache
(``i_pages``, page index -> :class:`Page`) and ``i_mmap``, the VMAs mapping it.
Shared anonymous memory is a shmem file, shown as ``/dev/zero (deleted)`` in maps.

Simplification: no readahead or fault-around; a page enters the cache when first faulted.
"""

import itertools

from .flags import PAGE_SIZE


class AddressSpace:
    """``struct address_space``: the page cache of one file and the VMAs mapping it."""

    def __init__(self, host):
        self.host = host
        self.i_pages = {}
        self.i_mmap = set()

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


def file_pages(file):
    """Pages the file covers: ``DIV_ROUND_UP(i_size, PAGE_SIZE)``."""
    return (file.size + PAGE_SIZE - 1) // PAGE_SIZE


def filemap_fault(machine, vma, index):
    """mm/filemap.c: filemap_fault(): the page-cache page for ``index``. On a miss the
    kernel reads around it first (do_sync_mmap_readahead): ``ra_pages`` pages centred on
    the fault (read_ahead_kb of the device), from ``index`` on for MADV_SEQUENTIAL, only
    the page itself for MADV_RANDOM; never past the end of the file."""
    from .flags import VM_RAND_READ, VM_SEQ_READ
    file = vma.vm_file
    if index not in file.mapping.i_pages and not file.shmem:
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
    return filemap_get_page(machine, file, index)


def filemap_get_page(machine, file, index):
    """The page-cache page for ``index``, read from the file on a miss.

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
    return page


def shmem_zero_setup(machine):
    """mm/shmem.c: shmem_zero_setup(): the hidden file behind a MAP_SHARED|MAP_ANONYMOUS VMA."""
    return File("/dev/zero (deleted)", dev=(0, 1), ino=machine.next_shmem_ino(), shmem=True)


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
