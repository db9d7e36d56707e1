"""The kernel's memory-management objects (include/linux/mm_types.h, include/linux/rmap.h).

Simplification: the maple tree ``mm->mm_mt`` is a :class:`sortedcontainers.SortedKeyList`
of VMAs keyed by ``vm_start``; lookups are O(log n) like the tree's. Folios are single
pages (order 0): there are no large folios and no THP.
"""

from sortedcontainers import SortedKeyList

from .flags import (PAGE_SHIFT, VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE, vm_flags_names)
from .. import trace


class CompactSlots:
    """Pickles a ``__slots__`` object as a plain tuple of its fields (the timeline pickles
    the whole machine; tens of thousands of small objects pickle twice as fast this way)."""

    __slots__ = ()

    def __getstate__(self):
        return tuple([getattr(self, name) for name in self.__slots__])

    def __setstate__(self, state):
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)


class Page(CompactSlots):
    """``struct page`` / an order-0 ``struct folio``: one physical frame.

    ``mapcount`` is ``page_mapcount()`` (the kernel stores it minus one in ``_mapcount``);
    ``refcount`` is ``_refcount``. ``mapping`` is the page's ``anon_vma`` (anonymous page) or
    the file's :class:`AddressSpace`; ``index`` is ``page->index`` (a page offset).
    ``data`` is ``None`` while the frame holds only zeroes, else the bytes up to the last
    one written (the rest of the page is zero).
    """

    __slots__ = ("pfn", "refcount", "mapcount", "kind", "mapping", "index", "data",
                 "anon_exclusive", "dirty", "referenced", "table", "swap", "lru")

    def __init__(self, pfn):
        self.pfn = pfn
        self.reset()

    def reset(self):
        """The state of a free frame: no references, no owner, no data."""
        self.refcount = 0
        self.mapcount = 0
        self.kind = "free"       # free | anon | file | pgtable | zero | kernel
        self.mapping = None
        self.index = 0
        self.data = None
        self.anon_exclusive = False
        self.dirty = False
        self.referenced = False
        self.table = None
        self.swap = None         # swap slot while the page is in the swap cache
        self.lru = 0             # LRU age stamp: smaller is older

    def read(self, offset, size):
        if self.data is None:
            return bytes(size)
        chunk = bytes(self.data[offset:offset + size])
        return chunk + bytes(size - len(chunk))

    def write(self, offset, chunk):
        # ``data`` only grows as far as the highest byte written: the rest reads as zero.
        # (A page of which a lesson wrote "hello" costs 5 bytes, not 4 KiB.)
        if self.data is None:
            self.data = bytearray()
        end = offset + len(chunk)
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = chunk

    def __repr__(self):
        return (f"Page(pfn={self.pfn:#x}, kind={self.kind!r}, mapcount={self.mapcount}, "
                f"refcount={self.refcount})")

    def __trace__(self):
        return f"pfn {self.pfn:#x}"


class AnonVma:
    """``struct anon_vma``: where anonymous pages of a family of VMAs are found by rmap.

    ``rb_root`` stands in for the interval tree of anon_vma_chains (a list here);
    ``num_children`` counts child anon_vmas (a new root counts itself) and
    ``num_active_vmas`` the VMAs whose ``vma.anon_vma`` is this one (mm/rmap.c, 6.x).
    """

    def __init__(self, id, root=None, parent=None):
        self.id = id
        self.root = root or self
        self.parent = parent or self
        self.refcount = 1
        self.num_children = 0
        self.num_active_vmas = 0
        self.rb_root = []
        self.freed = False

    def __repr__(self):
        return f"AnonVma(id={self.id})"

    def __trace__(self):
        return f"anon_vma#{self.id}"


class AnonVmaChain(CompactSlots):
    """``struct anon_vma_chain``: links one VMA to one anon_vma; on both of their lists."""

    __slots__ = ("vma", "anon_vma")

    def __init__(self, vma, anon_vma):
        self.vma = vma
        self.anon_vma = anon_vma

    def __repr__(self):
        return f"AnonVmaChain(vma={self.vma.id}, anon_vma={self.anon_vma.id})"


class VmOps:
    """``struct vm_operations_struct`` reduced to what the model needs: a name for
    special mappings ([vdso], [vvar]) shown by /proc/PID/maps."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"VmOps({self.name!r})"


class VmAreaStruct:
    """``struct vm_area_struct``: one VMA, ``[vm_start, vm_end)`` with ``vm_flags``.

    ``anon_vma_chain`` lists the AVCs newest first, as ``list_add`` leaves them.
    """

    def __init__(self, mm, vm_start, vm_end, vm_flags, vm_pgoff=0, vm_file=None, vm_ops=None):
        self.id = mm.machine.new_id("vma")
        self.vm_mm = mm
        self.vm_start = vm_start
        self.vm_end = vm_end
        self.vm_flags = vm_flags
        self.vm_pgoff = vm_pgoff
        self.vm_file = vm_file
        self.vm_ops = vm_ops
        self.anon_vma = None
        self.anon_vma_chain = []

    def dup(self):
        """kernel/fork.c: vm_area_dup(): a copy that shares nothing but the file."""
        new = VmAreaStruct(self.vm_mm, self.vm_start, self.vm_end, self.vm_flags,
                           self.vm_pgoff, self.vm_file, self.vm_ops)
        new.anon_vma = self.anon_vma
        return new

    def pages(self):
        """include/linux/mm.h: vma_pages()."""
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def is_anonymous(self):
        """vma_is_anonymous(): no file and no vm_ops."""
        return self.vm_file is None and self.vm_ops is None

    def perms(self):
        """The ``rwxp`` column of /proc/PID/maps (``s`` comes from VM_MAYSHARE)."""
        f = self.vm_flags
        return ("r" if f & VM_READ else "-") + ("w" if f & VM_WRITE else "-") + (
            "x" if f & VM_EXEC else "-") + ("s" if f & VM_MAYSHARE else "p")

    def linear_page_index(self, address):
        """include/linux/pagemap.h: linear_page_index()."""
        return ((address - self.vm_start) >> PAGE_SHIFT) + self.vm_pgoff

    def __contains__(self, address):
        return self.vm_start <= address < self.vm_end

    def __repr__(self):
        return (f"VmAreaStruct({self.vm_start:#x}, {self.vm_end:#x}, {self.perms()!r}, "
                f"pgoff={self.vm_pgoff:#x}, id={self.id})")

    def __trace__(self):
        return f"vma[{self.vm_start:#x}-{self.vm_end:#x} {self.perms()}]"


def vm_flags_reset(vma, flags):
    """include/linux/mm.h: vm_flags_reset(): give ``vma`` new flags (a state change the call
    tree shows as the VM_* bits set and cleared)."""
    old = vma.vm_flags
    vma.vm_flags = flags
    if trace._active is not None and old != flags:
        trace.note(f"{vma.__trace__()}: vm_flags {vm_flags_change(old, flags)}")


def vm_flags_change(old, new):
    """``+VM_X -VM_Y``: the VM_* bits set and cleared between two flag words."""
    added = ["+" + n for n in vm_flags_names(new & ~old)]
    removed = ["-" + n for n in vm_flags_names(old & ~new)]
    return " ".join(added + removed)


def _vm_start(vma):
    return vma.vm_start


class VmaTree(SortedKeyList):
    """The VMAs of an mm sorted by ``vm_start`` (the maple tree's stand-in). Pickled with
    its sort keys, so that loading it never reads a VMA that is still being unpickled (the
    VMAs and their mm refer to each other)."""

    def __init__(self):
        super().__init__(key=_vm_start)

    def __reduce__(self):
        return (_empty_vma_tree, (), self.__dict__)


def _empty_vma_tree():
    return object.__new__(VmaTree)


class MmStruct:
    """``struct mm_struct``: the address space of a process.

    ``mm_mt`` holds the VMAs sorted by start address (the kernel's maple tree).
    """

    def __init__(self, machine):
        self.machine = machine
        self.mm_mt = VmaTree()
        self.pgd = None
        self.mmap_base = 0
        self.task_size = 0
        self.start_code = self.end_code = 0
        self.start_data = self.end_data = 0
        self.start_brk = self.brk = 0
        self.start_stack = 0
        self.owner = None

    # -- the maple tree stand-in ------------------------------------------------------------
    @property
    def map_count(self):
        """``mm->map_count``: the number of VMAs."""
        return len(self.mm_mt)

    def find_vma(self, addr):
        """mm/mmap.c: find_vma(): the first VMA with ``addr < vm_end``, or ``None``.

        The VMA may start above ``addr``; callers check ``vm_start <= addr``.
        """
        mt = self.mm_mt
        i = mt.bisect_key_right(addr)
        if i and mt[i - 1].vm_end > addr:
            return mt[i - 1]
        return mt[i] if i < len(mt) else None

    def vma_lookup(self, addr):
        """include/linux/mm.h: vma_lookup(): the VMA containing ``addr``, or ``None``."""
        vma = self.find_vma(addr)
        return vma if vma is not None and vma.vm_start <= addr else None

    def find_vma_prev(self, addr):
        """(vma, prev): ``find_vma`` and the VMA before it."""
        mt = self.mm_mt
        i = mt.bisect_key_right(addr)
        if i and mt[i - 1].vm_end > addr:
            i -= 1
        vma = mt[i] if i < len(mt) else None
        prev = mt[i - 1] if i else None
        return vma, prev

    def vma_prev(self, vma):
        i = self.mm_mt.index(vma)
        return self.mm_mt[i - 1] if i else None

    def vma_next(self, vma):
        i = self.mm_mt.index(vma) + 1
        return self.mm_mt[i] if i < len(self.mm_mt) else None

    def vmas_in(self, start, end):
        """The VMAs that intersect ``[start, end)``, in address order (none if empty)."""
        if start >= end:
            return []
        mt = self.mm_mt
        i = mt.bisect_key_right(start)
        if i and mt[i - 1].vm_end > start:
            i -= 1
        out = []
        while i < len(mt) and mt[i].vm_start < end:
            out.append(mt[i])
            i += 1
        return out

    def insert(self, vma):
        """vma_iter_store_new(): a new VMA enters the tree (``map_count`` + 1)."""
        self.mm_mt.add(vma)
        if trace._active is not None:
            trace.note(f"vma inserted: {vma.__trace__()}")

    def remove(self, vma):
        """The VMA leaves the tree (detached for munmap, or swallowed by a merge)."""
        self.mm_mt.remove(vma)
        if trace._active is not None:
            trace.note(f"vma removed: {vma.__trace__()}")

    def set_range(self, vma, start, end, pgoff):
        """mm/vma.h: vma_set_range(), keeping the sorted structure consistent."""
        in_tree = vma in self.mm_mt
        if in_tree:
            self.mm_mt.remove(vma)
        if trace._active is not None:
            moved = f" pgoff {vma.vm_pgoff:#x} -> {pgoff:#x}" if pgoff != vma.vm_pgoff else ""
            trace.note(f"{vma.__trace__()} -> [{start:#x}-{end:#x}]{moved}")
        vma.vm_start, vma.vm_end, vma.vm_pgoff = start, end, pgoff
        if in_tree:
            self.mm_mt.add(vma)

    def __iter__(self):
        return iter(list(self.mm_mt))

    def __trace__(self):
        return f"mm(pid {self.owner.pid})" if self.owner is not None else "mm"


def for_each_vma(mm):
    """Yield every VMA of ``mm`` in address order (include/linux/mm.h: for_each_vma).

    :param mm: ``struct mm_struct *``
    """
    yield from list(mm.mm_mt)
