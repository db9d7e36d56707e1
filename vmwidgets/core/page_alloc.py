"""Physical frames: a finite RAM, a free list, the shared zero page (mm/page_alloc.c).

Simplification: one zone, order-0 pages only, and a LIFO free list (like the per-CPU
page lists, a freed frame is the next one handed out), so runs are deterministic.
Frames never used yet are handed out in PFN order; their ``Page`` objects are made on
first use, so a large RAM costs nothing until it is touched.
"""

from .errors import OutOfMemory
from .mm_types import Page
from .. import trace

#: Frames below this are the kernel image and firmware (KPF_RESERVED); the zero page is one.
RESERVED_FRAMES = 16
ZERO_PFN = 1


class PhysicalMemory:
    """All frames of the machine: ``pages[pfn]`` is the :class:`Page` for that frame."""

    def __init__(self, nr_pages):
        if nr_pages < RESERVED_FRAMES + 16:
            raise ValueError(f"RAM must have at least {RESERVED_FRAMES + 16} pages, got {nr_pages}")
        self.nr_pages = nr_pages
        self.pages = _Frames(nr_pages)
        for pfn in range(RESERVED_FRAMES):
            page = self.pages[pfn]
            page.kind = "kernel"
            page.refcount = 1
        self.pages[ZERO_PFN].kind = "zero"
        self.free_list = []             # freed frames, reused last-freed first
        self._next_fresh = RESERVED_FRAMES

    @property
    def zero_page(self):
        return self.pages[ZERO_PFN]

    @property
    def nr_free(self):
        return len(self.free_list) + self.nr_pages - self._next_fresh

    def alloc_page(self, kind):
        """alloc_pages(GFP_KERNEL, 0): a zeroed frame with refcount 1, or OutOfMemory."""
        if self.free_list:
            pfn = self.free_list.pop()
        elif self._next_fresh < self.nr_pages:
            pfn = self._next_fresh
            self._next_fresh += 1
        else:
            raise OutOfMemory("no free physical frame is left")
        page = self.pages[pfn]
        page.kind = kind
        page.refcount = 1
        page.mapcount = 0
        page.data = None
        if trace._active is not None:
            trace.note(f"page allocated: pfn {pfn:#x} ({kind})")
        return page

    def free_page(self, page):
        """__free_pages(): back to the free list; the frame forgets everything."""
        assert page.kind not in ("free", "zero", "kernel"), page
        if trace._active is not None:
            trace.note(f"page freed: pfn {page.pfn:#x} ({page.kind})")
        page.reset()
        self.free_list.append(page.pfn)

    def put_page(self, page):
        """put_page(): drop a reference and free the frame when none is left."""
        if page.kind == "zero":
            return
        page.refcount -= 1
        if page.refcount == 0:
            self.free_page(page)


class _Frames(dict):
    """``pfn -> Page``, making the Page of a never-used frame on first access."""

    def __init__(self, nr_pages):
        super().__init__()
        self.nr_pages = nr_pages

    def __missing__(self, pfn):
        if not 0 <= pfn < self.nr_pages:
            raise IndexError(f"PFN {pfn:#x} is outside RAM (0..{self.nr_pages - 1:#x})")
        page = self[pfn] = Page(pfn)
        return page

    def in_use(self):
        """The frames that are neither free nor reserved, in PFN order."""
        return [p for pfn, p in sorted(self.items()) if p.kind not in ("free", "kernel", "zero")]
