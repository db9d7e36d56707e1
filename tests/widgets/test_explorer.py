"""The Explorer without a browser: set values, click, check the model and the outputs."""

import subprocess
import sys

import pytest

import vmwidgets as vw

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from vmwidgets.widgets import Explorer  # noqa: E402
from vmwidgets.widgets.inputs import InputError, parse_flags, parse_int, parse_prot  # noqa: E402

RW, ANON = vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS


def run(ex, op, **fields):
    ex.set_op(op, **fields)
    ex.run_button.click()
    return ex.message.value


@pytest.fixture
def ex():
    return Explorer(vw.Machine(ram="16M"))


def test_import_vmwidgets_stays_light():
    code = ("import sys, vmwidgets; "
            "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'networkx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = "import sys, vmwidgets as vw; vw.widgets.Explorer; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_mmap_runs_on_the_chosen_process_and_jumps_to_the_head(ex):
    m = ex.machine
    pid = ex.process.value
    before_png, steps = ex.picture.value, len(m.timeline)
    msg = run(ex, "mmap", addr="0", length="8K", prot="rw-", flags="private|anonymous")
    assert len(m.timeline) == steps + 1
    rec = m.last_step
    assert rec.op.call == "mmap" and rec.op.target == pid and rec.op.args[1:] == (8192, RW, ANON)
    assert f"{rec.result:#x}" in msg and ex.fields["addr"].value == f"{rec.result:#x}"
    assert ex.slider.value == ex.slider.max == len(m.timeline)
    assert "mmap" in ex.narration.value
    assert f"{rec.result:08x}-{rec.result + 8192:08x} rw-p" in ex.maps.value
    assert ex.picture.value.count("<svg") == 2 and ex.picture.value != before_png


@pytest.mark.parametrize("op, fields, expect", [
    ("mmap", {"length": "12q"}, "length: '12q' is not a number"),
    ("mmap", {"length": "0"}, "length: 0 is below 1"),
    ("mmap", {"prot": "wr"}, "prot: 'wr': letters go in the order r, w, x"),
    ("mmap", {"flags": "anonymous"}, "flags: need 'private' or 'shared'"),
    ("mmap", {"flags": "private|bogus"}, "unknown MAP_* name 'BOGUS'"),
    ("madvise", {"advice": "sleep"}, "unknown MADV_* name 'SLEEP'"),
    ("write", {"data": ""}, "data: empty"),
])
def test_bad_input_says_which_field_and_runs_no_step(ex, op, fields, expect):
    steps = len(ex.machine.timeline)
    msg = run(ex, op, **fields)
    assert expect.replace("'", "&#x27;") in msg
    assert len(ex.machine.timeline) == steps


def test_failing_syscall_and_fault_are_shown_as_steps(ex):
    steps = len(ex.machine.timeline)
    msg = run(ex, "mprotect", addr="0x1001", length="4K", prot="r")
    assert "EINVAL" in msg and len(ex.machine.timeline) == steps + 1
    assert ex.machine.last_step.error is not None
    msg = run(ex, "write", addr="0x1000", data="x")
    assert "SegmentationFault" in msg and "SEGV_MAPERR" in msg
    assert ex.slider.value == len(ex.machine.timeline)


def test_every_operation_from_the_controls(ex):
    m = ex.machine
    run(ex, "mmap", addr="0x10000000", length="16K", prot="rw-", flags="private|anonymous|fixed")
    assert "failed" not in run(ex, "write", addr="0x10001000", data="hello")
    assert "b&#x27;hello&#x27;" in run(ex, "read", addr="0x10001000", size="5")
    assert "failed" not in run(ex, "mprotect", addr="0x10000000", length="4K", prot="r--")
    assert "failed" not in run(ex, "madvise", addr="0x10001000", length="4K", advice="dontneed")
    assert not m.task(ex.process.value).pagemap(0x10001000).present
    assert "failed" not in run(ex, "munmap", addr="0x10003000", length="4K")
    assert "failed" not in run(ex, "mremap", addr="0x10001000", length="8K", new_size="64K",
                               mremap_flags="maymove")
    assert "= 0x" in run(ex, "brk", addr="0")
    parent = ex.process.value
    assert "child pid" in run(ex, "fork")
    child = max(p.pid for p in m.processes if p.alive)
    assert [o[1] for o in ex.process.options] == [parent, child]
    ex.process.value = child
    run(ex, "exit")
    assert all(p.pid != child or not p.alive for p in m.processes)
    assert child not in [o[1] for o in ex.process.options] and ex.process.value == parent
    assert [r.op.call for r in (m.timeline.record(i) for i in range(len(m.timeline)))][-10:] == [
        "mmap", "write", "read", "mprotect", "madvise", "munmap", "mremap", "brk", "fork", "exit"]
    vw.validate(m)


def test_timeline_back_step_and_acting_from_the_past(ex):
    m = ex.machine
    run(ex, "mmap", addr="0x10000000", length="8K", prot="rw-", flags="private|anonymous|fixed")
    run(ex, "write", addr="0x10000000", data="x")
    head = len(m.timeline)
    head_png, head_text = ex.picture.value, ex.narration.value
    ex.back_button.click()
    assert ex.slider.value == head - 1
    assert "past state" in ex.position.value
    assert ex.narration.value != head_text and "mmap" in ex.narration.value
    # The past state: the mapping exists, the page was not written yet.
    assert "10000000-10002000 rw-p" in ex.maps.value
    ex.slider.value = 1
    assert "10000000" not in ex.maps.value and ex.picture.value != head_png
    ex.slider.value = 0
    assert "no step yet" in ex.narration.value
    ex.step_button.click()
    ex.step_button.click()
    assert ex.slider.value == 2 and "10000000-10002000" in ex.maps.value
    # Acting while viewing the past: on the live machine, then the head is shown.
    run(ex, "mprotect", addr="0x10000000", length="4K", prot="r--")
    assert len(m.timeline) == head + 1 == ex.slider.value == ex.slider.max
    assert m.task(ex.process.value).pagemap(0x10000000).present      # the write was kept
    assert "10000000-10001000 r--p" in ex.maps.value
    ex.step_button.click()                                            # at the head: stays
    assert ex.slider.value == head + 1


def test_play_drives_the_slider(ex):
    run(ex, "mmap", length="4K")
    ex.slider.value = 0
    ex.play.value = 2
    assert ex.slider.value == 2 and "mmap" in ex.narration.value
    assert ex.play.max == len(ex.machine.timeline)


def test_selecting_a_vma_highlights_it_and_fills_the_fields(ex):
    run(ex, "mmap", addr="0x10000000", length="8K", prot="rw-", flags="private|anonymous|fixed")
    run(ex, "write", addr="0x10001000", data="x")
    node = f"vma:{ex.process.value}:0x10000000"
    assert node in [v for _, v in ex.vma.options]
    png = ex.picture.value
    ex.vma.value = node
    assert ex._highlight == node and ex.picture.value != png
    assert ex.fields["addr"].value == "0x10000000" and ex.fields["length"].value == "0x2000"
    assert "2 pages, 1 present" in ex.vma_info.value and "0x10001000&rarr;pfn" in ex.vma_info.value
    # The selection follows the timeline while the VMA exists, and clears when it does not.
    ex.slider.value = 1
    assert ex.vma.value == "" and ex.vma.label == "(none)" and ex.vma_info.value == ""


def test_a_failing_view_shows_a_message_not_a_broken_widget(ex, monkeypatch):
    from vmwidgets.widgets import explorer

    def broken(*a, **k):
        raise RuntimeError("view exploded")

    monkeypatch.setattr(explorer, "narrate", broken)
    run(ex, "mmap", length="4K")
    assert "could not show step" in ex.message.value and "view exploded" in ex.message.value
    assert ex.slider.value == len(ex.machine.timeline)     # the rest of the widget works
    monkeypatch.undo()
    ex.back_button.click()
    assert ex.message.value == "" and "Step" in ex.narration.value or "spawn" in ex.narration.value


def test_explorer_refuses_a_machine_without_history_or_a_past_state():
    with pytest.raises(ValueError, match="history"):
        Explorer(vw.Machine(ram="16M", history=False))
    m = vw.Machine(ram="16M")
    m.spawn()
    m.spawn()
    with pytest.raises(ValueError, match="live machine"):
        Explorer(m.timeline.state(1))


def test_parsers():
    assert parse_int("0x1_000", "a") == 4096 and parse_int(" 2M ", "a") == 2 << 20
    assert parse_prot("r-x") == vw.PROT_READ | vw.PROT_EXEC and parse_prot("---") == 0
    assert parse_flags("MAP_SHARED|anonymous") == vw.MAP_SHARED | vw.MAP_ANONYMOUS
    with pytest.raises(InputError, match="64 bits"):
        parse_int(str(1 << 64), "addr")


def test_pictures_of_steps_already_shown_are_not_drawn_again(ex, monkeypatch):
    run(ex, "mmap", addr="0x10000000", length="8K", prot="rw-", flags="private|anonymous|fixed")
    run(ex, "write", addr="0x10000000", data="x")
    head_png = ex.picture.value
    ex.back_button.click()
    back_png = ex.picture.value
    drawn = []
    real = ex._draw
    monkeypatch.setattr(ex, "_draw", lambda *a: drawn.append(a) or real(*a))
    ex.step_button.click()
    ex.back_button.click()
    assert drawn == [] and ex.picture.value == back_png
    ex.step_button.click()
    assert ex.picture.value == head_png
    ex.vma.value = f"vma:{ex.process.value}:0x10000000"          # a new selection: drawn
    assert len(drawn) == 1


def test_a_process_not_running_at_the_step_shown(ex):
    m = ex.machine
    run(ex, "fork")
    child = max(p.pid for p in m.processes if p.alive)
    ex.process.value = child
    assert f"pid {child}" in ex.maps.value or "[stack]" in ex.maps.value
    ex.slider.value = 1                                       # before the fork
    assert f"pid {child} is not running at step 1" in ex.maps.value
    assert ex.vma.options == (("(none)", ""),) and "could not" not in ex.message.value
    run(ex, "exit")                                           # from the past: acts on the live child
    assert ex.slider.value == len(m.timeline) and child not in [v for _, v in ex.process.options]
    run(ex, "exit")                                           # the last process
    assert ex.process.value is None and ex.run_button.disabled
    ex.act()
    assert "no process is running" in ex.message.value


def test_the_page_walk_frames_and_tlb_tabs_follow_the_step(ex):
    run(ex, "mmap", addr="0x10000000", length="8K", prot="rw-", flags="private|anonymous|fixed")
    pid = ex.process.value
    run(ex, "write", addr="0x10001000", data="x")
    assert ex.slider.value == len(ex.machine.timeline)
    assert ex.walk.value.startswith("Choose a VMA")
    ex.vma.value = f"vma:{pid}:0x10000000"
    pfn = ex.machine.task(pid).pagemap(0x10001000).pfn
    assert "0x10000000" in ex.walk.value
    assert f"{pfn:#x}" in ex.frames.value
    assert "CPU 0" in ex.tlb.value
    assert f"pid {pid} 0x10001000" in ex.frames.value
    ex.slider.value = len(ex.machine.timeline) - 1       # before the write: not mapped yet
    assert f"pid {pid} 0x10001000" not in ex.frames.value
