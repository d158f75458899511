"""Just enough ELF reading to prove a binary is static.

The shim must run in an empty container, so it may not ask for a dynamic
loader (PT_INTERP) or shared libraries (DT_NEEDED). A static-pie still has a
PT_DYNAMIC segment for its own relocations; only its NEEDED entries matter.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ElfFacts", "read_elf_facts"]

_PT_DYNAMIC = 2
_PT_INTERP = 3
_DT_NULL = 0
_DT_NEEDED = 1
_MACHINES = {62: "x86_64", 183: "aarch64"}


@dataclass(frozen=True, slots=True)
class ElfFacts:
    machine: str
    has_interp: bool
    needed_count: int
    is_pie: bool


def read_elf_facts(path: Path) -> ElfFacts:
    """Parse the ELF64 little-endian header and program headers of ``path``.

    Raises:
        ValueError: not an ELF64 little-endian file, or truncated.
    """
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not an ELF64 little-endian binary")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    has_interp = False
    needed = 0
    for index in range(e_phnum):
        offset = e_phoff + index * e_phentsize
        if offset + 56 > len(data):
            raise ValueError(f"{path}: truncated program header table")
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, offset
        )
        if p_type == _PT_INTERP:
            has_interp = True
        elif p_type == _PT_DYNAMIC:
            for pos in range(p_offset, p_offset + p_filesz - 15, 16):
                tag, _value = struct.unpack_from("<qQ", data, pos)
                if tag == _DT_NULL:
                    break
                if tag == _DT_NEEDED:
                    needed += 1
    return ElfFacts(
        machine=_MACHINES.get(e_machine, f"machine-{e_machine}"),
        has_interp=has_interp,
        needed_count=needed,
        is_pie=e_type == 3,
    )
