"""Reverse mapping: anon_vma, anon_vma_chain and the page rmap counters (mm/rmap.c, 6.18).

Simplification: an anon_vma's interval tree (``rb_root``) is a list of AVCs, searched
linearly by page offset; the locks are not modelled.
"""

from .mm_types import AnonVma, AnonVmaChain
from .flags import PAGE_SHIFT, VM_ACCESS_FLAGS, VM_SOFTDIRTY
from . import pgtable
from .. import trace
from ..trace import traced


# -- anon_vma lifetime ---------------------------------------------------------------------

@traced(hide=("machine",))
def anon_vma_alloc(machine):
    """mm/rmap.c: anon_vma_alloc(): refcount 1, its own root and parent."""
    anon_vma = AnonVma(machine.new_id("anon_vma"))
    machine.anon_vmas[anon_vma.id] = anon_vma
    if trace._active is not None:
        trace.note(f"anon_vma#{anon_vma.id} allocated")
    return anon_vma


def put_anon_vma(machine, anon_vma):
    """include/linux/rmap.h: put_anon_vma(): free on the last reference, then drop the root's."""
    anon_vma.refcount -= 1
    if anon_vma.refcount == 0:
        anon_vma.freed = True
        machine.anon_vmas.pop(anon_vma.id, None)
        if trace._active is not None:
            trace.note(f"anon_vma#{anon_vma.id} freed")
        if anon_vma.root is not anon_vma:
            put_anon_vma(machine, anon_vma.root)


def anon_vma_chain_link(vma, anon_vma):
    """mm/rmap.c: anon_vma_chain_link(): onto the VMA's list (at the head) and the tree."""
    avc = AnonVmaChain(vma, anon_vma)
    vma.anon_vma_chain.insert(0, avc)
    anon_vma.rb_root.append(avc)
    if trace._active is not None:
        trace.note(f"avc links {vma.__trace__()} to anon_vma#{anon_vma.id}")
    return avc


def _set_anon_vma(vma, anon_vma):
    """``vma->anon_vma = anon_vma``: where the VMA's new anonymous pages will be filed."""
    vma.anon_vma = anon_vma
    if trace._active is not None:
        trace.note(f"{vma.__trace__()}.anon_vma = "
                   + (f"anon_vma#{anon_vma.id}" if anon_vma is not None else "NULL"))


# -- finding an anon_vma to share with a neighbour (mm/vma.c) ------------------------------------

def anon_vma_compatible(a, b):
    """mm/vma.c: anon_vma_compatible(): ``a`` just below ``b``, same file (the same
    ``struct file``, as in is_mergeable_vma()), flags equal but for
    R/W/X, and linear page offsets."""
    return (a.vm_end == b.vm_start and a.vm_file is b.vm_file
            and not ((a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY))
            and b.vm_pgoff == a.vm_pgoff + ((b.vm_start - a.vm_start) >> PAGE_SHIFT))


def reusable_anon_vma(old, a, b):
    """mm/vma.c: reusable_anon_vma(): ``old``'s anon_vma if compatible and never forked."""
    if anon_vma_compatible(a, b) and old.anon_vma is not None and len(old.anon_vma_chain) == 1:
        return old.anon_vma
    return None


@traced(null=True)
def find_mergeable_anon_vma(vma):
    """mm/vma.c: find_mergeable_anon_vma(): try the next VMA first, then the previous one."""
    mm = vma.vm_mm
    nxt = mm.vma_next(vma)
    if nxt is not None and nxt.vm_start == vma.vm_end:
        found = reusable_anon_vma(nxt, vma, nxt)
        if found is not None:
            return found
    prev = mm.vma_prev(vma)
    if prev is not None:
        return reusable_anon_vma(prev, prev, vma)
    return None


def anon_vma_prepare(vma):
    """include/linux/rmap.h: anon_vma_prepare(), the inline wrapper: nothing to do when the
    VMA has its anon_vma already, else :func:`__anon_vma_prepare`.
    Returns ``(anon_vma, reused)``."""
    if vma.anon_vma is not None:
        return vma.anon_vma, True
    return __anon_vma_prepare(vma)


@traced(name="__anon_vma_prepare", result=lambda r: 0)
def __anon_vma_prepare(vma):
    """mm/rmap.c: __anon_vma_prepare(): give a VMA its anon_vma on its first anonymous page.

    Reuses a neighbour's anon_vma where ``find_mergeable_anon_vma`` allows, so the two
    VMAs can still merge later; otherwise allocates a new root.
    Returns ``(anon_vma, reused)``.
    """
    machine = vma.vm_mm.machine
    anon_vma = find_mergeable_anon_vma(vma)
    reused = anon_vma is not None
    if anon_vma is None:
        anon_vma = anon_vma_alloc(machine)
        anon_vma.num_children += 1  # the self-parent link of a new root
    _set_anon_vma(vma, anon_vma)
    anon_vma_chain_link(vma, anon_vma)
    anon_vma.num_active_vmas += 1
    return anon_vma, reused


@traced(result=lambda r: 0)
def anon_vma_clone(dst, src):
    """mm/rmap.c: anon_vma_clone(): attach ``dst`` to every anon_vma ``src`` is on.

    Walks ``src``'s chain oldest first. When ``dst`` has no anon_vma yet (only fork gets
    here that way) an anon_vma with no VMA and at most one child is reused.
    """
    for pavc in reversed(src.anon_vma_chain):
        anon_vma = pavc.anon_vma
        anon_vma_chain_link(dst, anon_vma)
        if (dst.anon_vma is None and src.anon_vma is not None
                and anon_vma.num_children < 2 and anon_vma.num_active_vmas == 0):
            _set_anon_vma(dst, anon_vma)
    if dst.anon_vma is not None:
        dst.anon_vma.num_active_vmas += 1


@traced(result=lambda reused: 0)
def anon_vma_fork(vma, pvma):
    """mm/rmap.c: anon_vma_fork(): attach a child's VMA to the parent VMA's anon_vmas (so
    rmap finds the shared pages in the child too), then give it an anon_vma of its own for
    the pages it will COW, unless an idle one of the family can be reused (6.x:
    ``num_children < 2 && num_active_vmas == 0``). Returns True when one was reused."""
    if pvma.anon_vma is None:
        return False
    vma.anon_vma = None
    anon_vma_clone(vma, pvma)
    if vma.anon_vma is not None:
        return True
    machine = vma.vm_mm.machine
    anon_vma = anon_vma_alloc(machine)
    anon_vma.num_active_vmas += 1
    anon_vma.root = pvma.anon_vma.root
    anon_vma.parent = pvma.anon_vma
    anon_vma.root.refcount += 1          # get_anon_vma(root): the root outlives its children
    _set_anon_vma(vma, anon_vma)
    anon_vma_chain_link(vma, anon_vma)
    anon_vma.parent.num_children += 1
    return False


@traced
def unlink_anon_vmas(vma):
    """mm/rmap.c: unlink_anon_vmas(): take a dying VMA off every anon_vma; free the empty ones."""
    machine = vma.vm_mm.machine
    emptied = []
    for avc in list(vma.anon_vma_chain):
        anon_vma = avc.anon_vma
        anon_vma.rb_root.remove(avc)
        if trace._active is not None:
            trace.note(f"avc of {vma.__trace__()} unlinked from anon_vma#{anon_vma.id}")
        if not anon_vma.rb_root:
            anon_vma.parent.num_children -= 1
            emptied.append(anon_vma)
    if vma.anon_vma is not None:
        vma.anon_vma.num_active_vmas -= 1
        vma.anon_vma = None
    vma.anon_vma_chain = []
    for anon_vma in emptied:
        put_anon_vma(machine, anon_vma)


@traced(result=lambda r: 0)
def dup_anon_vma(dst, src):
    """mm/vma.c: dup_anon_vma(): the VMA that grows over ``src``'s pages takes its anon_vma."""
    if src.anon_vma is not None and dst.anon_vma is None:
        _set_anon_vma(dst, src.anon_vma)
        anon_vma_clone(dst, src)
        return True
    return False


# -- page rmap counters ----------------------------------------------------------------------

@traced(name="folio_add_new_anon_rmap")
def folio_add_new_anon_rmap(page, vma, address):
    """mm/rmap.c: folio_add_new_anon_rmap(..., RMAP_EXCLUSIVE): a brand-new anonymous page."""
    page.kind = "anon"
    page.mapcount = 1
    page.mapping = vma.anon_vma
    page.index = vma.linear_page_index(address)
    page.anon_exclusive = True
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x}: anon, exclusive, mapcount 1, filed under "
                   f"{trace.fmt_value(vma.anon_vma)} at index {page.index:#x}")


@traced(name="folio_add_file_rmap_pte")
def folio_add_file_rmap_pte(page):
    """mm/rmap.c: folio_add_file_rmap_pte(): one more PTE maps this page-cache page."""
    page.mapcount += 1
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x}: mapcount {page.mapcount - 1} -> {page.mapcount}")


@traced(name="folio_remove_rmap_pte")
def folio_remove_rmap_pte(page):
    """mm/rmap.c: folio_remove_rmap_pte(): one PTE fewer. ``mapping`` is kept until freed."""
    page.mapcount -= 1
    if page.mapcount == 0:
        page.anon_exclusive = False
    if trace._active is not None:
        trace.note(f"pfn {page.pfn:#x}: mapcount {page.mapcount + 1} -> {page.mapcount}")


def vma_address(page, vma):
    """mm/internal.h: vma_address(): where ``page`` would sit in ``vma``, or None."""
    pgoff = page.index
    if not vma.vm_pgoff <= pgoff < vma.vm_pgoff + vma.pages():
        return None
    return vma.vm_start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)


def rmap_walk(machine, pfn):
    """mm/rmap.c: rmap_walk(): yield ``(process, vma, address)`` for each PTE mapping ``pfn``.

    Anonymous pages are found through their anon_vma's chains, file pages through the
    file's ``i_mmap``; each candidate is checked against the page table
    (``page_vma_mapped_walk``).
    """
    page = machine.phys.pages[pfn]
    if page.kind == "anon":
        vmas = [avc.vma for avc in page.mapping.rb_root]
    elif page.kind == "file":
        vmas = list(page.mapping.i_mmap)
    else:
        return
    for vma in vmas:
        address = vma_address(page, vma)
        if address is None:
            continue
        pte = pgtable.get_pte(vma.vm_mm, address)
        if pgtable.pte_present(pte) and pgtable.pte_pfn(pte) == pfn:
            yield vma.vm_mm.owner, vma, address


@traced(name="rmap_walk", hide=("machine", "rmap_one"), result=lambda r: None)
def rmap_walk_apply(machine, page, rmap_one):
    """mm/rmap.c: rmap_walk(): call ``rmap_one(page, vma, address)`` for each PTE mapping
    ``page`` (the kernel's ``rwc->rmap_one``), through :func:`rmap_walk_anon` or
    :func:`rmap_walk_file`. Stops early when ``rmap_one`` returns False."""
    walk = rmap_walk_anon if page.kind == "anon" else rmap_walk_file
    return walk(machine, page, rmap_one)


@traced(hide=("machine", "rmap_one"), result=lambda r: None)
def rmap_walk_anon(machine, page, rmap_one):
    """mm/rmap.c: rmap_walk_anon(): the VMAs on the page's anon_vma, each checked against
    its page table (page_vma_mapped_walk)."""
    return _rmap_walk_each(machine, page, rmap_one)


@traced(hide=("machine", "rmap_one"), result=lambda r: None)
def rmap_walk_file(machine, page, rmap_one):
    """mm/rmap.c: rmap_walk_file(): the VMAs in the file's i_mmap."""
    return _rmap_walk_each(machine, page, rmap_one)


def _rmap_walk_each(machine, page, rmap_one):
    for _proc, vma, address in list(rmap_walk(machine, page.pfn)):
        if rmap_one(page, vma, address) is False:
            return False
    return True


def anon_vma_tree_text(machine, addr=None):
    """The anon_vma trees of the machine as an ASCII picture, one line per anon_vma and AVC.

    Each anon_vma shows its counters; below it, the VMAs chained to it and its child
    anon_vmas. ``*`` marks the VMA whose own anon_vma it is (where its new pages go).
    With ``addr``, only the trees holding a VMA that contains that address are drawn::

        anon_vma 1 (root) children=2 active=1
        |-- pid 1 VMA 0x7ffff7ff3000 *
        |-- pid 2 VMA 0x7ffff7ff3000
        `-- anon_vma 2 children=0 active=1
            `-- pid 2 VMA 0x7ffff7ff3000 *
    """
    live = sorted(machine.anon_vmas.values(), key=lambda av: av.id)
    if addr is not None:
        roots = {av.root.id for av in live
                 if any(avc.vma.vm_start <= addr < avc.vma.vm_end for avc in av.rb_root)}
        live = [av for av in live if av.root.id in roots]
    kids = {}
    for av in live:
        if av.parent is not av:
            kids.setdefault(av.parent.id, []).append(av)
    lines = []

    def show(av, prefix, last, top):
        head = "" if top else prefix + ("`-- " if last else "|-- ")
        role = " (root)" if av.root is av else ""
        lines.append(f"{head}anon_vma {av.id}{role} children={av.num_children} "
                     f"active={av.num_active_vmas}")
        inner = prefix + ("" if top else ("    " if last else "|   "))
        entries = [("avc", avc) for avc in sorted(
            av.rb_root, key=lambda a: (a.vma.vm_mm.owner.pid, a.vma.vm_start))]
        entries += [("child", child) for child in kids.get(av.id, [])]
        for i, (kind, item) in enumerate(entries):
            end = i == len(entries) - 1
            if kind == "avc":
                vma = item.vma
                mark = " *" if vma.anon_vma is av else ""
                lines.append(f"{inner}{'`-- ' if end else '|-- '}pid {vma.vm_mm.owner.pid} "
                             f"VMA {vma.vm_start:#x}{mark}")
            else:
                show(item, inner, end, False)

    for av in live:
        if av.parent is av or av.parent not in live:
            show(av, "", True, True)
    return "\n".join(lines)
