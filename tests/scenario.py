"""Helpers for scenario tests: small page-numbered addresses and ASCII pictures.

``picture(p)`` draws the arena one character per page: each VMA gets its own letter
(in address order), ``.`` is a hole, and a capital letter marks a page that is present
in the page table. So ``aaaBB.cc`` is three VMAs; the second has both pages faulted in.
"""

import vmwidgets as vw

P = vw.PAGE_SIZE
BASE = 0x100000000000
RW = vw.PROT_READ | vw.PROT_WRITE
R = vw.PROT_READ
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
FIXED = ANON | vw.MAP_FIXED


def pg(n):
    """Address of page ``n`` of the arena."""
    return BASE + n * P


def picture(p, pages=16, base=BASE):
    out = []
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    names = {}
    for i in range(pages):
        addr = base + i * P
        vma = p.mm.vma_lookup(addr)
        if vma is None:
            out.append(".")
            continue
        if vma.id not in names:
            names[vma.id] = next(letters)
        ch = names[vma.id]
        out.append(ch.upper() if p.pagemap(addr).present else ch)
    return "".join(out)


def perms(p, pages=16, base=BASE):
    """The perms of each VMA in the arena, in order, e.g. ``['rw-p', 'r--p']``."""
    return [v.perms() for v in p.mm.vmas_in(base, base + pages * P)]


def new_process():
    m = vw.Machine()
    return m, m.spawn()
