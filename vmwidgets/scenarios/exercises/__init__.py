"""Seeded exercises: a question, its structured answer and a worked answer, from one run.

Each kind builds a small machine from ``random.Random(seed)`` alone (no time, no hash
order, no set iteration), runs the model, and reads question, answer and explanation off
the one run, so the three always agree and the same seed gives the same exercise on any
machine. ``check(student_answer)`` compares an answer with the model's and names the
mistake, as a tutor would.

Kinds (``KINDS``), in the order of the lessons that use them:

``find_vma``, ``unmapped_area`` (lesson 1)
    which VMA ``find_vma`` returns for an address and whether the address is inside it;
    where ``mmap(NULL, ...)`` or a hint puts a new mapping (top-down search).
``merge``, ``maps`` (lessons 2, 3)
    the VMAs after an mmap/mprotect next to others, merged with prev/next/both or not and
    why; the /proc/PID/maps lines of an arena after a few mmap/munmap/mprotect calls.
``split`` (lesson 3)
    which munmap/mprotect calls fail with ENOMEM at ``vm.max_map_count``, and map_count.
``anon_vma`` (lesson 4)
    which VMAs have an anon_vma after writes, mprotects and a fork, and which share one.
``cow``, ``pagemap`` (lesson 5)
    after fork(s) and writes: which processes share each page's frame, its mapcount, and
    who still has the original frame; the pagemap present/exclusive/zero-page bits.
``translate``, ``pte`` (lesson 6)
    walk the 4-level page table for one virtual address (indices, entries, PFN, physical
    address, or where the walk stops); decode one PTE value.
``tlb``, ``flush`` (lesson 7)
    hits, misses and flushes of the per-CPU TLBs; which calls flush, a range or in full,
    and which send a shootdown IPI.
``rmap``, ``reclaim`` (lesson 8)
    which processes' VMAs an rmap walk of one page visits; what reclaim does to each page
    (swapped, dropped, written back) and what pagemap shows after.

>>> import vmwidgets as vw
>>> ex = vw.exercise("translate", 1)
>>> ex == vw.exercise("translate", 1)
True
>>> ex.check(ex.answer).correct
True
>>> phys = ex.answer["phys"]
>>> if phys is not None:
...     print(ex.check(phys >> 12).mistakes[0][:27])
... else:
...     print("that is the PFN, not the ph")
that is the PFN, not the ph
"""

from .base import ARENA, Exercise, Feedback
from .anon_vma import AnonVmaGroups
from .cow import Cow
from .find_vma import FindVma
from .flush import Flush
from .maps import Maps
from .merge import Merge
from .pagemap import Pagemap
from .pte import Pte
from .reclaim import Reclaim
from .rmap import Rmap
from .split import Split
from .tlb import Tlb
from .translate import Translate
from .unmapped_area import UnmappedArea

__all__ = ["ARENA", "Exercise", "Feedback", "KINDS", "exercise", "FindVma", "UnmappedArea",
           "Merge", "Maps", "Split", "AnonVmaGroups", "Cow", "Pagemap", "Translate", "Pte", "Tlb",
           "Flush", "Rmap", "Reclaim"]


#: Exercise kinds by name, in the order ``--list`` shows them.
KINDS = {cls.kind: cls for cls in (FindVma, UnmappedArea, Merge, Maps, Split, AnonVmaGroups, Cow,
                                   Pagemap, Translate, Pte, Tlb, Flush, Rmap, Reclaim)}


def exercise(kind, seed=0):
    """The exercise of ``kind`` for ``seed``: the same on every machine and every run.

    >>> import vmwidgets as vw
    >>> ex = vw.exercise("maps", 4)
    >>> print(ex.params_text().splitlines()[:2])
    ['ARG kind maps', 'ARG seed 4']
    """
    if kind not in KINDS:
        raise ValueError(f"unknown exercise kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return KINDS[kind](seed)
