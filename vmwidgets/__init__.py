"""vmwidgets: watch Linux 6.18 (x86-64) manage virtual memory, step by step.

The public front door::

    import vmwidgets as vw
    m = vw.Machine()
    p = m.spawn()
    addr = p.mmap(0, 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)

Scenarios and exercises: ``vw.scenarios.get("merge-prev").run()``, ``vw.exercise("cow", 7)``
(and ``python -m vmwidgets --help``).

Constants (``PROT_*``, ``MAP_*``, ``MADV_*``, ``MREMAP_*``, ``VM_*``, ``KPF_*``, ``PM_*``)
carry their Linux x86-64 values.
"""

from .core import flags as _flags
from .core import (AnonVma, BusError, ProcessKilled, AnonVmaChain, Event, Machine, MmStruct, OutOfMemory, Page, Process, Thread,
                   SegmentationFault, SyscallError, ValidationError, VmAreaStruct, for_each_vma,
                   rmap_walk, validate)
from .procfs import PagemapEntry
from . import scenarios
from .scenarios.exercises import exercise

__version__ = "0.1.0"


def __getattr__(name):
    # vw.widgets imports ipywidgets, vw.views networkx and matplotlib: only on first
    # use, so that `import vmwidgets` stays light.
    if name in ("widgets", "views"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_PREFIXES = ("PROT_", "MAP_", "MADV_", "MREMAP_", "VM_", "KPF_", "PM_", "SEGV_", "PAGE_")
globals().update({k: v for k, v in vars(_flags).items() if k.startswith(_PREFIXES)})

__all__ = ["BusError", "ProcessKilled", "AnonVma", "AnonVmaChain", "Event", "Machine", "MmStruct", "OutOfMemory", "Page",
           "PagemapEntry", "Process", "SegmentationFault", "SyscallError", "Thread", "ValidationError",
           "VmAreaStruct", "exercise", "for_each_vma", "rmap_walk", "scenarios", "validate"] + sorted(
    k for k in vars(_flags) if k.startswith(_PREFIXES))
