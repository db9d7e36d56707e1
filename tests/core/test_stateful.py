"""Stateful property test of the whole syscall surface (Hypothesis ``RuleBasedStateMachine``).

The rules are the syscalls and memory accesses of one process, aimed mostly at a small
arena (32 pages at ``ARENA``) and at the heap window above ``start_brk``, with MAP_FIXED,
MAP_FIXED_NOREPLACE and hints, lengths of 0..8 pages plus odd values, every protection,
the madvise advice that acts on a plain process, mremap in all its forms and brk.
Failing syscalls (``OSError``) and refused accesses (``SegmentationFault``) are normal
outcomes. After every step:

* ``vw.validate(m)`` must hold;
* every page of the shadow (below) must still be mapped.

The shadow ``self.known`` maps a page address to the page's full contents, for the pages
whose contents we are sure of: a fresh anonymous mapping (or brk, or the grown part of a
private anonymous mremap) is zero, a write stores its bytes, MADV_DONTNEED on private
anonymous memory zeroes, mremap carries pages to their new address, munmap / MAP_FIXED /
brk shrinking drop them. Every operation of the model acts on whole pages, so the shadow
is kept per page. Whatever we are unsure of (MADV_FREE, the result of a call that failed
half-way, shared memory once two addresses may alias it) is simply dropped: a page that
is not in the shadow is not checked. Reads check every byte of every shadowed page they
cover, and a ``read_back`` rule re-reads shadowed pages wherever they moved.

A ``SegmentationFault`` must change nothing: ``/proc/PID/maps``, the pagemap entries of
the pages accessed and the free-frame count are compared before and after, and the
``si_code`` must fit the address (SEGV_ACCERR inside a VMA, SEGV_MAPERR outside any).

The settings are deterministic (``derandomize=True``) and quick. To hunt for bugs, run the
machine longer with random seeds, e.g.::

    TestVmStateMachine.settings = settings(TestVmStateMachine.settings, derandomize=False,
                                           max_examples=3000, stateful_step_count=100)

Model bugs it found are kept at the end of this file as regression tests (each was a
strict xfail reproducer until the model was fixed).
"""

import errno

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import vmwidgets as vw

P = vw.PAGE_SIZE
ARENA = 0x1000_0000_0000
ARENA_PAGES = 32
#: start_brk of a spawned process (the exec layout has no ASLR); checked in ``setup``.
HEAP_BASE = 0x5555_5555_8000
HEAP_PAGES = 48
TASK_SIZE = (1 << 47) - P
U64 = (1 << 64) - 1


def page_down(a):
    return a - a % P


def page_up(a):
    return page_down(a + P - 1)


# -- strategies --------------------------------------------------------------------------------

@st.composite
def addresses(draw):
    """A syscall address: mostly a page in the arena or the heap window (either end
    included), sometimes not page aligned, sometimes an odd value."""
    kind = draw(st.integers(0, 19))
    if kind == 19:
        return draw(st.sampled_from([0, P, TASK_SIZE - P, TASK_SIZE, 1 << 47, -P, U64 - P + 1]))
    base, pages = (HEAP_BASE, HEAP_PAGES) if kind >= 14 else (ARENA, ARENA_PAGES)
    addr = base + draw(st.integers(0, pages)) * P
    if kind == 13:
        addr += draw(st.integers(1, P - 1))
    return addr


@st.composite
def lengths(draw):
    """0..8 pages, sometimes not a page multiple, sometimes absurd."""
    kind = draw(st.integers(0, 19))
    if kind == 19:
        return draw(st.sampled_from([1, P - 1, P + 1, 1 << 47, 1 << 63, U64, -P]))
    n = draw(st.integers(0, 8)) * P
    if kind == 18:
        n += draw(st.integers(1, P - 1))
    return n


@st.composite
def access_addresses(draw):
    """A user address to read or write: any byte of the arena or the heap window."""
    if draw(st.integers(0, 3)) == 3:
        base, pages = HEAP_BASE, HEAP_PAGES
    else:
        base, pages = ARENA, ARENA_PAGES
    return base + draw(st.integers(0, pages * P - 1))


PROTS = st.sampled_from(list(range(8)) * 3 + [
    vw.PROT_READ | vw.PROT_SEM, vw.PROT_READ | vw.PROT_GROWSDOWN, vw.PROT_READ | vw.PROT_GROWSUP,
    0x10])

MAP_TYPES = st.sampled_from([vw.MAP_PRIVATE] * 6 + [vw.MAP_SHARED] * 2
                            + [0, vw.MAP_SHARED_VALIDATE])
PLACEMENTS = st.sampled_from([vw.MAP_FIXED] * 3 + [vw.MAP_FIXED_NOREPLACE, 0])
EXTRA_FLAGS = st.sampled_from([0] * 10 + [vw.MAP_POPULATE, vw.MAP_NORESERVE, vw.MAP_STACK,
                                          vw.MAP_GROWSDOWN, vw.MAP_LOCKED,
                                          vw.MAP_POPULATE | vw.MAP_NONBLOCK])

ADVICE = st.sampled_from([
    vw.MADV_DONTNEED, vw.MADV_DONTNEED, vw.MADV_FREE, vw.MADV_DONTFORK, vw.MADV_DOFORK,
    vw.MADV_WIPEONFORK, vw.MADV_KEEPONFORK, vw.MADV_POPULATE_READ, vw.MADV_POPULATE_WRITE,
    vw.MADV_NORMAL, vw.MADV_RANDOM, vw.MADV_SEQUENTIAL, vw.MADV_WILLNEED, vw.MADV_COLD,
    vw.MADV_PAGEOUT, vw.MADV_DONTDUMP, vw.MADV_DODUMP, vw.MADV_HUGEPAGE, vw.MADV_NOHUGEPAGE,
    vw.MADV_MERGEABLE, vw.MADV_UNMERGEABLE, vw.MADV_DONTNEED_LOCKED, 7, 999])

MREMAP_FLAGS = st.sampled_from([
    0, 0, vw.MREMAP_MAYMOVE, vw.MREMAP_MAYMOVE,
    vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED,
    vw.MREMAP_MAYMOVE | vw.MREMAP_DONTUNMAP,
    vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED | vw.MREMAP_DONTUNMAP,
    vw.MREMAP_FIXED, vw.MREMAP_DONTUNMAP, 8])


def _long_data(n, first, step):
    # A page or more of bytes, built from three numbers: generating each byte would make
    # Hypothesis' test cases too large (and the steps that write them rare).
    return bytes((first + i * step) & 0xFF for i in range(n))


DATA = st.one_of(st.binary(min_size=1, max_size=24), st.just(b""),
                 st.builds(_long_data, st.integers(P - 8, P + 40), st.integers(0, 255),
                           st.integers(1, 255)))


class VmStateMachine(RuleBasedStateMachine):
    """One process of one machine, driven by syscalls and accesses."""

    @initialize(layout=st.lists(
        st.tuples(st.integers(0, ARENA_PAGES - 1), st.integers(1, 8), st.integers(0, 7),
                  st.sampled_from([vw.MAP_PRIVATE] * 3 + [vw.MAP_SHARED])), max_size=6),
        max_map_count=st.sampled_from([None] * 3 + [16, 20, 24]))
    def setup(self, layout, max_map_count):
        self.m = vw.Machine(ram="256M")
        self.p = self.m.spawn()
        mm = self.p.mm
        assert mm.start_brk == HEAP_BASE, hex(mm.start_brk)
        #: page address -> bytearray(PAGE_SIZE): the pages whose whole contents we know.
        self.known = {}
        #: set once shared memory may be visible at two addresses; shared pages are then
        #: no longer tracked (a write through one alias would change the other).
        self.shared_aliased = False
        # The heap of a freshly started process has never been written: zeroes.
        self.mark_zero(mm.start_brk, page_up(mm.brk))
        # Start with some of the arena mapped, so that more calls find something to act on.
        for page, npages, prot, map_type in layout:
            npages = min(npages, ARENA_PAGES - page)
            addr = ARENA + page * P
            self.p.mmap(addr, npages * P, prot, vw.MAP_ANONYMOUS | vw.MAP_FIXED | map_type)
            self.drop(addr, addr + npages * P)
            self.mark_zero(addr, addr + npages * P)
        if max_map_count is not None:
            # Low enough that splits and new VMAs run into it (ENOMEM, sometimes half-way).
            self.m.sysctl["vm.max_map_count"] = max_map_count

    def some_vma(self, data):
        """A VMA of the arena or the heap window (or None), to aim a call at."""
        vmas = (self.p.mm.vmas_in(ARENA, ARENA + ARENA_PAGES * P)
                + self.p.mm.vmas_in(HEAP_BASE, HEAP_BASE + HEAP_PAGES * P))
        if not vmas:
            return None
        return data.draw(st.sampled_from(vmas), label="vma")

    # -- shadow helpers ------------------------------------------------------------------------
    def vma_at(self, addr):
        return self.p.mm.vma_lookup(addr)

    def is_private_anon(self, vma):
        return vma is not None and vma.is_anonymous() and not vma.vm_flags & vw.VM_SHARED

    def trackable(self, vma):
        if vma is None:
            return False
        if self.is_private_anon(vma):
            return True
        # Shared anonymous memory: a shmem file, shown as /dev/zero (deleted).
        return (vma.vm_flags & vw.VM_SHARED and not self.shared_aliased
                and vma.vm_file is not None and vma.vm_file.shmem)

    def drop(self, start, end):
        """Forget the pages of [start, end) (page aligned or not; whole pages go)."""
        start, end = page_down(start), page_up(end)
        if end - start > 64 * P:
            for a in [a for a in self.known if start <= a < end]:
                del self.known[a]
        else:
            for a in range(start, end, P):
                self.known.pop(a, None)

    def mark_zero(self, start, end):
        """[start, end) was just mapped fresh: zeroes, where we can track it."""
        for a in range(page_down(start), page_up(end), P):
            if self.trackable(self.vma_at(a)):
                self.known[a] = bytearray(P)
            else:
                self.known.pop(a, None)

    def mapped(self, start, end):
        """Is every page of [start, end) inside some VMA?"""
        covered = start
        for vma in self.p.mm.vmas_in(start, end):
            if vma.vm_start > covered:
                return False
            covered = vma.vm_end
        return covered >= end

    def forget_shared(self):
        self.shared_aliased = True
        for a in list(self.known):
            vma = self.vma_at(a)
            if vma is None or vma.vm_flags & vw.VM_SHARED:
                del self.known[a]

    # -- access helpers ------------------------------------------------------------------------
    def snapshot(self, addr, size):
        pages = range(page_down(addr), addr + max(size, 1), P) if 0 <= addr < TASK_SIZE else []
        return (self.p.proc_maps(), [int(self.p.pagemap(a)) for a in pages],
                self.m.phys.nr_free, self.p.mm.map_count)

    def check_segv(self, exc, addr, size, write, before):
        assert self.snapshot(addr, size) == before, "a refused access changed the state"
        assert addr <= exc.addr < addr + max(size, 1), (hex(addr), size, hex(exc.addr))
        assert exc.access == ("write" if write else "read")
        vma = self.vma_at(exc.addr) if exc.addr >= 0 else None
        if vma is not None:
            assert exc.si_code == vw.SEGV_ACCERR, exc
            assert not vma.vm_flags & vw.VM_ACCESS_FLAGS or (
                write and not vma.vm_flags & vw.VM_WRITE), (exc, vma)
        else:
            above = self.p.mm.find_vma(exc.addr) if exc.addr >= 0 else None
            if above is None or not above.vm_flags & vw.VM_GROWSDOWN:
                assert exc.si_code == vw.SEGV_MAPERR, exc

    def check_bytes(self, addr, got):
        """Compare ``got`` (read at ``addr``) with the shadowed pages it covers."""
        end = addr + len(got)
        for page in range(page_down(addr), end, P):
            shadow = self.known.get(page)
            if shadow is None:
                continue
            lo, hi = max(addr, page), min(end, page + P)
            want = bytes(shadow[lo - page:hi - page])
            have = got[lo - addr:hi - addr]
            if have != want:
                i = next(i for i in range(len(want)) if have[i] != want[i])
                raise AssertionError(
                    f"byte at {lo + i:#x} reads {have[i]:#04x}, expected {want[i]:#04x} "
                    f"(read of {len(got)} byte(s) at {addr:#x})\n{self.p.proc_maps()}")

    # -- syscalls ------------------------------------------------------------------------------
    @rule(addr=addresses(), length=lengths(), prot=PROTS, map_type=MAP_TYPES,
          placement=PLACEMENTS, extra=EXTRA_FLAGS, use_hint=st.booleans())
    def mmap(self, addr, length, prot, map_type, placement, extra, use_hint):
        flags = vw.MAP_ANONYMOUS | map_type | placement | extra
        if not placement and not use_hint:
            addr = 0
        try:
            got = self.p.mmap(addr, length, prot, flags)
        except OSError as exc:
            assert exc.errno in (errno.EINVAL, errno.ENOMEM, errno.EEXIST, errno.EPERM), exc
            return
        if placement:
            assert got == addr
        assert got % P == 0
        end = got + page_up(length)
        vma = self.vma_at(got)
        assert vma is not None and vma.vm_start <= got and end <= vma.vm_end
        self.drop(got, end)
        self.mark_zero(got, end)

    @rule(addr=addresses(), length=lengths())
    def munmap(self, addr, length):
        try:
            self.p.munmap(addr, length)
        except OSError as exc:
            assert exc.errno in (errno.EINVAL, errno.ENOMEM), exc
            return
        self.drop(addr, addr + length)
        assert not self.p.mm.vmas_in(addr, addr + page_up(length))

    @rule(addr=addresses(), length=lengths(), prot=PROTS, aim=st.booleans(), data=st.data())
    def mprotect(self, addr, length, prot, aim, data):
        vma = self.some_vma(data) if aim else None
        if vma is not None:
            addr = vma.vm_start + data.draw(st.integers(0, vma.pages() - 1), label="page") * P
        try:
            self.p.mprotect(addr, length, prot)
        except OSError as exc:
            assert exc.errno in (errno.EINVAL, errno.ENOMEM, errno.EACCES), exc

    @rule(addr=addresses(), length=lengths(), advice=ADVICE,
          aim=st.sampled_from(["any", "vma", "shadow"]), data=st.data())
    def madvise(self, addr, length, advice, aim, data):
        if aim == "shadow" and self.known:
            # Aim at data we know, where discarding it shows.
            addr = data.draw(st.sampled_from(sorted(self.known)), label="page")
            advice = data.draw(st.sampled_from([vw.MADV_DONTNEED, vw.MADV_FREE,
                                                vw.MADV_POPULATE_WRITE, advice]), label="advice")
        vma = self.some_vma(data) if aim == "vma" else None
        if vma is not None:
            addr = vma.vm_start + data.draw(st.integers(0, vma.pages() - 1), label="page") * P
        error = None
        try:
            self.p.madvise(addr, length, advice)
        except OSError as exc:
            assert exc.errno in (errno.EINVAL, errno.ENOMEM, errno.EFAULT), exc
            error = exc.errno
        lo = addr % (1 << 64)
        hi = lo + page_up(length % (1 << 64))
        if advice == vw.MADV_FREE:
            # The pages may be reclaimed (zero) or not (old data): unknown.
            self.drop(lo, hi)
        elif advice in (vw.MADV_DONTNEED, vw.MADV_DONTNEED_LOCKED):
            if error in (None, errno.ENOMEM):
                # Applied to every mapped part: private anonymous memory reads as zero,
                # shared memory keeps its contents in the shmem file.
                for a in [a for a in self.known if page_down(lo) <= a < hi]:
                    if self.is_private_anon(self.vma_at(a)):
                        self.known[a] = bytearray(P)
            else:
                self.drop(lo, hi)

    @rule(old=addresses(), old_len=lengths(), new_len=lengths(), flags=MREMAP_FLAGS,
          new_addr=addresses(), aim=st.sampled_from(["any", "vma", "whole-vma"]), data=st.data())
    def mremap(self, old, old_len, new_len, flags, new_addr, aim, data):
        vma = self.some_vma(data) if aim != "any" else None
        if vma is not None:
            # Aim at an existing VMA: from its start, or from a page inside it; all of it
            # for "whole-vma".
            old = vma.vm_start + data.draw(st.integers(0, vma.pages() - 1), label="page") * P
            if aim == "whole-vma":
                old, old_len = vma.vm_start, vma.vm_end - vma.vm_start
        if flags & vw.MREMAP_DONTUNMAP and data.draw(st.booleans(), label="same size"):
            new_len = old_len
        u_old = old % (1 << 64)
        src = self.vma_at(u_old)
        src_private = self.is_private_anon(src)
        span = page_up(old_len % (1 << 64)) if old_len % (1 << 64) <= 64 * P else 0
        any_shared = any(v.vm_flags & vw.VM_SHARED
                         for v in self.p.mm.vmas_in(u_old, u_old + max(span, P)))
        was_mapped = [a for a in range(u_old, u_old + span, P) if self.vma_at(a) is not None]
        try:
            got = self.p.mremap(old, old_len, new_len, flags, new_addr)
        except OSError as exc:
            assert exc.errno in (errno.EINVAL, errno.ENOMEM, errno.EFAULT), exc
            # A failure after some work (MREMAP_FIXED unmaps the target first, a shrink
            # unmaps the tail first, a move of several VMAs may stop half-way): forget
            # whatever might have changed.
            if exc.errno != errno.EINVAL or flags & vw.MREMAP_FIXED:
                self.drop(new_addr % (1 << 64), new_addr % (1 << 64) + 9 * P)
                self.drop(u_old, u_old + 9 * P)
            return
        old_len, new_len = page_up(old_len), page_up(new_len)
        assert got % P == 0
        if flags & vw.MREMAP_FIXED:
            assert got == new_addr
        mm = self.p.mm
        moved = {a - old: self.known.pop(a) for a in range(old, old + min(old_len, new_len), P)
                 if a in self.known}
        self.drop(old + new_len, old + old_len)           # a shrink unmaps the tail
        if got == old:
            # Resized in place: the grown part is fresh memory.
            self.known.update({old + off: data for off, data in moved.items()})
            # Only growing checks the whole range; a shrink or a same-size call only needs
            # a VMA at old (mm/mremap.c: check_prep_vma).
            assert self.vma_at(old) is not None
            if new_len > old_len:
                assert self.mapped(old, old + new_len), "the grown range is not fully mapped"
                if src_private:
                    self.mark_zero(old + old_len, old + new_len)
                else:
                    self.drop(old + old_len, old + new_len)   # shmem pages may come back
            elif new_len < old_len:
                assert not mm.vmas_in(old + new_len, old + old_len), "the tail is still mapped"
            return
        # Moved. With MREMAP_FIXED and no resize, every VMA of the old range moves and the
        # holes between them stay holes (mm/mremap.c: remap_move), so check page by page.
        for a in was_mapped:
            if a < old + min(old_len, new_len):
                assert self.vma_at(got + a - old) is not None, f"{a:#x} did not move"
        if new_len > old_len:
            assert self.mapped(got + old_len, got + new_len), "the grown part is not mapped"
        aliased = False
        if flags & vw.MREMAP_DONTUNMAP or old_len == 0:
            # The old range stays mapped: empty for private memory; shared memory is now
            # visible at two addresses, so it is no longer tracked.
            assert all(self.vma_at(a) is not None for a in was_mapped), \
                "MREMAP_DONTUNMAP unmapped the old range"
            if any_shared:
                aliased = self.shared_aliased = True
            self.mark_zero(old, old + old_len)
        else:
            assert not mm.vmas_in(old, old + old_len), "the old range is still mapped"
        self.drop(got, got + new_len)
        self.known.update({got + off: data for off, data in moved.items()})
        if new_len > old_len and old_len and src_private:
            self.mark_zero(got + old_len, got + new_len)
        if aliased:
            self.forget_shared()

    @rule(delta=st.integers(-HEAP_PAGES, HEAP_PAGES), odd=st.sampled_from([0, 0, 0, 1, P - 1]),
          absolute=st.sampled_from([None] * 8 + [0, HEAP_BASE - P, HEAP_BASE]))
    def brk(self, delta, odd, absolute):
        mm = self.p.mm
        old = mm.brk
        want = absolute if absolute is not None else max(0, page_down(old) + delta * P + odd)
        got = self.p.brk(want)
        assert got in (old, want), (hex(got), hex(old), hex(want))
        assert mm.brk == got
        if got == old:
            return
        if page_up(got) < page_up(old):
            self.drop(page_up(got), page_up(old))
            assert not mm.vmas_in(page_up(got), page_up(old))
        elif page_up(got) > page_up(old):
            self.drop(page_up(old), page_up(got))
            self.mark_zero(page_up(old), page_up(got))
            vma = self.vma_at(page_up(got) - 1)
            assert vma is not None and vma.vm_end >= page_up(got)

    # -- accesses ------------------------------------------------------------------------------
    @rule(addr=access_addresses(), data=DATA)
    def write(self, addr, data):
        before = self.snapshot(addr, len(data))
        try:
            self.p.write(addr, data)
        except vw.SegmentationFault as exc:
            self.check_segv(exc, addr, len(data), True, before)
            return
        end = addr + len(data)
        for page in range(page_down(addr), end, P):
            lo, hi = max(addr, page), min(end, page + P)
            if page in self.known:
                self.known[page][lo - page:hi - page] = data[lo - addr:hi - addr]
            if data:
                entry = self.p.pagemap(page)
                assert entry.present and entry.pfn != 1, (hex(page), entry)

    @precondition(lambda self: self.known)
    @rule(data=st.data(), payload=DATA)
    def write_known(self, data, payload):
        """Write into a page of the shadow (wherever it is now)."""
        page = data.draw(st.sampled_from(sorted(self.known)), label="page")
        self.write(page + data.draw(st.integers(0, P - 1), label="offset"), payload)

    @rule(addr=access_addresses(), size=st.one_of(st.integers(0, 32), st.integers(P - 8, P + 40)))
    def read(self, addr, size):
        before = self.snapshot(addr, size)
        try:
            got = self.p.read(addr, size)
        except vw.SegmentationFault as exc:
            self.check_segv(exc, addr, size, False, before)
            return
        assert len(got) == size
        self.check_bytes(addr, got)

    @rule(addr=access_addresses(), write=st.booleans())
    def touch(self, addr, write):
        before = self.snapshot(addr, 1)
        try:
            self.p.touch(addr, write)
        except vw.SegmentationFault as exc:
            self.check_segv(exc, addr, 1, write, before)
            return
        # A touch stores nothing new: the byte reads back unchanged.
        self.check_bytes(addr, self.p.read(addr, 1))

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def read_back(self, data):
        """Re-read a page of the shadow, wherever mremap took it."""
        page = data.draw(st.sampled_from(sorted(self.known)), label="page")
        off = data.draw(st.integers(0, P - 1), label="offset")
        size = data.draw(st.integers(1, P - off), label="size")
        before = self.snapshot(page + off, size)
        try:
            got = self.p.read(page + off, size)
        except vw.SegmentationFault as exc:
            # A shadowed page is mapped: only its protection can refuse the read.
            assert exc.si_code == vw.SEGV_ACCERR, exc
            self.check_segv(exc, page + off, size, False, before)
            return
        self.check_bytes(page + off, got)

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def model_is_consistent(self):
        vw.validate(self.m)

    @invariant()
    def shadow_pages_are_mapped(self):
        for a in self.known:
            assert self.vma_at(a) is not None, f"shadowed page {a:#x} is not mapped"


VmStateMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestVmStateMachine = VmStateMachine.TestCase


# -- model bugs found by the state machine, now regression tests -------------------------------

def test_mremap_zero_old_size_inside_a_shared_vma():
    """mremap(addr, 0, n, MREMAP_MAYMOVE) of shared memory makes a second mapping of the
    same pages; the old VMA stays whole (the zero-length unmap of the source is refused).
    Once a model bug (found by the state machine): an AssertionError in __split_vma."""
    m = vw.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * P, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_SHARED | vw.MAP_ANONYMOUS)
    p.write(a + P, b"dup")
    b = p.mremap(a + P, 0, P, vw.MREMAP_MAYMOVE)
    assert b != a + P
    assert p.read(b, 3) == b"dup"               # the same shmem page, at two addresses
    p.write(b, b"new")
    assert p.read(a + P, 3) == b"new"
    assert p.mm.vma_lookup(a).vm_end == a + 2 * P   # the old VMA is untouched
    vw.validate(m)


def test_remap_move_when_the_target_splits_a_source_vma():
    """mremap(MREMAP_FIXED) without resizing moves every VMA of the range; here moving the
    first one unmaps its target, which splits the second source VMA. Once a model bug:
    remap_move() iterated a VMA list taken before the first move, so the next step worked
    on a stale, detached VMA (EINVAL half-way, or an AssertionError in __split_vma)."""
    m = vw.Machine()
    p = m.spawn()
    a = 0x1000_0000_0000
    p.mmap(a, 12 * P, vw.PROT_READ | vw.PROT_WRITE,
           vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    p.mprotect(a + P, P, vw.PROT_NONE)
    p.write(a + 2 * P, b"second")
    # Move [a+P, a+4P) (a PROT_NONE VMA and 2 pages of the big one) to a+4P.
    moved = p.mremap(a + P, 3 * P, 3 * P, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, a + 4 * P)
    assert moved == a + 4 * P
    # As Linux 6.18 shows it (checked on a live kernel). The moved written pages keep their
    # page offset, so they do not merge with the rest of the big VMA.
    assert [line.split()[:2] for line in p.proc_maps().splitlines()[:4]] == [
        [f"{a:x}-{a + P:x}", "rw-p"],
        [f"{a + 4 * P:x}-{a + 5 * P:x}", "---p"],
        [f"{a + 5 * P:x}-{a + 7 * P:x}", "rw-p"],
        [f"{a + 7 * P:x}-{a + 12 * P:x}", "rw-p"]]
    assert p.read(a + 5 * P, 6) == b"second"
    vw.validate(m)


def test_access_running_past_task_size_faults_at_task_size():
    """An access that starts in [stack] and runs past TASK_SIZE faults at TASK_SIZE, the
    first byte outside user space (arch/x86/mm/fault.c: an address >= TASK_SIZE_MAX is
    kernel space, SEGV_MAPERR there), as any access running into an unmapped page does.
    Once a model bug: the fault reported the start of the access, a mapped address."""
    m = vw.Machine()
    p = m.spawn()
    top = TASK_SIZE                     # [stack] ends here
    assert p.mm.vma_lookup(top - 1) is not None
    for access in (lambda: p.write(top - 2, b"abcd"), lambda: p.read(top - 2, 4)):
        with pytest.raises(vw.SegmentationFault) as info:
            access()
        assert (info.value.addr, info.value.si_code) == (top, vw.SEGV_MAPERR)
