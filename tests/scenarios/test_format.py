"""The scenario format: readable values, JSON round trips, checked runs, and export of a
machine's timeline as a scenario that replays it exactly."""

import errno
import inspect
import json

import pytest
from hypothesis import given, settings, strategies as st

import vmwidgets as vw
from vmwidgets.scenarios import Scenario, ScenarioError, format as fmt

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS


def decode(call, param, raw, **names):
    env = fmt._Env()
    env.values.update(names)
    return fmt.codec(call, param).decode(raw, env, param)


def encode(call, param, value):
    return fmt.codec(call, param).encode(value, {})


# -- values --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, value", [
    ("rw", RW), ("r-x", vw.PROT_READ | vw.PROT_EXEC), ("---", 0), ("none", 0),
    ("read|write", RW), ("RWX", 7), ("r|growsdown", vw.PROT_READ | vw.PROT_GROWSDOWN), (5, 5),
])
def test_prot_forms(raw, value):
    assert decode("mprotect", "prot", raw) == value


@pytest.mark.parametrize("raw, value", [
    ("private|anonymous|fixed", ANON | vw.MAP_FIXED), ("private | anon", ANON),
    ("shared", vw.MAP_SHARED), ("private|0x40", vw.MAP_PRIVATE | 0x40),
    ("private|fixed_noreplace|populate", vw.MAP_PRIVATE | vw.MAP_FIXED_NOREPLACE | vw.MAP_POPULATE),
])
def test_mmap_flags_forms(raw, value):
    assert decode("mmap", "flags", raw) == value


def test_flags_depend_on_the_call():
    assert decode("mremap", "flags", "maymove|fixed") == vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED
    assert decode("open", "flags", "rdwr|creat") == 2 | 0o100
    assert decode("madvise", "advice", "dontneed") == vw.MADV_DONTNEED


@pytest.mark.parametrize("raw, value", [
    (4096, 4096), ("0x2000", 0x2000), ("16K", 16384), ("2M", 2 << 20), ("12", 12),
])
def test_size_forms(raw, value):
    assert decode("mmap", "length", raw) == value


def test_addresses_may_name_a_bound_number_plus_an_offset():
    assert decode("write", "addr", "buf", buf=0x7000) == 0x7000
    assert decode("write", "addr", "buf+0x2000", buf=0x7000) == 0x9000
    assert decode("write", "addr", "buf - 4K", buf=0x7000) == 0x6000
    with pytest.raises(ScenarioError, match="'nope' is not a bound number"):
        decode("write", "addr", "nope+1")


def test_processes_are_written_by_name():
    env = fmt._Env()
    env.procs["child"] = proc = vw.Machine().spawn()
    for param in ("task", "other"):
        raw = fmt.codec("switch_to", param).encode(proc, {proc.pid: "child"})
        assert fmt.codec("switch_to", param).decode(raw, env, param) is proc
    assert fmt.codec("switch_to", "task").encode(proc, {proc.pid: "child"}) == "child"
    assert fmt.codec("switch_to", "other").encode(proc, {proc.pid: "child"}) == {"proc": "child"}


def test_data_forms():
    assert decode("write", "data", "hi") == b"hi"
    assert decode("write", "data", {"hex": "00ff"}) == b"\x00\xff"
    assert decode("write", "data", {"fill": "ab", "size": 5}) == b"ababa"
    assert encode("write", "data", b"x" * 8192) == {"fill": "x", "size": "8K"}
    assert encode("write", "data", b"\x00\x01") == {"hex": "0001"}
    assert encode("write", "data", b"plain text") == "plain text"


@pytest.mark.parametrize("call, param, raw, message", [
    ("mprotect", "prot", "rwz", "unknown name 'rwz'"),
    ("mprotect", "prot", "rr", "a letter repeats"),
    ("mmap", "flags", "private|fixd", "unknown name 'fixd'"),
    ("madvise", "advice", "dontneed|free", "takes one name"),
    ("mmap", "length", "16Q", "not a number"),
    ("mmap", "length", True, "expected a number"),
    ("write", "data", {"hex": "zz"}, "not hex"),
])
def test_bad_values_are_named(call, param, raw, message):
    with pytest.raises(ScenarioError, match=message):
        decode(call, param, raw)


@settings(max_examples=150, deadline=None)
@given(prot=st.integers(0, 0x0300000f), flags=st.integers(0, (1 << 32) - 1),
       size=st.integers(0, 1 << 64), data=st.binary(max_size=200),
       advice=st.sampled_from([0, 4, 8, 21, 25, 77]))
def test_encode_then_decode_is_the_identity(prot, flags, size, data, advice):
    for call, param, value in (("mmap", "prot", prot), ("mmap", "flags", flags),
                               ("mremap", "flags", flags), ("open", "flags", flags),
                               ("mmap", "length", size), ("write", "addr", size),
                               ("write", "data", data), ("madvise", "advice", advice)):
        raw = encode(call, param, value)
        assert json.loads(json.dumps(raw)) == raw
        assert decode(call, param, raw) == value, (call, param, raw)


# -- scenarios: building, JSON, running ---------------------------------------------------------------

HAND_WRITTEN = """{
  "name": "tour", "title": "Every readable form once", "description": "a test",
  "machine": {"ram": "32M", "swap": "1M"},
  "ops": [
    {"call": "spawn", "as": "p"},
    {"call": "set_sysctl", "name": "vm.max_map_count", "value": 1000},
    {"call": "create_file", "path": "/f", "data": {"fill": "F", "size": "8K"}},
    {"call": "open", "proc": "p", "path": "/f", "flags": "rdwr", "as": "fd"},
    {"call": "mmap", "proc": "p", "addr": 0, "length": "8K", "prot": "rw",
     "flags": "shared", "fd": "fd", "offset": 0, "as": "file"},
    {"call": "write", "proc": "p", "addr": "file+0x1000", "data": "shared!"},
    {"call": "mmap", "proc": "p", "addr": "0x200000000000", "length": "0x4000",
     "prot": "read|write", "flags": "private|anon|fixed", "as": "buf"},
    {"call": "write", "proc": "p", "addr": "buf", "data": {"hex": "00ff"}},
    {"call": "touch", "proc": "p", "addr": "buf+4K", "write": true},
    {"call": "madvise", "proc": "p", "addr": "buf", "length": "4K", "advice": "dontneed"},
    {"call": "read", "proc": "p", "addr": "buf", "size": 2, "returns": {"hex": "0000"}},
    {"call": "mremap", "proc": "p", "old_addr": "buf", "old_size": "16K", "new_size": "16K",
     "flags": "maymove|fixed", "new_addr": "0x300000000000", "returns": "0x300000000000"},
    {"call": "mprotect", "proc": "p", "addr": "0x300000000000", "length": "4K", "prot": "r"},
    {"call": "write", "proc": "p", "addr": "0x300000000000", "data": "x", "expect": "SEGV_ACCERR"},
    {"call": "munmap", "proc": "p", "addr": "0x300000000001", "length": 1, "expect": "EINVAL",
     "note": "not page aligned"},
    {"call": "fork", "proc": "p", "as": "c"},
    {"call": "close", "proc": "c", "fd": "fd"},
    {"call": "exit", "proc": "p"},
    {"call": "reclaim", "nr_pages": 4}
  ]}"""


def test_a_hand_written_scenario_runs_and_round_trips():
    sc = Scenario.from_json(HAND_WRITTEN)
    assert Scenario.from_json(sc.to_json()) == sc
    assert Scenario.from_json(sc.to_json()).to_json() == sc.to_json()
    assert json.loads(sc.to_json()) == sc.to_dict()
    run = sc.start()
    outcomes = run.finish()
    m, c = run.machine, run.procs["c"]
    assert [o.error for o in outcomes if o.error] == ["SEGV_ACCERR", "EINVAL"]
    assert run.values["fd"] == 3 and run.values["buf"] == 0x200000000000
    assert m.read_file("/f")[P:P + 7] == b"shared!"
    assert c.read(0x300000000000 + P, 1) == b"\0" and c.mm.vma_lookup(0x200000000000) is None
    assert [v.perms() for v in c.mm.vmas_in(0x300000000000, 0x300000004000)] == ["r--p", "rw-p"]
    assert not run.procs["p"].alive and m.sysctl["vm.max_map_count"] == 1000
    vw.validate(m)


def test_every_library_scenario_round_trips_through_json(tmp_path):
    for name in vw.scenarios.names():
        sc = vw.scenarios.get(name)
        again = Scenario.from_json(sc.to_json())
        assert again == sc and again.to_dict() == sc.to_dict()
        sc.save(tmp_path / f"{name}.json")
        assert Scenario.load(tmp_path / f"{name}.json") == sc


def test_to_json_puts_one_op_per_line():
    text = vw.scenarios.get("merge-prev").to_json()
    assert text.count("\n") == len(vw.scenarios.get("merge-prev").ops) + 8
    assert '  {"call": "spawn", "as": "p"},\n' in text


def op(**kw):
    return kw


@pytest.mark.parametrize("ops, message", [
    ([op(call="fly")], "Machine has no public call 'fly'"),
    ([op(call="spawn", **{"as": "p"}), op(call="mmap", proc="p", adr=0)], "no parameter 'adr'"),
    ([op(call="mmap", proc="q", addr=0, length=1, prot=1, flags=2)], "no process is named 'q'"),
    ([op(call="spawn", **{"as": "p"}), op(call="spawn", **{"as": "p"})], "'p' is already bound"),
    ([op(call="spawn", **{"as": "p"}), op(call="munmap", proc="p", addr=0, length=1,
                                          expect="ENOPE")], "'ENOPE' is not an errno name"),
    ([op(call="spawn", **{"as": "p"}), op(call="fork", proc="p", expect="ENOMEM",
                                          **{"as": "c"})], "binds no result"),
    ([op(call="spawn", **{"as": "p"}), op(call="munmap", proc="p", addr=0)], "missing a required"),
    ([op(call="spawn", **{"as": "1p"})], "not a name"),
    (["spawn"], "an op is a JSON object"),
    ([op(proc="p")], "needs 'call'"),
    ([op(call="spawn", **{"as": "p"}), op(call="_access", proc="p")], "no public call"),
])
def test_malformed_scenarios_are_refused_with_the_op_named(ops, message):
    with pytest.raises(ScenarioError, match=message):
        Scenario("bad", ops=ops)


def test_malformed_documents_are_refused():
    with pytest.raises(ScenarioError, match="not valid JSON"):
        Scenario.from_json("{")
    with pytest.raises(ScenarioError, match="unknown scenario key"):
        Scenario.from_dict({"name": "x", "steps": []})
    with pytest.raises(ScenarioError, match="Machine\\(\\) has no parameter 'cpu'"):
        Scenario.from_dict({"name": "x", "machine": {"cpu": 2}})
    with pytest.raises(ScenarioError, match="needs a name"):
        Scenario.from_dict({"ops": []})


BASE_OPS = [op(call="spawn", **{"as": "p"}),
            op(call="mmap", proc="p", addr="0x100000000000", length="8K", prot="rw",
               flags="private|anonymous|fixed")]


@pytest.mark.parametrize("last, message", [
    (op(call="munmap", proc="p", addr="0x100000000000", length="4K", expect="ENOMEM"),
     "was expected to fail with ENOMEM, but returned 0"),
    (op(call="munmap", proc="p", addr="0x100000000001", length="4K"),
     "failed unexpectedly with EINVAL"),
    (op(call="munmap", proc="p", addr="0x100000000001", length="4K", expect="ENOMEM"),
     "expected to fail with ENOMEM, but failed with EINVAL"),
    (op(call="write", proc="p", addr="0x100000000000", data="x", expect="SEGV_MAPERR"),
     "expected to fail with SEGV_MAPERR, but returned None"),
    (op(call="write", proc="p", addr="0x200000000000", data="x", expect="SEGV_ACCERR"),
     "expected to fail with SEGV_ACCERR, but failed with SIGSEGV"),
    (op(call="read", proc="p", addr="0x100000000000", size=1, returns="x"),
     "returned b'\\\\x00', the scenario says b'x'"),
])
def test_a_run_checks_every_outcome(last, message):
    sc = Scenario("checked", ops=BASE_OPS + [last])
    with pytest.raises(ScenarioError, match=message) as info:
        sc.run()
    assert "checked: op 2" in str(info.value)


def test_an_op_on_an_exited_process_is_a_scenario_error():
    sc = Scenario("gone", ops=BASE_OPS + [op(call="exit", proc="p"),
                                          op(call="read", proc="p", addr=0, size=1)])
    with pytest.raises(ScenarioError, match="op 3 .*ProcessLookupError: process 1 has exited"):
        sc.run()


def test_running_step_by_step():
    run = vw.scenarios.get("split-mprotect").start(trace=False)
    assert run.index == 0 and not run.done and run.procs == {}
    first = run.step()
    assert (first.index, first.step.call, first.error) == (0, "spawn", None)
    assert run.procs["p"] is first.result
    rest = list(run)
    assert [o.index for o in rest] == [1, 2] and run.done
    assert run.step() is None
    assert str(rest[1]) == "[2] p.mprotect(0x100000002000, 12K, r) = 0"


def test_run_returns_the_machine_and_the_processes_by_name():
    m, procs = vw.scenarios.get("cow-chain").run()
    assert sorted(procs) == ["child", "grandchild", "p"]
    assert [p.pid for p in m.processes] == [procs[n].pid for n in ("p", "child", "grandchild")]


# -- export: a machine's timeline as a scenario ------------------------------------------------------

def _busy_machine():
    """A machine with a bit of everything in its history, failures included."""
    m = vw.Machine(ram="32M", swap="1M")
    p = m.spawn()
    m.sysctl["vm.max_map_count"] = 500
    m.create_file("/data", b"D" * P + bytes(range(256)) * 16)
    fd = p.open("/data")
    f = p.mmap(0, 2 * P, vw.PROT_READ, vw.MAP_PRIVATE, fd, 0)
    a = p.mmap(0, 6 * P, RW, ANON)
    p.write(a, b"parent")
    p.touch(a + P, write=True)
    p.read(f + P, 4)
    p.mprotect(a + 2 * P, P, vw.PROT_READ)
    with pytest.raises(OSError):
        p.munmap(a + 1, P)
    with pytest.raises(vw.SegmentationFault):
        p.write(a + 2 * P, b"no")
    c = p.fork()
    c.write(a, b"child")
    c.madvise(a + P, P, vw.MADV_DONTNEED)
    b = c.mremap(a + 3 * P, 2 * P, 4 * P, vw.MREMAP_MAYMOVE)
    c.write(b, b"moved")
    g = c.fork()
    p.exit()
    m.reclaim(8)
    g.read(a, 5)
    return m, a


def _state(m, a):
    out = {}
    for proc in m.processes:
        pages = [(e.present, e.swapped, e.pfn) for e in
                 (proc.pagemap(x) for x in range(a, a + 8 * P, P))]
        out[proc.pid] = (proc.proc_maps(), pages)
    return out


def _bound(machine, ops):
    """The ops with their arguments bound by parameter name (positional or keyword)."""
    out = []
    for o in ops:
        cls = vw.Machine if o.target == 0 else vw.Process
        sig = inspect.signature(getattr(cls, o.call))
        out.append((o.target, o.call, dict(sig.bind(None, *o.args, **o.kwargs).arguments,
                                           self=None)))
    return out


def _results(m):
    """Each step's (result, error), processes and files by pid and path."""
    out = []
    for i in range(len(m.timeline)):
        rec = m.step_record(i)
        result = rec.result
        result = getattr(result, "pid", getattr(result, "path", result))
        out.append((result, rec.error))
    return out


def test_export_replays_a_machine_exactly():
    m, a = _busy_machine()
    sc = vw.scenarios.from_machine(m, name="bug-report", description="what happened")
    assert sc.machine == {"ram": "32M", "swap": "1M"}
    assert [s.bind for s in sc.ops if s.bind] == ["p", "child", "child2"]
    assert [(s.call, s.expect) for s in sc.ops if s.expect] == [("munmap", "EINVAL"),
                                                                 ("write", "SIGSEGV")]
    again = Scenario.from_json(sc.to_json())
    m2, procs = again.run()
    assert _state(m2, a) == _state(m, a)
    assert _bound(m2, m2.timeline.ops) == _bound(m, m.timeline.ops)
    assert _results(m2) == _results(m)
    assert procs["child2"].read(a, 5) == b"child"
    vw.validate(m2)


def test_export_replays_cpus_threads_and_tlbs():
    from vmwidgets.core.tlb import tlb_state
    m = vw.Machine(ram="32M", cpus=3, tlb_entries=4, tlb_policy="random", seed=5)
    p = m.spawn()
    a = p.mmap(0, 8 * P, RW, ANON)
    t = p.clone_thread(cpu=1)
    for i in range(8):
        (p if i % 2 else t).write(a + i * P, bytes([i]))
    m.switch_to(1, None)                 # CPU 1 goes idle: lazy TLB
    m.switch_to(2, t)                    # t moves to CPU 2
    c = p.fork()
    t.munmap(a, 2 * P)
    t.exit()
    m.advance_time(1500)
    c.write(a + 3 * P, b"c")
    sc = vw.scenarios.from_machine(m)
    assert sc.machine == {"ram": "32M", "cpus": 3, "tlb_entries": 4, "tlb_policy": "random",
                          "seed": 5}
    assert [str(s) for s in sc.ops if s.call == "switch_to"] == ["switch_to(1, null)",
                                                                 "switch_to(2, t)"]
    m2, procs = Scenario.from_json(sc.to_json()).run()
    assert tlb_state(m2) == tlb_state(m)
    assert _state(m2, a) == _state(m, a)
    assert _results(m2) == _results(m)
    assert [str(f) for f in m2.tlb_log] == [str(f) for f in m.tlb_log]
    assert not procs["t"].alive and procs["child"].read(a + 3 * P, 1) == b"c"


def test_export_needs_a_history():
    m = vw.Machine(history=False)
    m.spawn()
    with pytest.raises(ScenarioError, match="keeps no history"):
        vw.scenarios.from_machine(m)


def test_export_of_a_library_run_gives_back_the_same_ops():
    for name in ("merge-refused-pgoff", "split-max-map-count", "cow-chain"):
        sc = vw.scenarios.get(name)
        m, _ = sc.run()
        exported = vw.scenarios.from_machine(m, name=name)
        m2, _ = exported.run()
        assert _bound(m2, m2.timeline.ops) == _bound(m, m.timeline.ops)
        assert [s.expect for s in exported.ops] == [s.expect for s in sc.ops]


def test_error_names():
    assert fmt.error_name(OSError(errno.EEXIST, "x")) == "EEXIST"
    assert fmt.error_name(ProcessLookupError("gone")) is None
    assert fmt.error_name(KeyError("x")) is None
