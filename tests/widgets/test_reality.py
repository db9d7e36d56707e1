"""The reality-check widget: model and live kernel side by side."""

import pytest

pytest.importorskip("ipywidgets")
from vmwidgets import live  # noqa: E402
from vmwidgets.widgets import RealityCheck, reality  # noqa: E402
from vmwidgets.widgets.inputs import InputError  # noqa: E402

_LIVE, _WHY = live.live_kernel_available()
needs_live = pytest.mark.skipif(not _LIVE, reason=f"no live Linux kernel here: {_WHY}")


@needs_live
def test_demo_agrees_with_the_kernel():
    w = RealityCheck()
    assert w.run() == 0
    assert "<b>0</b> differences" in w.status.value
    assert "100000000000-100000002000 rw-p" in w.table.value          # after the mprotect split
    assert "100000002000-100000003000 r--p" in w.table.value
    assert "-- PE" in w.table.value and "&#9888;" not in w.table.value


@needs_live
def test_a_difference_is_marked(monkeypatch):
    real = reality._apply

    def model_skips_mprotect(proc, op):
        if op[0] == "mprotect" and not isinstance(proc, live.LiveProcess):
            return 0
        return real(proc, op)

    monkeypatch.setattr(reality, "_apply", model_skips_mprotect)
    w = RealityCheck([("mmap", 0, 2, "rw-"), ("mprotect", 1, 1, "r--")])
    assert w.run() == 1
    assert "&#9888;" in w.table.value and "#fde2e1" in w.table.value


def test_skips_with_a_message_without_a_live_kernel(monkeypatch):
    monkeypatch.setattr(live, "live_kernel_available", lambda: (False, "not Linux (sys.platform='darwin')"))
    w = RealityCheck()
    assert w.run_button.disabled and "not available here (not Linux" in w.status.value
    assert w.run() is None and w.table.value == ""
    assert w.text().endswith("the live kernel is not available here, nothing was run")


@needs_live
def test_not_root_shows_no_pfns(monkeypatch):
    """As a user, pagemap has the flag bits but no PFNs: the table shows none, the status says why."""
    monkeypatch.setattr(live, "live_root_available", lambda: (False, "not root"))
    w = RealityCheck([("mmap", 0, 2, "rw-"), ("write", 0, "hi")])
    assert w.run() == 0
    assert "not root" in w.status.value
    assert "0x" not in w.table.value.split("pagemap")[-1]
    assert "PE --" in w.text()


@pytest.mark.parametrize("ops, expect", [
    ([("mmap", 9, 1, "rw-")], "outside the arena"),
    ([("mmap", 6, 4, "rw-")], "do not fit"),
    ([("mlock", 0, 1)], "is not one of"),
    ([("munmap", 0)], "takes 2 arguments"),
    ([("mprotect", 0, 1, "wx")], "prot"),
])
def test_bad_ops_are_refused_with_a_message(ops, expect):
    with pytest.raises(InputError, match=expect):
        RealityCheck(ops)


def test_ops_of_a_scenario():
    ops, skipped = reality.scenario_ops("segv-accerr-maperr")
    assert ops == [("mmap", 0, 2, "rw"), ("write", 0, "hi"), ("mprotect", 0, 2, "r"), ("read", 0, 2)]
    assert len(skipped) == 2 and all("would kill the live child" in s for s in skipped)
    w = RealityCheck.from_scenario("split-mprotect")
    assert [op[0] for op in w.ops] == ["mmap", "mprotect"] and w.skipped == []
    if w.available:
        assert w.run() == 0
        assert "100000002000-100000005000 r--p" in w.table.value
