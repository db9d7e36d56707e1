"""Seeded exercises: a question, its structured answer and a worked answer, from one run.

Each kind builds a small machine from ``random.Random(seed)`` alone (no time, no hash
order, no set iteration), runs the model, and reads question, answer and explanation off
the one run, so the three always agree and the same seed gives the same exercise on any
machine. ``check(student_answer)`` compares an answer with the model's and names the
mistake, as a tutor would.

Kinds (``KINDS``):

``translate``
    walk the 4-level page table for one virtual address: indices, entries, PFN, physical
    address, or the level where the walk stops with a page fault.
``maps``
    predict the /proc/PID/maps lines of an arena after a few mmap/munmap/mprotect calls.
``cow``
    after fork(s) and writes: which processes share each page's frame, its mapcount, and
    who still has the original frame.
``rmap``
    which processes' VMAs an rmap walk of one page visits, and which of them map it.
``tlb``
    hits, misses and flushes of the per-CPU TLBs for accesses on one or two CPUs.

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
from .anon_vma import AnonVmaGroups
from .tlb import Tlb
from .translate import Translate
from .unmapped_area import UnmappedArea

__all__ = ["ARENA", "Exercise", "Feedback", "KINDS", "exercise", "Translate", "Maps", "Cow",
           "Rmap", "Tlb"]


#: Exercise kinds by name, in the order ``--list`` shows them.
KINDS = {cls.kind: cls for cls in (Translate, Maps, Cow, Rmap, Tlb, FindVma, Pagemap, Pte, Flush, UnmappedArea, Merge, Reclaim, Split, AnonVmaGroups)}


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
