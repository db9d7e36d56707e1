"""``Explorer(machine)``: act on a process, move along the timeline, see what changed.

Controls (top): the process, the operation and its arguments, **Run**. Every argument is
read by :mod:`.inputs`; bad text gives a message that names the field and no step runs. A
syscall that fails (``-ENOMEM``, ``SIGSEGV`` ...) is still a step of the machine, shown
with its error.

Timeline: the slider is the number of steps shown (``m.timeline.state(n)``); back, step
and play move it. A past state is read-only; **Run** while one is shown acts on the live
machine and jumps to the newest step.

Views: the address space strip of the chosen process and the rmap, as inline SVG in an
``HTML`` widget (:mod:`vmwidgets.views.svg`: built as text, the browser draws it), the
narration of the step shown, and tabs with its call tree, the maps, the address space and
the rmap as text, the page-table walk of the chosen VMA's first page, the frames and the
TLBs. Choosing a VMA highlights it in the rmap picture, lists its pages and fills the
address and length fields with its range.

>>> import vmwidgets as vw
>>> m = vw.Machine(ram="16M")
>>> ex = vw.widgets.Explorer(m)          # spawns a process if the machine has none
>>> ex.set_op("mmap", addr="0", length="8K", prot="rw-", flags="private|anonymous")
>>> ex.run_button.click()
>>> ex.slider.value == len(m.timeline), "error" in ex.message.value
(True, False)
>>> ex.set_op("mprotect", addr="0x1", length="4K", prot="r")
>>> ex.run_button.click()
>>> "EINVAL" in ex.message.value
True
"""

import errno
import html
import time
from collections import OrderedDict

import ipywidgets as W

from ..core import flags as F
from ..core.errors import BusError, ProcessKilled, SegmentationFault
from ..core.mm_types import for_each_vma
from ..procfs import maps_line
from ..views import (address_space_text, frames_text, rmap_text, tlb_text, walk_text)
from ..views.diff import step_changes
from ..views.narration import narrate, trace_view
from ._text import TextRepr
from .inputs import (InputError, _names, parse_advice, parse_data, parse_flags, parse_int,
                     parse_prot)

#: The operations offered, and the argument fields each one shows.
OPS = {
    "mmap": ("addr", "length", "prot", "flags"),
    "munmap": ("addr", "length"),
    "mprotect": ("addr", "length", "prot"),
    "madvise": ("addr", "length", "advice"),
    "mremap": ("addr", "length", "new_size", "mremap_flags"),
    "brk": ("addr",),
    "read": ("addr", "size"),
    "write": ("addr", "data"),
    "fork": (),
    "exit": (),
}
_DEFAULTS = {"addr": "0", "length": "16K", "prot": "rw-", "flags": "private|anonymous",
             "advice": "dontneed", "new_size": "32K", "mremap_flags": "maymove",
             "size": "16", "data": "hello"}
_HELP = {"addr": "address (0x..., or 0 to let mmap choose)", "length": "bytes, e.g. 16K",
         "prot": "rw-, r--, none or PROT_* names", "flags": "e.g. private|anonymous|fixed",
         "advice": "MADV_* name, e.g. dontneed, free, cold", "new_size": "bytes, e.g. 32K",
         "mremap_flags": "maymove, fixed or empty", "size": "bytes to read",
         "data": "text to write"}
_OK, _ERR = "#1a7f37", "#b42318"


def _msg(text, colour):
    return f'<span style="color:{colour}">{html.escape(text)}</span>'


class Explorer(TextRepr, W.VBox):
    """The explorer widget over a :class:`vmwidgets.Machine` (with a timeline).

    :param machine: the live machine; a process is spawned if none is running.
    :param pid: the process to act on first (default: the first one running).
    :param dpi: ignored (the picture is SVG); kept so that older calls still work.

    ``timings`` keeps, for each redraw, ``(total, picture)`` seconds (the benchmark reads
    it). Pictures are kept by (step, process, selected VMA): going back to a step already
    shown costs no drawing.
    """

    #: How many pictures to keep (SVG text, about 100-200 KiB each).
    picture_cache = 128

    def __init__(self, machine, pid=None, dpi=72):
        if machine.frozen:
            raise ValueError("the Explorer needs the live machine, not a past state")
        if machine.timeline is None:
            raise ValueError("the Explorer needs a machine with history: vw.Machine(history=True)")
        self.machine = machine
        if not any(p.alive for p in machine.processes):
            machine.spawn()
        self.dpi = dpi
        self.timings = []
        self._highlight = None
        self._rmap_layout = None
        self._pictures = OrderedDict()     # (step, pid, selection) -> SVG text (HTML)
        self._busy = False
        self._quiet = False

        lay = W.Layout(width="260px")
        self.process = W.Dropdown(description="process", layout=lay)
        self.op = W.Dropdown(options=list(OPS), value="mmap", description="operation", layout=lay)
        self.fields = {}
        for name, default in _DEFAULTS.items():
            self.fields[name] = W.Text(value=default, description=name.replace("_", " "),
                                       placeholder=_HELP[name], tooltip=_HELP[name],
                                       layout=W.Layout(width="260px"))
        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run the operation on the live machine")
        self.message = W.HTML(value="")
        self.slider = W.IntSlider(min=0, max=0, description="step", continuous_update=False,
                                  layout=W.Layout(width="420px"))
        self.back_button = W.Button(description="Back", icon="step-backward", tooltip="one step back")
        self.step_button = W.Button(description="Step", icon="step-forward", tooltip="one step on")
        self.play = W.Play(min=0, max=0, interval=600, description="play")
        self.position = W.HTML()
        self.vma = W.Dropdown(description="VMA", layout=W.Layout(width="560px"))
        self.vma_info = W.HTML()
        self.picture = W.HTML(layout=W.Layout(max_width="900px"))
        self.narration = W.HTML(layout=W.Layout(min_height="2em"))
        self.trace = W.Textarea(layout=W.Layout(width="900px", height="220px"), disabled=True)
        self.maps = W.Textarea(layout=W.Layout(width="900px", height="220px"), disabled=True)
        self.rmap = W.Textarea(layout=W.Layout(width="900px", height="160px"), disabled=True)
        self.strip_text = W.Textarea(layout=W.Layout(width="900px", height="220px"), disabled=True)
        self.walk = W.Textarea(layout=W.Layout(width="900px", height="160px"), disabled=True)
        self.frames = W.Textarea(layout=W.Layout(width="900px", height="220px"), disabled=True)
        self.tlb = W.Textarea(layout=W.Layout(width="900px", height="220px"), disabled=True)
        self.picture_text = W.HTML(
            '<span class="vmw-alt" style="font-size:smaller">Picture: the address space of '
            'the chosen process (top) and the rmap (bottom); the same as text in the tabs '
            'below.</span>')

        self._field_box = W.HBox([self.fields[n] for n in _DEFAULTS], layout=W.Layout(flex_flow="row wrap"))
        tabs = W.Tab(children=[self.maps, self.strip_text, self.rmap, self.trace, self.walk,
                               self.frames, self.tlb])
        for i, title in enumerate(["/proc/PID/maps", "address space", "rmap", "call tree",
                                   "page walk", "frames", "TLB"]):
            tabs.set_title(i, title)
        W.link((self.play, "value"), (self.slider, "value"))

        self.op.observe(self._on_op, names="value")
        self.run_button.on_click(lambda _: self.act())
        self.slider.observe(lambda ch: self.show(ch["new"]), names="value")
        self.back_button.on_click(lambda _: self._move(-1))
        self.step_button.on_click(lambda _: self._move(+1))
        self.process.observe(lambda ch: self._quiet or self.show(self.slider.value), names="value")
        self.vma.observe(self._on_vma, names="value")

        super().__init__([
            W.HBox([self.process, self.op, self.run_button]), self._field_box, self.message,
            W.HBox([self.back_button, self.slider, self.step_button, self.play]), self.position,
            self.narration, self.picture, self.picture_text, W.HBox([self.vma]), self.vma_info, tabs,
        ])
        self.add_class("vmw-explorer")
        for widget, name in [(self.run_button, "run"), (self.back_button, "back"),
                             (self.step_button, "step"), (self.picture, "picture"),
                             (self.narration, "narration"), (self.message, "message"),
                             (self.position, "position"), (self.op, "op"), (self.vma, "vma")]:
            widget.add_class(f"vmw-{name}")
        self._refresh_processes(pid)
        self._on_op({"new": self.op.value})
        self._follow_head()

    # -- acting --------------------------------------------------------------------------------
    def set_op(self, op, **values):
        """Choose the operation and fill its fields (text, as a student would type it)."""
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; one of {', '.join(OPS)}")
        self.op.value = op
        for name, value in values.items():
            if name not in self.fields:
                raise ValueError(f"unknown field {name!r}; fields: {', '.join(self.fields)}")
            self.fields[name].value = str(value)

    def _args(self, op):
        f = {n: w.value for n, w in self.fields.items()}
        addr = lambda: parse_int(f["addr"], "addr")  # noqa: E731
        length = lambda: parse_int(f["length"], "length", minimum=1)  # noqa: E731
        if op == "mmap":
            return (addr(), length(), parse_prot(f["prot"]), parse_flags(f["flags"]))
        if op == "munmap":
            return (addr(), length())
        if op == "mprotect":
            return (addr(), length(), parse_prot(f["prot"]))
        if op == "madvise":
            return (addr(), length(), parse_advice(f["advice"]))
        if op == "mremap":
            return (addr(), length(), parse_int(f["new_size"], "new size", minimum=1),
                    _names(f["mremap_flags"], "MREMAP_", "mremap flags"))
        if op == "brk":
            return (addr(),)
        if op == "read":
            return (addr(), parse_int(f["size"], "size", minimum=1))
        if op == "write":
            return (addr(), parse_data(f["data"]))
        return ()

    def act(self):
        """Run the chosen operation with the fields' values on the live machine; show the
        result or the error, and jump to the newest step."""
        op, pid = self.op.value, self.process.value
        if pid is None:
            self.message.value = _msg("no process is running; nothing to act on", _ERR)
            return
        try:
            args = self._args(op)
            task = self.machine.task(pid)
        except (InputError, ProcessLookupError) as exc:
            self.message.value = _msg(str(exc), _ERR)
            return
        steps = len(self.machine.timeline)
        shown = ", ".join(f"{a:#x}" if isinstance(a, int) else repr(a) for a in args)
        try:
            result = getattr(task, op)(*args)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno, "error")
            text = f"{op}({shown}) failed: {name}: {exc.strerror or exc}"
            colour = _ERR
        except (SegmentationFault, BusError, ProcessKilled) as exc:
            text, colour = f"{op}({shown}): {type(exc).__name__}: {exc}", _ERR
        except (TypeError, ValueError) as exc:
            text, colour = f"{op}({shown}) refused: {exc}", _ERR
        else:
            if op == "fork":
                text = f"fork() = child pid {result.pid}"
            elif isinstance(result, (bytes, bytearray)):
                text = f"{op}({shown}) = {bytes(result)!r}"
            elif isinstance(result, int):
                text = f"{op}({shown}) = {result:#x}"
            else:
                text = f"{op}({shown}) done"
            colour = _OK
        if op in ("mmap", "mremap") and colour == _OK:
            self.fields["addr"].value = f"{result:#x}"
        self._refresh_processes(self.process.value)
        if len(self.machine.timeline) == steps and colour == _OK:
            text += " (no step recorded)"
        self.message.value = _msg(text, colour)
        self._follow_head()

    def _on_op(self, change):
        shown = OPS[change["new"]]
        for name, w in self.fields.items():
            w.layout.display = None if name in shown else "none"
        self.fields["addr"].placeholder = _HELP["addr"]

    def _refresh_processes(self, keep=None):
        alive = [p for p in self.machine.processes if p.alive]
        options = [(f"pid {p.pid}", p.pid) for p in alive]
        pids = [p.pid for p in alive]
        value = keep if keep in pids else (pids[0] if pids else None)
        self._set_options(self.process, options, value)
        self.run_button.disabled = not pids

    def _set_options(self, dropdown, options, value):
        """Replace a dropdown's options and value without running its observers."""
        quiet, self._quiet = self._quiet, True
        try:
            if list(dropdown.options) != options:
                dropdown.options = options
            if dropdown.value != value:
                dropdown.value = value
        finally:
            self._quiet = quiet

    # -- the timeline ---------------------------------------------------------------------------
    def _follow_head(self):
        head = len(self.machine.timeline)
        self.play.max = head
        self.slider.max = head
        if self.slider.value != head:
            self.slider.value = head     # observers redraw
        else:
            self.show(head)

    def _move(self, delta):
        self.slider.value = min(max(self.slider.value + delta, 0), self.slider.max)

    def show(self, n):
        """Show the state after ``n`` steps (the slider follows)."""
        if self._busy:
            return
        self._busy = True
        try:
            if self.slider.value != n:
                self.slider.value = n
            self._render(n)
            if "could not show step" in self.message.value:
                self.message.value = ""
        except Exception as exc:  # noqa: BLE001 - a view failing must not break the widget
            self.message.value = _msg(f"could not show step {n}: {type(exc).__name__}: {exc}", _ERR)
        finally:
            self._busy = False

    def text(self):
        """What the Explorer shows, as plain text: the step, its narration and the maps of
        the chosen process (the notebook's saved text/plain of this widget)."""
        n, head, pid = getattr(self, "_shown", (None, None, None))
        if n is None:
            return f"Explorer: {self.message.value or 'nothing shown yet'}"
        past = "" if n == head else " (a past state)"
        return (f"Explorer: after {n} of {head} steps{past}, pid {pid}\n"
                f"{self._narration_text}\n\n{self.maps.value}").rstrip()

    def _render(self, n):
        t0 = time.perf_counter()
        tl = self.machine.timeline
        head = len(tl)
        after = tl.state(n)
        before = tl.state(n - 1) if n > 0 else None
        record = tl.record(n - 1) if n > 0 else None
        changes = step_changes(before, after, record) if before is not None else None
        pid = self.process.value
        running = pid is not None and any(p.pid == pid for p in after.processes if p.alive)
        self.position.value = (f"<b>after {n} of {head} steps</b>" + (
            "" if n == head else " &mdash; a past state, read-only; Run acts on the live machine"))
        self._shown = (n, head, pid)
        if record is None:
            self._narration_text = "The machine as it started (no step yet)."
            self.narration.value = f"<i>{self._narration_text}</i>"
            self.trace.value = ""
        else:
            self._narration_text = narrate(record, before, after)
            self.narration.value = html.escape(self._narration_text).replace("\n", "<br>")
            self.trace.value = trace_view(record)
        if running:
            self.maps.value = after.task(pid).proc_maps()
            self.strip_text.value = address_space_text(after, pid, changes)
        else:
            self.maps.value = self.strip_text.value = f"pid {pid} is not running at step {n}"
        self.rmap.value = rmap_text(after)
        self.frames.value = frames_text(after, changes)
        self.tlb.value = tlb_text(after, changes)
        self._update_vmas(after, pid if running else None)
        if self._highlight:
            start = int(self._highlight.split(":")[2], 16)
            self.walk.value = walk_text(after, pid, start, changes)
        else:
            self.walk.value = "Choose a VMA to see the page-table walk of its first page."
        t1 = time.perf_counter()
        # A state of the timeline never changes once recorded, so the picture of step n
        # (for one process and one selection) can be kept and shown again as it was.
        key = (n, pid if running else None, self._highlight)
        picture = self._pictures.get(key)
        if picture is None:
            picture = self._pictures[key] = self._draw(after, pid if running else None, changes)
            while len(self._pictures) > self.picture_cache:
                self._pictures.popitem(last=False)
        else:
            self._pictures.move_to_end(key)
        self.picture.value = picture
        t2 = time.perf_counter()
        self.timings.append((t2 - t0, t2 - t1))

    def _draw(self, after, pid, changes):
        from ..views import rmap_graph, rmap_layout, svg
        if pid is not None:
            address = int(self._highlight.split(":")[2], 16) if self._highlight else None
            strip = svg.address_space_svg(after, pid, changes=changes, highlight=address)
        else:
            strip = svg.message_svg("the chosen process is not running at this step")
        # The rmap keeps the layout of the picture drawn before: nodes stay where they were.
        graph = rmap_graph(after)
        self._rmap_layout = rmap_layout(graph, self._rmap_layout)
        rmap = svg.rmap_svg(after, changes=changes, highlight=self._highlight, graph=graph,
                            layout=self._rmap_layout)
        return f'<div class="vmw-svg">{strip}<br>{rmap}</div>'

    # -- VMA selection --------------------------------------------------------------------------
    def _update_vmas(self, state, pid):
        options = [("(none)", "")]     # not None: a Dropdown shows None as no selection
        try:
            mm = state.task(pid).mm if pid is not None else None
        except ProcessLookupError:
            mm = None
        if mm is not None:
            options += [(maps_line(v).rstrip(), f"vma:{pid}:{v.vm_start:#x}") for v in for_each_vma(mm)]
        keep = self.vma.value if self.vma.value in [v for _, v in options] else ""
        self._set_options(self.vma, options, keep)
        self._highlight = keep or None
        self.vma_info.value = self._vma_info(state, keep) if keep else ""

    def _vma_info(self, state, node):
        _, pid, start = node.split(":")
        task = state.task(int(pid))
        vma = next(v for v in for_each_vma(task.mm) if v.vm_start == int(start, 16))
        present = []
        for i in range(min(vma.pages(), 64)):
            entry = task.pagemap(vma.vm_start + i * F.PAGE_SIZE)
            if entry.present:
                present.append(f"{vma.vm_start + i * F.PAGE_SIZE:#x}&rarr;pfn {entry.pfn:#x}")
        avs = ", ".join(str(c.anon_vma.id) for c in vma.anon_vma_chain) or "none"
        pages = "; ".join(present[:16]) + (" ..." if len(present) > 16 else "")
        return (f"<b>{html.escape(node)}</b>: {vma.pages()} pages, {len(present)} present"
                f"{' (first 64 checked)' if vma.pages() > 64 else ''}; anon_vmas: {avs}"
                + (f"<br>{pages}" if present else ""))

    def _on_vma(self, change):
        node = change["new"]
        if self._busy or self._quiet:
            return
        if node:
            _, _, start = node.split(":")
            state = self.machine.timeline.state(self.slider.value)
            vma = next((v for v in for_each_vma(state.task(self.process.value).mm)
                        if v.vm_start == int(start, 16)), None)
            if vma is not None:
                self.fields["addr"].value = f"{vma.vm_start:#x}"
                self.fields["length"].value = f"{vma.vm_end - vma.vm_start:#x}"
        self._highlight = node or None
        self.show(self.slider.value)
