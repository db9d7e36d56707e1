"""Hypothesis stateful test: several processes that fork, write, unmap, exit, and a machine
small enough that reclaim, swap and the OOM killer all happen.

Invariants after every step: ``vw.validate`` (VMAs, anon_vma trees and counters, mapcounts,
refcounts, rmap, page cache, swap accounting) and *no data is lost or leaked*: every byte a
process wrote reads back in that process (and in children forked after the write) until
the process itself unmaps, remaps or discards that page, whatever reclaim, swap or other
processes' writes did in between.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import vmwidgets as vw

P = vw.PAGE_SIZE
BASE = 0x100000000000
PAGES = 24
RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS


class ForkingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # 96 frames of RAM and 64 of swap: a few processes fill it.
        self.m = vw.Machine(ram=96 * P, swap=64 * P)
        self.procs = [self.m.spawn()]
        self.shadow = {self.procs[0].pid: {}}   # pid -> {addr: byte written}

    def _proc(self, i):
        return self.procs[i % len(self.procs)]

    def _forget(self, proc, start, length):
        sh = self.shadow[proc.pid]
        for a in [a for a in sh if start <= a < start + length]:
            del sh[a]

    def _reap(self):
        """Processes the OOM killer took are gone with their data."""
        for proc in [p for p in self.procs if not p.alive]:
            self.procs.remove(proc)
            del self.shadow[proc.pid]
        if not self.procs:
            self.procs.append(self.m.spawn())
            self.shadow[self.procs[0].pid] = {}

    def _call(self, fn):
        try:
            return fn()
        except (OSError, vw.SegmentationFault):
            return None
        except vw.ProcessKilled:
            return None
        finally:
            self._reap()

    @rule(i=st.integers(0, 7), page=st.integers(0, PAGES - 1), n=st.integers(1, 6),
          prot=st.sampled_from([RW, vw.PROT_READ, vw.PROT_NONE]),
          extra=st.sampled_from([0, vw.MAP_POPULATE, vw.MAP_NORESERVE]))
    def mmap_fixed(self, i, page, n, prot, extra):
        p = self._proc(i)
        addr = BASE + page * P
        self._forget(p, addr, n * P)
        self._call(lambda: p.mmap(addr, n * P, prot, ANON | vw.MAP_FIXED | extra))

    @rule(i=st.integers(0, 7), page=st.integers(0, PAGES - 1), n=st.integers(1, 6))
    def munmap(self, i, page, n):
        p = self._proc(i)
        self._forget(p, BASE + page * P, n * P)
        self._call(lambda: p.munmap(BASE + page * P, n * P))

    @rule(i=st.integers(0, 7), page=st.integers(0, PAGES - 1), n=st.integers(1, 6),
          prot=st.sampled_from([RW, vw.PROT_READ, vw.PROT_NONE]))
    def mprotect(self, i, page, n, prot):
        p = self._proc(i)
        self._call(lambda: p.mprotect(BASE + page * P, n * P, prot))

    @rule(i=st.integers(0, 7), page=st.integers(0, PAGES - 1), n=st.integers(1, 6),
          advice=st.sampled_from([vw.MADV_DONTNEED, vw.MADV_PAGEOUT, vw.MADV_COLD,
                                  vw.MADV_DONTFORK, vw.MADV_DOFORK, vw.MADV_WIPEONFORK,
                                  vw.MADV_KEEPONFORK, vw.MADV_FREE]))
    def madvise(self, i, page, n, advice):
        p = self._proc(i)
        if advice in (vw.MADV_DONTNEED, vw.MADV_FREE):
            self._forget(p, BASE + page * P, n * P)
        self._call(lambda: p.madvise(BASE + page * P, n * P, advice))

    @rule(i=st.integers(0, 7), page=st.integers(0, PAGES - 1), off=st.integers(0, P - 1),
          value=st.integers(1, 255))
    def write(self, i, page, off, value):
        p = self._proc(i)
        addr = BASE + page * P + off
        pid = p.pid
        if self._call(lambda: p.write(addr, bytes([value])) or True):
            self.shadow[pid][addr] = value

    @rule(i=st.integers(0, 7), page=st.integers(0, PAGES - 1), off=st.integers(0, P - 1))
    def read(self, i, page, off):
        p = self._proc(i)
        self._call(lambda: p.read(BASE + page * P + off, 1))

    @precondition(lambda self: len(self.procs) < 5)
    @rule(i=st.integers(0, 7))
    def fork(self, i):
        p = self._proc(i)
        child = self._call(p.fork)
        if child is not None and p.alive:
            dontfork = {a for a in self.shadow[p.pid]
                        if p.mm.vma_lookup(a) is not None
                        and p.mm.vma_lookup(a).vm_flags & (vw.VM_DONTCOPY | vw.VM_WIPEONFORK)}
            self.shadow[child.pid] = {a: v for a, v in self.shadow[p.pid].items()
                                      if a not in dontfork}

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=st.integers(0, 7))
    def exit(self, i):
        p = self._proc(i)
        self._call(p.exit)
        self._reap()

    @rule(n=st.integers(1, 64))
    def reclaim(self, n):
        self.m.reclaim(n)

    @invariant()
    def consistent(self):
        vw.validate(self.m)

    @invariant()
    def data_is_never_lost_or_leaked(self):
        for p in self.procs:
            for addr, value in self.shadow[p.pid].items():
                vma = p.mm.vma_lookup(addr)
                if vma is None or not vma.vm_flags & vw.VM_READ:
                    continue
                try:
                    got = p.read(addr, 1)[0]
                except vw.ProcessKilled:
                    self._reap()
                    return
                assert got == value, (f"pid {p.pid} wrote {value:#x} at {addr:#x}, "
                                      f"reads {got:#x}")


ForkingMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
TestForkingMachine = ForkingMachine.TestCase
