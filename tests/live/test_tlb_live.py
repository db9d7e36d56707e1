"""TLB flushes against the live kernel: the ``tlb_flush`` tracepoint of a live child's
operations, compared with the model's :class:`~vmwidgets.core.tlb.TlbFlush` records.

The child (``vmwidgets.live``) runs pinned to CPU 0. Each operation is traced with
``tlb/tlb_flush``, ``raw_syscalls/sys_enter|sys_exit`` and ``exceptions/page_fault_user``
for the child's threads only (``set_event_pid``); a flush belongs to the operation when it
happens inside the child's system call with the operation's arguments (or after the page
fault at its address), so the flushes of the child's own Python work are left out, and so
are TLB_FLUSH_ON_TASK_SWITCH events (the child sleeps on a pipe between operations).
Needs root and tracefs; every tracefs setting touched is put back afterwards.
"""

import os
import re

import pytest

import vmwidgets as vw
from tests.live.difftools import require_live
from vmwidgets.core import tlb as tlb_mod
from vmwidgets.live import LiveProcess

pytestmark = pytest.mark.live

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
TRACING = "/sys/kernel/tracing/"
EVENTS = ("tlb/tlb_flush", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit",
          "exceptions/page_fault_user")
NR = {"munmap": 11, "mprotect": 10, "madvise": 28, "mremap": 25}
TASK_SWITCH = tlb_mod.REASONS.index("TLB_FLUSH_ON_TASK_SWITCH")
WRONG_CPU = tlb_mod.REASONS.index("TLB_REMOTE_WRONG_CPU")
LINE = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+):"
                  r"\s+(?P<event>\w+):\s*(?P<rest>.*)$")


def tracefs_available():
    require_live()
    if os.geteuid() != 0:
        pytest.skip("the tlb_flush tracepoint needs root")
    for event in EVENTS:
        if not os.access(TRACING + f"events/{event}/enable", os.W_OK):
            pytest.skip(f"tracefs event {event} is not available (mount -t tracefs nodev "
                        "/sys/kernel/tracing)")
    if len(os.sched_getaffinity(0)) < 2 or os.cpu_count() < 2:
        pytest.skip("needs two CPUs")


def _read(name):
    with open(TRACING + name) as f:
        return f.read()


def _write(name, value):
    with open(TRACING + name, "w") as f:
        f.write(value)


class Tracer:
    """tlb_flush and the syscall / fault events of some pids, one operation at a time."""

    def __init__(self):
        self.saved = {e: _read(f"events/{e}/enable").strip() for e in EVENTS}
        self.saved_pids = _read("set_event_pid").split()
        self.pids = []

    def close(self):
        for event, value in self.saved.items():
            _write(f"events/{event}/enable", "1" if value.startswith("1") else "0")
        _write("set_event_pid", " ".join(self.saved_pids))
        _write("trace", "")

    def _enable(self, on):
        for event in EVENTS:
            _write(f"events/{event}/enable", "1" if on else "0")

    def run(self, fn, pid, kind, args=()):
        """Run ``fn`` and return the tlb_flush events of the operation it performs in
        process ``pid``: ``kind`` is a syscall name (matched on its first argument) or
        "fault" (the page fault at ``args[0]``) or "fork". Events: (cpu, reason, pages)."""
        _write("set_event_pid", " ".join(map(str, self.pids)))
        _write("trace", "")
        self._enable(True)
        try:
            result = fn()
        finally:
            self._enable(False)        # before reading: reading must not make events
        events = [m.groupdict() for m in map(LINE.match, _read("trace").splitlines()) if m]
        return result, self._attribute(events, pid, kind, args)

    def _attribute(self, events, pid, kind, args):
        pid = str(pid)
        start = end = None
        for i, e in enumerate(events):
            if e["pid"] != pid:
                continue
            if start is None:
                if kind == "fault" and e["event"] == "page_fault_user" and \
                        f"address={args[0]:#x} " in e["rest"] + " ":
                    start = i
                elif kind == "fork" and e["event"] == "sys_enter" and \
                        re.match(r"NR (56|435) ", e["rest"]):
                    start = i
                elif kind in NR and e["event"] == "sys_enter" and \
                        e["rest"].startswith(f"NR {NR[kind]} ({args[0]:x},"):
                    start = i
                continue
            if kind == "fault" and e["event"] in ("sys_enter", "page_fault_user"):
                end = i
                break
            if kind != "fault" and e["event"] == "sys_exit":
                end = i
                break
        assert start is not None, f"the {kind} of pid {pid} was not traced"
        end = len(events) if end is None else end
        t0, t1 = float(events[start]["ts"]), float(events[end - 1]["ts"])
        out = []
        for i, e in enumerate(events):
            if e["event"] != "tlb_flush":
                continue
            mine = start < i < end and e["pid"] == pid
            other = e["pid"] != pid and t0 <= float(e["ts"]) <= t1
            if mine or other:
                m = re.match(r"pages:(-?\d+) reason:.* \((\d+)\)", e["rest"])
                out.append((int(e["cpu"]), int(m.group(2)), int(m.group(1))))
        return [f for f in out if f[1] not in (TASK_SWITCH, WRONG_CPU)]


def model_flushes(m):
    return [(f.cpu, f.code, f.pages) for f in m.last_step.tlb_flushes
            if f.code not in (TASK_SWITCH, WRONG_CPU)]


@pytest.fixture
def tracer():
    tracefs_available()
    t = Tracer()
    try:
        yield t
    finally:
        t.close()


def start_child(cpus):
    """A live child pinned to CPU 0 from its first instruction (the affinity is inherited),
    so that no other CPU ever joins its mm_cpumask."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        lp = LiveProcess(arena_pages=8192)
    finally:
        os.sched_setaffinity(0, saved)
    m = vw.Machine(ram="64M", cpus=cpus)
    p = m.spawn()
    return lp, m, p


class Pair:
    """The live child and the model process, doing the same operations."""

    def __init__(self, tracer, cpus=1):
        self.lp, self.m, self.p = start_child(cpus)
        self.tracer = tracer
        tracer.pids = [self.lp.pid]
        self.base = self.lp.arena
        self.lchild = self.mchild = None
        self.log = []

    def close(self):
        self.lp.close()

    def do(self, call, *args, live=None, model=None):
        """Both sides; returns (model flushes, live flushes)."""
        a = [self.base + x if i == 0 else x for i, x in enumerate(args)]
        if call == "mremap":
            a[4] = self.base + a[4]
        if call == "touch":
            self.p.touch(a[0], True)
            _, got = self.tracer.run(lambda: self.lp.touch(a[0], True), self.lp.pid, "fault", a)
        elif call == "fork":
            self.mchild = self.p.fork()
            self.lchild, got = self.tracer.run(self.lp.fork, self.lp.pid, "fork")
            self.tracer.pids.append(self.lchild.pid)
        elif call == "child_exit":
            self.mchild.exit()
            self.lchild.exit()
            return None
        else:
            getattr(self.p, call)(*a)
            _, got = self.tracer.run(lambda: getattr(self.lp, call)(*a), self.lp.pid, call, a)
        want = model_flushes(self.m)
        self.log.append((call, args, want, got))
        return want, got

    def quiet(self, call, *args):
        """An operation on both sides whose flushes are not compared (setup)."""
        a = [self.base + x if i == 0 else x for i, x in enumerate(args)]
        if call == "touch":
            self.p.touch(a[0], True)
            self.lp.touch(a[0], True)
        else:
            getattr(self.p, call)(*a)
            getattr(self.lp, call)(*a)


def touched(pair, off, n):
    pair.quiet("mmap", off, n * P, RW, FIXED)
    for i in range(n):
        pair.quiet("touch", off + i * P)


LOCAL_MM = tlb_mod.REASONS.index("TLB_LOCAL_MM_SHOOTDOWN")


def test_single_cpu_flushes_match_the_kernel(tracer):
    pair = Pair(tracer)
    try:
        # munmap of 1 / 10 / 33 / 34 / 40 touched pages: a range up to 33, then everything
        pair.quiet("mmap", 0x100000, P, RW, FIXED)       # keeps the page tables
        pair.quiet("touch", 0x100000)
        for n in (1, 10, 33, 34, 40):
            touched(pair, 0, n)
            want, got = pair.do("munmap", 0, n * P)
            assert got == want == [(0, LOCAL_MM, n if n <= 33 else -1)], pair.log[-1]
        pair.quiet("mmap", 0, 8 * P, RW, FIXED)
        assert pair.do("munmap", 0, 8 * P) == ([], [])   # untouched: nothing to flush
        # mprotect RW -> R and back of 5 touched pages out of 8; a no-op mprotect
        touched(pair, 0x200000, 5)
        pair.quiet("mmap", 0x200000 + 5 * P, 3 * P, RW, FIXED)
        for prot in (vw.PROT_READ, RW, RW):
            want, got = pair.do("mprotect", 0x200000, 8 * P, prot)
            assert got == want, pair.log[-1]
        assert pair.log[-3][2] == [(0, LOCAL_MM, 5)] and pair.log[-1][2] == []
        # madvise DONTNEED, FREE, COLD of the 5 touched pages
        for advice in (vw.MADV_DONTNEED, vw.MADV_FREE, vw.MADV_COLD):
            for i in range(5):
                pair.quiet("touch", 0x200000 + i * P)
            want, got = pair.do("madvise", 0x200000, 8 * P, advice)
            assert got == want == [(0, LOCAL_MM, 5)], pair.log[-1]
        # mremap move: the moved extent, then the old PTE table freed (a 2 MiB stride)
        for i in range(5):
            pair.quiet("touch", 0x200000 + i * P)
        want, got = pair.do("mremap", 0x200000, 8 * P, 8 * P,
                            vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, 0x800000)
        assert got == want == [(0, LOCAL_MM, 8), (0, LOCAL_MM, 0)], pair.log[-1]
        # the last page of the old region alone in its 512 GiB slot: untouched munmap
        pair.quiet("munmap", 0x100000, P)
        pair.quiet("munmap", 0x800000, 8 * P)
        pair.quiet("mmap", 0x600000, 8 * P, RW, FIXED)
        want, got = pair.do("munmap", 0x600000, 8 * P)
        assert got == want == [(0, LOCAL_MM, 1)], pair.log[-1]
        # fork (flush_tlb_mm of the parent), COW, reuse after the child is gone
        touched(pair, 0, 4)
        want, got = pair.do("fork")
        assert got == want == [(0, LOCAL_MM, -1)], pair.log[-1]
        want, got = pair.do("touch", P)
        assert got == want == [(0, LOCAL_MM, 1)], pair.log[-1]
        pair.do("child_exit")
        want, got = pair.do("touch", 2 * P)
        assert got == want == [], pair.log[-1]
    finally:
        pair.close()


def test_a_thread_on_the_other_cpu_gets_the_shootdowns(tracer):
    """The child's second thread spins in user space on CPU 1 (so CPU 1 keeps the mm
    loaded, not lazily); the model's thread runs on CPU 1 too. CPU 0's events must match
    exactly (TLB_REMOTE_SEND_IPI, TLB_LOCAL_MM_SHOOTDOWN); CPU 1's TLB_REMOTE_SHOOTDOWN
    must match whenever it shows: if the scheduler briefly gave CPU 1 to another task, the
    IPI was rightly skipped, so most but not all are required."""
    pair = Pair(tracer, cpus=2)
    try:
        tid = pair.lp.spin_thread(1)
        tracer.pids.append(tid)
        pair.p.clone_thread(cpu=1)
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})               # keep this process off CPU 1
        try:
            pair.quiet("mmap", 0x100000, P, RW, FIXED)
            pair.quiet("touch", 0x100000)
            results = []
            for n in (1, 10, 40):
                touched(pair, 0, n)
                results.append(pair.do("munmap", 0, n * P))
            touched(pair, 0x200000, 5)
            results.append(pair.do("mprotect", 0x200000, 5 * P, vw.PROT_READ))
            results.append(pair.do("madvise", 0x200000, 5 * P, vw.MADV_DONTNEED))
            pair.quiet("mprotect", 0x200000, 5 * P, RW)
            touched(pair, 0, 4)
            results.append(pair.do("fork"))
            results.append(pair.do("touch", P))
        finally:
            os.sched_setaffinity(0, saved)
            pair.lp.stop_spin()
        # Only the operation's own flushes: those CPU 0 starts and the shootdowns CPU 1
        # takes. After the fork the spinning thread itself may take a COW fault when the
        # kernel writes its rseq area (it was preempted on CPU 1): that flush starts on
        # CPU 1 and shoots down CPU 0, and it is not the operation's.
        remote_code = tlb_mod.REASONS.index("TLB_REMOTE_SHOOTDOWN")
        seen = 0
        for (want, got), entry in zip(results, pair.log):
            cpu0 = [f for f in got if f[0] == 0 and f[1] != remote_code]
            assert cpu0 == [f for f in want if f[0] == 0], entry
            remote = [f for f in got if f[0] == 1 and f[1] == remote_code]
            assert all(f in want for f in remote), entry
            seen += bool(remote)
        assert any(f[1] == tlb_mod.REASONS.index("TLB_REMOTE_SEND_IPI")
                   for want, _ in results for f in want)
        assert seen >= len(results) - 2, pair.log
    finally:
        pair.close()
