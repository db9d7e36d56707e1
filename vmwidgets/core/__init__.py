"""The simulation core: pure Python, deterministic, no UI imports.

Modules are named after the kernel files they model (``mm/vma.c`` -> :mod:`.vma`,
``mm/memory.c`` -> :mod:`.memory`, ...).
"""

from .errors import (BusError, OutOfMemory, ProcessKilled, SegmentationFault, SyscallError,
                     ValidationError)
from .machine import Event, Machine, Process, Thread
from .mm_types import (AnonVma, AnonVmaChain, MmStruct, Page, VmAreaStruct, for_each_vma)
from .rmap import rmap_walk
from .validate import validate

__all__ = ["BusError", "ProcessKilled", "AnonVma", "AnonVmaChain", "Event", "Machine", "MmStruct", "OutOfMemory", "Page",
           "Process", "SegmentationFault", "SyscallError", "Thread", "ValidationError", "VmAreaStruct",
           "for_each_vma", "rmap_walk", "validate"]
