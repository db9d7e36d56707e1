"""Named scenarios: each classic case of VMA merging and splitting, anon_vma reuse, COW,
the zero page and reclaim, as a short script (see :mod:`.format`).

The arena starts at ``0x100000000000``; ``pg(n)`` is its page ``n``, so the addresses line
up with the pictures in the descriptions: one character per page, one letter per VMA,
``.`` a hole. Each description says what the scenario shows; ``tests/scenarios`` checks
that it does. The merge cases follow mm/vma.c (6.18): ``vma_merge_new_range()`` for a new
range (mmap), ``vma_merge_existing_range()`` for a range whose flags change (mprotect);
the classic numbers are those of the old ``vma_merge()`` comment.

>>> import vmwidgets as vw
>>> print(vw.scenarios.get("merge-both"))
merge-both: A new mapping fills the hole between two VMAs and merges with both
[0] spawn() as p
[1] p.mmap(0x100000000000, 8K, rw, private|anonymous|fixed)
[2] p.mmap(0x100000004000, 8K, rw, private|anonymous|fixed)
[3] p.mmap(0x100000002000, 8K, rw, private|anonymous|fixed)   # prev grows over the hole and swallows next
"""

import difflib

from .format import Scenario

ARENA = 0x100000000000
FIXED = "private|anonymous|fixed"


def pg(n):
    """The address of page ``n`` of the arena, as a scenario writes it."""
    return f"{ARENA + n * 4096:#x}"


def _spawn(name="p"):
    return {"call": "spawn", "as": name}


def _mmap(proc, page, pages, prot, flags=FIXED, **extra):
    return {"call": "mmap", "proc": proc, "addr": pg(page), "length": f"{4 * pages}K",
            "prot": prot, "flags": flags, **extra}


def _mprotect(proc, page, pages, prot, **extra):
    return {"call": "mprotect", "proc": proc, "addr": pg(page), "length": f"{4 * pages}K",
            "prot": prot, **extra}


def _munmap(proc, page, pages, **extra):
    return {"call": "munmap", "proc": proc, "addr": pg(page), "length": f"{4 * pages}K", **extra}


def _write(proc, page, data, **extra):
    return {"call": "write", "proc": proc, "addr": pg(page), "data": data, **extra}


def _read(proc, page, size, **extra):
    return {"call": "read", "proc": proc, "addr": pg(page), "size": size, **extra}


def _fork(proc, name):
    return {"call": "fork", "proc": proc, "as": name}


_LIBRARY = {}


def _define(name, title, description, ops, machine=None):
    _LIBRARY[name] = {"name": name, "title": title, "description": " ".join(description.split()),
                      "machine": machine or {}, "ops": ops}


# -- vma_merge_new_range(): a new mapping next to existing ones -----------------------------------

_define("merge-prev", "A new mapping merges with the VMA before it", """
    aaaa.... then mmap [4,6): aaaaaa.. . The new range has the same flags as the VMA that
    ends where it starts, so that VMA (prev) is expanded over it and no new VMA is made:
    the arena is one VMA, and it is the same VMA object as before (classic case 2).""", [
    _spawn(),
    _mmap("p", 0, 4, "rw"),
    _mmap("p", 4, 2, "rw", note="vma_merge_new_range(): prev grows"),
])

_define("merge-next", "A new mapping merges with the VMA after it", """
    ....aaaa then mmap [2,4): ..aaaaaa . The VMA after the new range (next) grows down over
    it; its vm_pgoff drops by two pages so that page offsets stay linear (classic case 3).
    One VMA, the same object as next.""", [
    _spawn(),
    _mmap("p", 4, 4, "rw"),
    _mmap("p", 2, 2, "rw", note="vma_merge_new_range(): next grows down, pgoff lowered"),
])

_define("merge-both", "A new mapping fills the hole between two VMAs and merges with both", """
    aa..bb then mmap [2,4): aaaaaa . prev is expanded to next's end and next is removed
    (classic case 1): three mmap calls, one VMA, and it is prev's object.""", [
    _spawn(),
    _mmap("p", 0, 2, "rw"),
    _mmap("p", 4, 2, "rw"),
    _mmap("p", 2, 2, "rw", note="prev grows over the hole and swallows next"),
])

_define("merge-refused-flags", "Different flags keep neighbours apart, even invisible ones", """
    aaaabbcc: r-- next to rw-, then rw- with MAP_NORESERVE. is_mergeable_vma() compares
    vm_flags: a and b differ in VM_WRITE (visible in the maps perms), b and c only in
    flags /proc/PID/maps does not show: VM_NORESERVE, and VM_ACCOUNT, which a
    MAP_NORESERVE mapping is not charged. Two rw-p lines side by side that are still two
    VMAs.""", [
    _spawn(),
    _mmap("p", 0, 4, "r"),
    _mmap("p", 4, 2, "rw"),
    _mmap("p", 6, 2, "rw", flags=FIXED + "|noreserve", note="VM_NORESERVE differs"),
])

_define("merge-refused-anon-vma", "VMAs with different anon_vmas never merge", """
    AaaaNBbbb: two VMAs written separately each get their own anon_vma. Filling the hole
    between them merges the new page with the left VMA only (prev and next have different
    anon_vmas, so they cannot both be merged), and even making the flags identical on
    both sides (mprotect all r--, then all rw-) leaves two VMAs:
    is_mergeable_anon_vma() requires the same anon_vma when both have one.""", [
    _spawn(),
    _mmap("p", 0, 4, "rw"),
    _write("p", 0, "left"),
    _mmap("p", 5, 4, "rw"),
    _write("p", 5, "right"),
    _mmap("p", 4, 1, "rw", note="merges with prev only"),
    _mprotect("p", 0, 9, "r"),
    _mprotect("p", 0, 9, "rw", note="still two VMAs"),
])

_define("merge-refused-fork-child", "A forked VMA refuses a merge its parent accepts", """
    After fork, the child's VMA is chained to the parent's anon_vma as well as its own.
    The same mmap next to it merges in the parent (one VMA) but not in the child (two):
    since 6.16 is_mergeable_anon_vma() refuses only such fork children
    (vma_had_uncowed_parents() in 6.18), to keep the anon_vma hierarchy from growing.""", [
    _spawn(),
    _mmap("p", 0, 4, "rw"),
    _write("p", 0, "x"),
    _fork("p", "child"),
    _mmap("p", 4, 4, "rw", note="merges: one VMA"),
    _mmap("child", 4, 4, "rw", note="refused: two VMAs"),
])

_define("merge-refused-pgoff", "File mappings merge only where file offsets are contiguous", """
    A private, read-only mapping of pages 0-1 of /data, then of page 2 right after it:
    the file offsets continue, so the VMA grows (one VMA, pages 0-2). Then page 0 of the
    file again right after that: the flags and file match, but vm_pgoff would jump back
    from 3 to 0, so can_vma_merge_after() refuses and there are two VMAs.""", [
    _spawn(),
    {"call": "create_file", "path": "/data", "data": {"fill": "data", "size": "16K"}},
    {"call": "open", "proc": "p", "path": "/data", "as": "fd"},
    _mmap("p", 0, 2, "r", flags="private|fixed", fd="fd", offset=0),
    _mmap("p", 2, 1, "r", flags="private|fixed", fd="fd", offset="8K",
          note="offset 2 pages follows pgoff 0 + 2 pages: merged"),
    _mmap("p", 3, 1, "r", flags="private|fixed", fd="fd", offset=0,
          note="pgoff 0 does not follow pgoff 3: refused"),
])

# -- vma_merge_existing_range(): mprotect of part or all of a VMA ------------------------------------

_define("mprotect-merge-left-partial", "mprotect the head of a VMA: prev grows (case 5)", """
    aaaabbbb with a r-- and b rw-; mprotect [4,6) r--: aaaaaabb. The changed head of b
    joins a: prev is expanded and b shrinks from below (its vm_start and vm_pgoff move up
    by two pages). Two VMAs, the same two objects.""", [
    _spawn(),
    _mmap("p", 0, 4, "r"),
    _mmap("p", 4, 4, "rw"),
    _mprotect("p", 4, 2, "r"),
])

_define("mprotect-merge-right-partial", "mprotect the tail of a VMA: next grows down (case 4)", """
    aaaabbbb with a rw- and b r--; mprotect [2,4) r--: aabbbbbb. The changed tail of a
    joins b: next grows down (its vm_pgoff drops by two pages) and a shrinks. The only
    existing-range merge whose result is next while the VMA that changed survives.""", [
    _spawn(),
    _mmap("p", 0, 4, "rw"),
    _mmap("p", 4, 4, "r"),
    _mprotect("p", 2, 2, "r"),
])

_define("mprotect-merge-both", "mprotect a middle VMA back: prev swallows it and next (case 6)", """
    aaaaaaaa; mprotect [2,5) r-- splits it in three (aabbbccc); mprotect [2,5) rw- again
    makes the middle equal to both neighbours: prev is expanded to next's end, and the
    middle and next VMAs are removed. One VMA, prev's object.""", [
    _spawn(),
    _mmap("p", 0, 8, "rw"),
    _mprotect("p", 2, 3, "r", note="split in three"),
    _mprotect("p", 2, 3, "rw", note="merged with both neighbours"),
])

_define("mprotect-merge-left-full", "mprotect a whole VMA like prev: prev swallows it (case 7)", """
    aaaabbbbcccc with a r--, b rw-, c rwx; mprotect all of b r--: aaaaaaaacccc. prev grows
    over b, b is removed; c differs and stays.""", [
    _spawn(),
    _mmap("p", 0, 4, "r"),
    _mmap("p", 4, 4, "rw"),
    _mmap("p", 8, 4, "rwx"),
    _mprotect("p", 4, 4, "r"),
])

_define("mprotect-merge-right-full", "mprotect a whole VMA like next: next swallows it (case 8)", """
    aaaabbbbcccc with a r--, b rw-, c rwx; mprotect all of b rwx: aaaacccccccc. next grows
    down over b (its vm_pgoff drops by four pages) and b is removed: the surviving object
    is next, as since Linux 4.x.""", [
    _spawn(),
    _mmap("p", 0, 4, "r"),
    _mmap("p", 4, 4, "rw"),
    _mmap("p", 8, 4, "rwx"),
    _mprotect("p", 4, 4, "rwx"),
])

# -- splitting ------------------------------------------------------------------------------------------

_define("split-munmap", "munmap in the middle splits a VMA in two and frees its frames", """
    AAAAAAAA (populated); munmap [2,5): AA...BBB. __split_vma() cuts the VMA twice, the
    middle piece is removed, and the three frames it mapped go back to the free list.""", [
    _spawn(),
    _mmap("p", 0, 8, "rw", flags=FIXED + "|populate"),
    _munmap("p", 2, 3),
])

_define("split-mprotect", "mprotect in the middle splits a VMA in three", """
    aaaaaaaa; mprotect [2,5) r--: aabbbccc (rw- r-- rw-). vma_modify() finds no merge and
    splits twice; the original VMA object is the middle piece, the one whose flags
    changed.""", [
    _spawn(),
    _mmap("p", 0, 8, "rw"),
    _mprotect("p", 2, 3, "r"),
])

_define("split-max-map-count", "A split that would exceed vm.max_map_count fails with ENOMEM", """
    With vm.max_map_count set to the current number of VMAs (10: nine from exec and the
    arena), munmap of one page in the middle of the arena would need a new VMA and fails
    with ENOMEM, changing nothing; munmap of the first page only trims the VMA and
    succeeds.""", [
    _spawn(),
    _mmap("p", 0, 8, "rw"),
    {"call": "set_sysctl", "name": "vm.max_map_count", "value": 10},
    _munmap("p", 2, 1, expect="ENOMEM", note="a split needs an 11th VMA"),
    _munmap("p", 0, 1, note="trimming the head needs none"),
])

_define("segv-accerr-maperr", "Refused accesses: SEGV_ACCERR and SEGV_MAPERR", """
    A write to a page made read-only is refused with SIGSEGV and si_code SEGV_ACCERR (a VMA
    is there, its permissions forbid the write); a write to a hole is SEGV_MAPERR (no
    VMA). Neither changes memory: the page still reads "hi".""", [
    _spawn(),
    _mmap("p", 0, 2, "rw"),
    _write("p", 0, "hi"),
    _mprotect("p", 0, 2, "r"),
    _write("p", 0, "x", expect="SEGV_ACCERR"),
    _write("p", 4, "x", expect="SEGV_MAPERR"),
    _read("p", 0, 2, returns="hi"),
])

# -- fork, anon_vma and COW -----------------------------------------------------------------------------

_define("anon-vma-reuse-fork", "anon_vma_fork() reuses an idle anon_vma down a fork chain", """
    a writes a page and forks b; a exits; b forks c; b exits; c forks d. When c forked,
    b's anon_vma was still used by b, so c got a new one. When d forks, b's anon_vma has
    no active VMA and one child anon_vma: anon_vma_clone() reuses it for d instead of
    allocating another (num_children < 2 && num_active_vmas == 0), so the hierarchy stops
    growing. d's VMA's anon_vma is b's, and the fork allocates no anon_vma.""", [
    _spawn("a"),
    _mmap("a", 0, 1, "rw"),
    _write("a", 0, "A"),
    _fork("a", "b"),
    {"call": "exit", "proc": "a"},
    _fork("b", "c"),
    {"call": "exit", "proc": "b"},
    _fork("c", "d", ),
    _read("d", 0, 1, returns="A"),
])

_define("cow-chain", "Copy-on-write down a fork of a fork", """
    p writes pages 0-2, forks child, which forks grandchild: every page is one frame
    mapped three times (mapcount 3). child writes page 1 and grandchild page 2: each
    write copies the page for the writer only. grandchild then writes page 1 too (a copy:
    p still maps the original), after which p's write to page 1 finds the frame mapped
    once and reuses it without a copy. End: page 0 shared by all three (mapcount 3),
    page 1 private everywhere (p keeps the original frame), page 2 shared by p and child
    (mapcount 2), grandchild has its own copy.""", [
    _spawn(),
    _mmap("p", 0, 3, "rw"),
    _write("p", 0, "P0"),
    _write("p", 1, "P1"),
    _write("p", 2, "P2"),
    _fork("p", "child"),
    _fork("child", "grandchild"),
    _write("child", 1, "C1"),
    _write("grandchild", 2, "G2"),
    _write("grandchild", 1, "G1"),
    _write("p", 1, "Q1", note="mapcount 1: reused, no copy"),
])

_define("zero-page-cow", "Reads map the shared zero page; the first write copies", """
    Reading untouched anonymous memory maps the one shared zero page, read-only: both
    pages show the same PFN, KPF_ZERO_PAGE, kpagecount 0, not exclusive. Writing page 0
    faults again (do_wp_page on the zero page) and maps a fresh zero-filled page of its
    own, exclusive with mapcount 1; page 1 still maps the zero page.""", [
    _spawn(),
    _mmap("p", 0, 2, "rw"),
    _read("p", 0, 1, returns={"hex": "00"}),
    _read("p", 1, 1, returns={"hex": "00"}),
    _write("p", 0, "z"),
    _read("p", 0, 2, returns={"hex": "7a00"}),
])

_define("reclaim-rmap-swap", "Reclaim unmaps a shared page from every process through rmap", """
    With swap, p writes two pages and forks child: both pages are mapped twice. Reclaim
    frees them: for each page try_to_unmap() walks the anon_vma (rmap) and replaces both
    PTEs with the same swap entry. child's read swaps page 0 back in; p's read then finds
    it in the swap cache, so both map the same frame again (mapcount 2), with the data
    intact.""", [
    _spawn(),
    _mmap("p", 0, 2, "rw"),
    _write("p", 0, "zero"),
    _write("p", 1, "one"),
    _fork("p", "child"),
    {"call": "reclaim", "nr_pages": 32, "note": "frees the two shared pages (and more)"},
    _read("child", 0, 4, returns="zero"),
    _read("p", 0, 4, returns="zero"),
], machine={"ram": "64M", "swap": "1M"})

# -- CPUs and TLBs ---------------------------------------------------------------------------------------

_define("tlb-shootdown", "munmap flushes the TLB of every CPU that runs the address space", """
    p runs on CPU 0 of two. It writes page 8 and unmaps it: only CPU 0 has ever loaded
    p's address space, so the flush is local (TLB_LOCAL_MM_SHOOTDOWN, one page) and no
    IPI is sent. Then a thread t of p on CPU 1 reads page 0, so CPU 1's TLB caches that
    translation. munmap of page 0 from CPU 0 must remove it there too: flush_tlb_mm_range()
    sends an IPI (TLB_REMOTE_SEND_IPI) and CPU 1 flushes the page (TLB_REMOTE_SHOOTDOWN)
    before the frame is freed. t's next read faults (SIGSEGV) instead of reading a freed
    frame, and no TLB holds a stale entry.""", [
    _spawn(),
    _mmap("p", 0, 4, "rw"),
    _mmap("p", 8, 1, "rw"),
    _write("p", 8, "solo"),
    _munmap("p", 8, 1, note="only CPU 0 has this mm: a local flush, no IPI"),
    _write("p", 0, "shared"),
    {"call": "clone_thread", "proc": "p", "cpu": 1, "as": "t"},
    _read("t", 0, 6, returns="shared", note="CPU 1 caches the translation"),
    _munmap("p", 0, 4, note="IPI: CPU 1 flushes the page too"),
    _read("t", 0, 1, expect="SEGV_MAPERR", note="no stale translation left on CPU 1"),
], machine={"cpus": 2})

_define("tlb-shootdown-skipped", "A forgotten TLB flush lets a thread read someone else's page", """
    The same two CPUs, but the munmap's TLB flush is skipped (inject_skip_flush, a kernel
    bug made on purpose). The page table no longer maps page 0 and its frame is freed, yet
    CPU 1's TLB still translates page 0 to that frame. p's next new page reuses the frame
    (the free list is last-in, first-out) and p writes "secret" into it: t, reading its
    unmapped page 0 through the stale entry, gets "secret". vw.validate() reports the stale
    entries.""", [
    _spawn(),
    _mmap("p", 0, 2, "rw"),
    _write("p", 0, "shared"),
    {"call": "clone_thread", "proc": "p", "cpu": 1, "as": "t"},
    _read("t", 0, 6, returns="shared"),
    {"call": "inject_skip_flush", "cause": "munmap", "note": "the next munmap flush is lost"},
    _munmap("p", 0, 1, note="no flush: CPU 0 and CPU 1 keep the translation"),
    _write("p", 1, "secret", note="the freed frame is reused for page 1"),
    _read("t", 0, 6, returns="secret", note="a use-after-free through the TLB"),
], machine={"cpus": 2})


def names():
    """The names of the library's scenarios, in library order."""
    return list(_LIBRARY)


def get(name):
    """A fresh :class:`~vmwidgets.scenarios.Scenario` of the library by name."""
    if name not in _LIBRARY:
        close = difflib.get_close_matches(str(name), _LIBRARY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no scenario named {name!r}{hint} (see vw.scenarios.names())")
    return Scenario.from_dict(_LIBRARY[name])
