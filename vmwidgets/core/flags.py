"""Constants with their Linux 6.18 x86-64 values.

Sources: include/uapi/asm-generic/mman-common.h, arch/x86/include/uapi/asm/mman.h,
include/linux/mm.h (VM_*), arch/x86/include/asm/pgtable_types.h (_PAGE_*),
include/uapi/linux/kernel-page-flags.h (KPF_*), fs/proc/task_mmu.c (PM_*).

>>> hex(MAP_PRIVATE | MAP_ANONYMOUS)
'0x22'
>>> VM_MAYREAD == VM_READ << 4
True
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFF_FFFF_FFFF_FFFF
PMD_SHIFT = 21
PUD_SHIFT = 30
PGDIR_SHIFT = 39
PTRS_PER_TABLE = 512

#: arch/x86/include/asm/page_64_types.h: TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE (4-level paging).
TASK_SIZE = (1 << 47) - PAGE_SIZE
STACK_TOP = TASK_SIZE
ULONG_MAX = (1 << 64) - 1

# --- mmap prot ---------------------------------------------------------------------------
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000

# --- mmap flags --------------------------------------------------------------------------
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_DROPPABLE = 0x08
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_ANON = MAP_ANONYMOUS
MAP_32BIT = 0x40
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_UNINITIALIZED = 0x4000000

# --- madvise -----------------------------------------------------------------------------
MADV_NORMAL = 0
MADV_RANDOM = 1
MADV_SEQUENTIAL = 2
MADV_WILLNEED = 3
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9
MADV_DONTFORK = 10
MADV_DOFORK = 11
MADV_MERGEABLE = 12
MADV_UNMERGEABLE = 13
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_DONTDUMP = 16
MADV_DODUMP = 17
MADV_WIPEONFORK = 18
MADV_KEEPONFORK = 19
MADV_COLD = 20
MADV_PAGEOUT = 21
MADV_POPULATE_READ = 22
MADV_POPULATE_WRITE = 23
MADV_DONTNEED_LOCKED = 24
MADV_COLLAPSE = 25
MADV_HWPOISON = 100
MADV_SOFT_OFFLINE = 101
MADV_GUARD_INSTALL = 102
MADV_GUARD_REMOVE = 103

# --- mremap ------------------------------------------------------------------------------
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

# --- vm_flags (include/linux/mm.h) -----------------------------------------------------
VM_NONE = 0x00000000
VM_READ = 0x00000001
VM_WRITE = 0x00000002
VM_EXEC = 0x00000004
VM_SHARED = 0x00000008
VM_MAYREAD = 0x00000010
VM_MAYWRITE = 0x00000020
VM_MAYEXEC = 0x00000040
VM_MAYSHARE = 0x00000080
VM_GROWSDOWN = 0x00000100
VM_UFFD_MISSING = 0x00000200
VM_PFNMAP = 0x00000400
VM_UFFD_WP = 0x00001000
VM_LOCKED = 0x00002000
VM_IO = 0x00004000
VM_SEQ_READ = 0x00008000
VM_RAND_READ = 0x00010000
VM_DONTCOPY = 0x00020000
VM_DONTEXPAND = 0x00040000
VM_LOCKONFAULT = 0x00080000
VM_ACCOUNT = 0x00100000
VM_NORESERVE = 0x00200000
VM_HUGETLB = 0x00400000
VM_SYNC = 0x00800000
VM_PAT = 0x01000000  # VM_ARCH_1 on x86
VM_WIPEONFORK = 0x02000000
VM_DONTDUMP = 0x04000000
VM_SOFTDIRTY = 0x08000000  # only with CONFIG_MEM_SOFT_DIRTY; our kernels build without it
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000

VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC
VM_MAY_FLAGS = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
#: include/linux/mm.h: flags that forbid merging and most madvise advice.
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
#: arch/x86/include/asm/page_types.h: VM_DATA_DEFAULT_FLAGS (no READ_IMPLIES_EXEC).
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
VM_STACK_FLAGS = VM_GROWSDOWN | VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT

# --- x86-64 page-table entry bits (arch/x86/include/asm/pgtable_types.h) ------------------
_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7
_PAGE_GLOBAL = 1 << 8
_PAGE_SPECIAL = 1 << 9
_PAGE_PROTNONE = _PAGE_GLOBAL  # shares bit 8, only meaningful while _PAGE_PRESENT is clear
#: arch/x86/include/asm/pgtable_types.h: _PAGE_BIT_SAVED_DIRTY = _PAGE_BIT_SOFTW5 (6.18, x86-64,
#: defined whatever CONFIG_X86_USER_SHADOW_STACK says): a software bit that holds the dirty
#: bit of a write-protected PTE, since the CPU reads Write=0,Dirty=1 as shadow-stack memory.
_PAGE_SAVED_DIRTY = 1 << 58
#: arch/x86/include/asm/pgtable_types.h: _PAGE_DIRTY_BITS: either bit means dirty (pte_dirty()).
_PAGE_DIRTY_BITS = _PAGE_DIRTY | _PAGE_SAVED_DIRTY
_PAGE_NX = 1 << 63
PTE_PFN_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)
#: arch/x86/include/asm/pgtable_types.h: _KERNPG_TABLE / _PAGE_TABLE for upper-level entries.
_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY

PTE_BIT_NAMES = (
    (_PAGE_PRESENT, "P"), (_PAGE_RW, "RW"), (_PAGE_USER, "U"), (_PAGE_PWT, "PWT"),
    (_PAGE_PCD, "PCD"), (_PAGE_ACCESSED, "A"), (_PAGE_DIRTY, "D"), (_PAGE_PSE, "PSE"),
    (_PAGE_GLOBAL, "G"), (_PAGE_SPECIAL, "SPECIAL"), (_PAGE_SAVED_DIRTY, "SAVED_DIRTY"),
    (_PAGE_NX, "NX"),
)

# --- /proc/PID/pagemap (fs/proc/task_mmu.c) ----------------------------------------------
PM_PFRAME_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_GUARD_REGION = 1 << 58
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

# --- /proc/kpageflags (include/uapi/linux/kernel-page-flags.h) ---------------------------
KPF_LOCKED = 0
KPF_ERROR = 1
KPF_REFERENCED = 2
KPF_UPTODATE = 3
KPF_DIRTY = 4
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_SLAB = 7
KPF_WRITEBACK = 8
KPF_RECLAIM = 9
KPF_BUDDY = 10
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_UNEVICTABLE = 18
KPF_HWPOISON = 19
KPF_NOPAGE = 20
KPF_KSM = 21
KPF_THP = 22
KPF_OFFLINE = 23
KPF_ZERO_PAGE = 24
KPF_IDLE = 25
KPF_PGTABLE = 26
KPF_RESERVED = 32

# --- siginfo si_code for SIGSEGV ------------------------------------------------------------
SEGV_MAPERR = 1
SEGV_ACCERR = 2

# --- sysctl defaults -------------------------------------------------------------------------
DEFAULT_MAX_MAP_COUNT = 65530
#: mm/mmap.c: stack_guard_gap = 256UL << PAGE_SHIFT (1 MiB).
STACK_GUARD_GAP = 256 << PAGE_SHIFT
DEFAULT_MMAP_MIN_ADDR = 4096


def calc_vm_prot_bits(prot):
    """include/linux/mman.h: calc_vm_prot_bits() (no pkeys)."""
    return (prot & PROT_READ and VM_READ) | (prot & PROT_WRITE and VM_WRITE) | (
        prot & PROT_EXEC and VM_EXEC)


def calc_vm_flag_bits(flags):
    """include/linux/mman.h: calc_vm_flag_bits() for the flags an anonymous or file mmap honours."""
    vm = 0
    if flags & MAP_GROWSDOWN:
        vm |= VM_GROWSDOWN
    if flags & MAP_LOCKED:
        vm |= VM_LOCKED
    if flags & MAP_SYNC:
        vm |= VM_SYNC
    return vm


def page_align(value):
    """Round up to a page boundary (the kernel's PAGE_ALIGN, wrapping at 2**64)."""
    return (value + PAGE_SIZE - 1) & PAGE_MASK


def offset_in_page(value):
    return value & (PAGE_SIZE - 1)


_VM_FLAG_NAMES = {v: k for k, v in sorted(globals().items())
                  if k.startswith("VM_") and isinstance(v, int) and v and not v & (v - 1)}


def vm_flags_names(vm_flags):
    """Names of the set VM_* bits, lowest first.

    >>> vm_flags_names(VM_READ | VM_WRITE | VM_MAYREAD)
    ['VM_READ', 'VM_WRITE', 'VM_MAYREAD']
    """
    return [_VM_FLAG_NAMES.get(1 << b, f"bit{b}") for b in range(64) if vm_flags >> b & 1]


def pte_flags_names(pte):
    """Names of the set x86 PTE bits, e.g. ``['P', 'RW', 'U', 'A', 'D', 'NX']``."""
    return [name for bit, name in PTE_BIT_NAMES if pte & bit]
