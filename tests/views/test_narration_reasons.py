"""Regressions in narrate(): reasons and wordings the lesson writers found wrong.

Each test builds the case on a real machine and checks the corrected sentence and the
absence of the wrong one.
"""

import vmwidgets as vw
from vmwidgets.views import narrate_step

RW = vw.PROT_READ | vw.PROT_WRITE
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
B = 0x10000000
PAGE = 4096


def test_mprotect_refusal_reads_flags_after_vm_account():
    """rw-written | r-- | rw-written, mprotect the middle to rw: mprotect_fixup() adds
    VM_ACCOUNT before vma_modify_flags(), so the next VMA is refused for its other
    anon_vma, not for VM_ACCOUNT."""
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(B, PAGE, RW, FIXED)
    p.write(B, b"x")
    p.mmap(B + PAGE, PAGE, vw.PROT_READ, FIXED)
    p.mmap(B + 2 * PAGE, PAGE, RW, FIXED)
    p.write(B + 2 * PAGE, b"y")
    prev_av = p.mm.vma_lookup(B).anon_vma.id
    next_av = p.mm.vma_lookup(B + 2 * PAGE).anon_vma.id
    p.mprotect(B + PAGE, PAGE, RW)
    text = narrate_step(m)
    assert (f"it did not also merge with the next VMA [{B + 2 * PAGE:#x}-{B + 3 * PAGE:#x} "
            f"rw-p], which has another anon_vma (#{next_av} vs #{prev_av})") in text
    assert "VM_ACCOUNT differ" not in text


def test_mprotect_merge_counts_the_ranges_own_anon_vma():
    """A range whose VMA has an anon_vma merges into a neighbour without one: not
    "neither has an anon_vma"."""
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(B + PAGE, PAGE, RW, FIXED)
    p.write(B + PAGE, b"x")
    p.mprotect(B + PAGE, PAGE, vw.PROT_READ)
    p.mmap(B, PAGE, RW, FIXED)
    av = p.mm.vma_lookup(B + PAGE).anon_vma.id
    assert p.mm.vma_lookup(B).anon_vma is None
    p.mprotect(B + PAGE, PAGE, RW)
    assert p.mm.vma_lookup(B).vm_end == B + 2 * PAGE
    assert p.mm.vma_lookup(B).anon_vma.id == av
    text = narrate_step(m)
    assert "neither has an anon_vma" not in text
    assert (f"the neighbour has no anon_vma while the range's VMA has #{av}, which is "
            f"compatible: the merged VMA takes over #{av}") in text


def test_in_place_change_then_absorbing_the_next_vma():
    """One mprotect changes [A] in place, then merges [B] into it: the first sentence
    tells A's own new range, then the absorption, in the call tree's order."""
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(B, PAGE, vw.PROT_READ, FIXED)
    p.mmap(B + PAGE, PAGE, RW, FIXED)
    p.mprotect(B, 2 * PAGE, vw.PROT_READ | vw.PROT_EXEC)
    text = narrate_step(m)
    assert f"changed in place to [{B:#x}-{B + 2 * PAGE:#x}" not in text
    first = text.splitlines()[1]
    assert first.startswith(f"The whole VMA [{B:#x}-{B + PAGE:#x} r--p] changed its flags "
                            f"in place to [{B:#x}-{B + PAGE:#x} r-xp].")
    assert (f"Then it absorbed the next VMA [{B + PAGE:#x}-{B + 2 * PAGE:#x} rw-p], as told "
            f"next, and ended as [{B:#x}-{B + 2 * PAGE:#x} r-xp].") in first
