"""The timeline: any earlier state rebuilt exactly, records rebuilt exactly, replay
deterministic.

The oracle is the live machine itself: while a seeded random run goes forward, a
fingerprint of the whole machine (every VMA with its anon_vma chain, every PTE, every
frame's kind/mapcount/refcount/data, swap, page cache, counters, events) is taken after
each step. ``timeline.state(n)`` must reproduce the fingerprint taken after step ``n``.
"""

import pickle
import random
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets import trace
from vmwidgets.core import pgtable

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
FIXED = ANON | vw.MAP_FIXED
BASE = 0x10000000


def fingerprint(m):
    """Everything a student could observe, and the kernel structures behind it. (The event
    log is not part of a state: past states have none; records carry each step's events.)"""
    out = [m.dump(), f"steps={m.nr_steps} free={m.phys.nr_free} swap={m.swap_pages}",
           repr(sorted(m.sysctl.items())), repr(sorted(m.stats.items()))]
    for proc in m.processes:
        out.append(proc.proc_maps())
        out.append(repr(sorted(proc.mm.rss.items())))
        for vma in proc.mm.mm_mt:
            for addr in range(vma.vm_start, vma.vm_end, P):
                pte = pgtable.get_pte(proc.mm, addr)
                if pte:
                    out.append(f"{proc.pid} {addr:#x} {pte:#x}")
    for pfn, page in sorted(m.phys.pages.items()):
        out.append(f"{pfn} {page.kind} {page.mapcount} {page.refcount} {page.dirty} "
                   f"{page.swap} {page.lru} {bytes(page.data or b'')!r}")
    out.append(repr(sorted(m.phys.free_list)))
    out.append(f"events so far: {m._nevents}")
    for path, f in sorted(m.files.items()):
        out.append(f"{path} {f.contents()!r}")
    return "\n".join(out)


def random_run(seed, steps, machine=None, on_step=None):
    """A seeded mix of everything: several processes, fork/exit, files, sysctls, errors,
    reclaim and swap on a small machine."""
    r = random.Random(seed)
    m = machine or vw.Machine(ram=160 * P, swap=64 * P, checkpoint_every=17)
    on_step = on_step or (lambda m: None)
    on_step(m)
    m.create_file("/data", bytes(range(256)) * 64)
    on_step(m)
    procs = [m.spawn()]
    on_step(m)
    while m.nr_steps < steps:
        procs = [p for p in procs if p.alive] or [m.spawn()]
        p = r.choice(procs)
        page = r.randrange(16)
        a = BASE + page * P
        n = r.randint(1, 4)
        k = r.random()
        try:
            if k < 0.30:
                p.write(a + r.randrange(P), bytes([r.randrange(1, 256)]) * r.randint(1, 3))
            elif k < 0.45:
                p.read(a, r.randint(1, 9))
            elif k < 0.55:
                p.mmap(a, n * P, r.choice([RW, vw.PROT_READ]), FIXED)
            elif k < 0.60:
                fd = p.open("/data", 2)
                p.mmap(a, n * P, RW, r.choice([vw.MAP_SHARED, vw.MAP_PRIVATE]) | vw.MAP_FIXED,
                       fd, r.randrange(4) * P)
                p.close(fd)
            elif k < 0.68:
                p.munmap(a, n * P)
            elif k < 0.76:
                p.mprotect(a, n * P, r.choice([RW, vw.PROT_READ, vw.PROT_NONE]))
            elif k < 0.80:
                p.madvise(a, n * P, r.choice([vw.MADV_DONTNEED, vw.MADV_PAGEOUT, vw.MADV_FREE]))
            elif k < 0.84:
                p.mremap(a, n * P, r.randint(1, 5) * P, vw.MREMAP_MAYMOVE)
            elif k < 0.88 and len(procs) < 4:
                procs.append(p.fork())
            elif k < 0.90 and len(procs) > 1:
                p.exit()
            elif k < 0.92:
                p.brk(p.mm.brk + r.randint(-2, 3) * P)
            elif k < 0.94:
                m.reclaim(r.randint(1, 8))
            elif k < 0.95:
                m.sysctl["vm.max_map_count"] = r.randint(20, 200)
            else:
                p.touch(a, write=True)
        except (OSError, vw.SegmentationFault, vw.BusError, vw.ProcessKilled):
            pass
        on_step(m)
    return m


@pytest.fixture(scope="module")
def recorded():
    prints = {}

    def take(m):
        prints[m.nr_steps] = fingerprint(m)

    m = random_run(7, 400, on_step=take)
    return m, prints


def test_the_random_run_exercises_what_it_claims(recorded):
    m, _ = recorded
    calls = {op.call for op in m.timeline.ops}
    assert {"spawn", "create_file", "write", "read", "mmap", "munmap", "mprotect", "madvise",
            "mremap", "fork", "exit", "brk", "reclaim", "set_sysctl", "open", "close",
            "touch"} <= calls
    errors = [r.error for r in m.timeline.records.values() if r.error]
    assert any(e.startswith("-E") for e in errors) and "SegmentationFault" in errors
    assert m.stats["pswpout"] > 0 and m.stats["pgsteal"] > 0, m.stats


@pytest.mark.parametrize("n", [0, 1, 2, 16, 17, 18, 33, 34, 150, 250, 398, 399, 400])
def test_state_n_is_the_machine_as_it_was_after_step_n(recorded, n):
    m, prints = recorded
    assert fingerprint(m.timeline.state(n)) == prints[n]


def test_walking_back_and_forward_step_by_step_revisits_every_state(recorded):
    m, prints = recorded
    # (a loop turn of the run that opens, maps and closes a file is three steps, one print)
    walk = [n for n in list(range(400, 300, -1)) + list(range(300, 401)) if n in prints]
    assert len(walk) > 180
    for n in walk:
        assert fingerprint(m.timeline.state(n)) == prints[n], n


def test_the_live_machine_is_untouched_by_going_back(recorded):
    m, prints = recorded
    m.timeline.state(5)
    assert fingerprint(m) == prints[400]
    assert m.timeline.state(400) is m


def test_records_rebuilt_by_replay_equal_the_originals():
    m = random_run(3, 150)
    kept = {i: m.timeline.record(i) for i in range(150)}
    m.timeline.records.clear()          # as if they had aged out
    for i in (0, 5, 16, 17, 60, 149):
        again = m.timeline.record(i)
        orig = kept[i]
        assert (again.op, again.error) == (orig.op, orig.error)
        assert trace.fmt_value(again.result) == trace.fmt_value(orig.result)
        assert [str(e) for e in again.events] == [str(e) for e in orig.events]
        assert [e.outcome for e in again.events] == [e.outcome for e in orig.events]
        assert again.function_graph() == orig.function_graph()


def test_only_the_newest_records_are_kept():
    m = vw.Machine(ram="16M")
    m.timeline.keep_records = 5
    p = m.spawn()
    for i in range(20):
        p.write(0x555555557000, bytes([i + 1]))
    assert sorted(m.timeline.records) == list(range(16, 21))
    assert m.timeline.record(3).op.args == (0x555555557000, b"\x03")


def test_a_past_state_is_read_only():
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(BASE, P, RW, FIXED)
    past = m.timeline.state(1)
    with pytest.raises(RuntimeError, match="past state"):
        past.task(p.pid).write(BASE, b"x")
    assert past.nr_steps == 1 and m.nr_steps == 2


def test_bad_arguments_are_not_steps_and_bad_indexes_are_clear():
    m = vw.Machine(ram="16M")
    p = m.spawn()
    with pytest.raises(TypeError):
        p.mmap("0", P, RW, ANON)
    with pytest.raises(KeyError):
        m.sysctl["vm.nope"] = 1
    assert len(m.timeline) == 1
    with pytest.raises(IndexError, match="outside the history"):
        m.timeline.state(2)
    with pytest.raises(IndexError, match="has not run yet"):
        m.timeline.record(1)
    with pytest.raises(TypeError):
        m.timeline.state("1")


def test_a_failed_step_is_kept_with_its_error():
    m = vw.Machine(ram="16M")
    p = m.spawn()
    with pytest.raises(OSError):
        p.munmap(1, P)
    with pytest.raises(vw.SegmentationFault):
        p.read(BASE, 1)
    assert m.timeline.record(1).error == "-EINVAL"
    assert m.timeline.record(2).error == "SegmentationFault"


def test_machines_without_history():
    m = vw.Machine(ram="16M", history=False)
    m.spawn().write(0x555555557000, b"x")
    assert m.timeline is None and m.nr_steps == 2
    with pytest.raises(RuntimeError, match="no history"):
        m.step_record(0)


def test_checkpoints_round_trip_through_pickle():
    m = random_run(11, 60)
    copy = pickle.loads(pickle.dumps(m))
    assert fingerprint(copy) == fingerprint(m)
    assert copy.timeline is None


REPLAY = """
import sys
sys.path.insert(0, {tests!r})
from core.test_timeline import random_run, fingerprint
import hashlib
m = random_run(5, 120)
a = fingerprint(m.timeline.state(77))
print(hashlib.sha256(a.encode()).hexdigest(), hashlib.sha256(fingerprint(m).encode()).hexdigest())
"""


def test_replay_is_the_same_in_fresh_interpreters_with_other_hash_seeds():
    import os
    tests = os.path.dirname(os.path.dirname(__file__))
    outs = set()
    for hashseed in ("1", "2", "random"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        res = subprocess.run([sys.executable, "-c", REPLAY.format(tests=tests)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outs.add(res.stdout)
    assert len(outs) == 1, outs
