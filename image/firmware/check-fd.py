#!/usr/bin/env python3
"""Check that an OVMF image carries the confidential-computing metadata QEMU and the TEE need.

usage: check-fd.py FILE amdsev|inteltdx

Reads the OVMF GUIDed table that the reset vector puts at the end of the flash (the footer
GUID 96b582de-1fb2-45f7-baea-a366c55a082d ends 32 bytes before the end of the image; entries
run backwards from it, each as data, UINT16 length, GUID), the way QEMU's
pc_system_ovmf_table_find() walks it, then:
  amdsev:   the SEV metadata ("ASEV", its sections must include the SNP kernel-hashes page),
            the SEV hash table entry (SEV_HASH_TABLE_RV_GUID 7255371f-3a3b-4b04-927b-1da6efa8d454),
            the SEV secret block and the SEV-ES reset block;
  inteltdx: the TDVF metadata (table GUID e47a6535-984a-4798-865e-4685a7bf8ec2 gives the offset
            of the "TDVF" descriptor, which follows TDX_METADATA_GUID
            e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae; BFV/CFV/TD_HOB/TempMem sections).
Prints what it found; exits non-zero when something is missing.
"""
import struct
import sys
import uuid

FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
SEV_METADATA = uuid.UUID("dc886566-984a-4798-a75e-5585a7bf67cc")
SEV_HASH_TABLE_RV = uuid.UUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
SEV_SECRET_BLOCK = uuid.UUID("4c2eb361-7d9b-4cc3-8081-127c90d3d294")
SEV_ES_RESET_BLOCK = uuid.UUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
TDX_METADATA = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2")  # table entry: offset of the descriptor
TDVF_DESCRIPTOR = uuid.UUID("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae")  # TDX_METADATA_GUID, just before it

SEV_SECTION_TYPES = {1: "MEM", 2: "SECRETS", 3: "CPUID", 4: "SVSM_CAA", 0x10: "KERNEL_HASHES"}
TDX_SECTION_TYPES = {0: "BFV", 1: "CFV", 2: "TD_HOB", 3: "TempMem", 4: "PermMem", 5: "Payload", 6: "PayloadParam"}


def fail(msg):
    print(f"check-fd: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def guid_table(fd):
    end = len(fd) - 32
    if uuid.UUID(bytes_le=fd[end - 16:end]) != FOOTER:
        fail("no OVMF GUIDed table footer 32 bytes before the end of the image")
    ptr = end - 16
    (total,) = struct.unpack_from("<H", fd, ptr - 2)
    ptr -= 2
    left = total - 18
    entries = {}
    while left >= 18:
        guid = uuid.UUID(bytes_le=fd[ptr - 16:ptr])
        (length,) = struct.unpack_from("<H", fd, ptr - 18)
        if length < 18 or length > left:
            fail(f"bad GUIDed table entry {guid} length {length}")
        entries[guid] = fd[ptr - length:ptr - 18]
        ptr -= length
        left -= length
    return entries


def check_amdsev(fd, table):
    for g, name in [(SEV_METADATA, "SEV metadata"), (SEV_HASH_TABLE_RV, "SEV_HASH_TABLE_RV_GUID"),
                    (SEV_SECRET_BLOCK, "SEV secret block"), (SEV_ES_RESET_BLOCK, "SEV-ES reset block")]:
        if g not in table:
            fail(f"{name} ({g}) not in the OVMF GUIDed table")
    base, size = struct.unpack_from("<II", table[SEV_HASH_TABLE_RV])
    print(f"  SEV_HASH_TABLE_RV_GUID {SEV_HASH_TABLE_RV}: kernel-hashes table at 0x{base:x}, {size} bytes")
    if size == 0:
        fail("the kernel-hashes table has size 0")
    (off,) = struct.unpack_from("<I", table[SEV_METADATA])
    meta = len(fd) - off
    sig, length, version, n = struct.unpack_from("<4sIII", fd, meta)
    if sig != b"ASEV":
        fail(f"SEV metadata signature is {sig!r}, not 'ASEV'")
    sections = []
    for i in range(n):
        b, l, t = struct.unpack_from("<III", fd, meta + 16 + 12 * i)
        sections.append((SEV_SECTION_TYPES.get(t, hex(t)), b, l))
    print(f"  SEV metadata {SEV_METADATA}: 'ASEV' v{version}, {n} sections: "
          + ", ".join(f"{t}@0x{b:x}+0x{l:x}" for t, b, l in sections))
    hashes = [s for s in sections if s[0] == "KERNEL_HASHES"]
    if not hashes:
        fail("no KERNEL_HASHES section in the SEV metadata (SNP would not accept kernel-hashes=on)")
    if not any(b <= base < b + l for _, b, l in hashes):
        fail("the kernel-hashes table lies outside the KERNEL_HASHES section")


def check_inteltdx(fd, table):
    if TDX_METADATA not in table:
        fail(f"TDVF metadata GUID {TDX_METADATA} not in the OVMF GUIDed table")
    (off,) = struct.unpack_from("<I", table[TDX_METADATA])
    meta = len(fd) - off
    # The TDVF spec puts TDX_METADATA_GUID right before the descriptor.
    if uuid.UUID(bytes_le=fd[meta - 16:meta]) != TDVF_DESCRIPTOR:
        fail(f"the TDVF descriptor is not preceded by {TDVF_DESCRIPTOR}")
    sig, length, version, n = struct.unpack_from("<4sIII", fd, meta)
    if sig != b"TDVF":
        fail(f"TDVF descriptor signature is {sig!r}, not 'TDVF'")
    sections = []
    for i in range(n):
        doff, rsize, addr, msize, t, attr = struct.unpack_from("<IIQQII", fd, meta + 16 + 32 * i)
        sections.append((TDX_SECTION_TYPES.get(t, hex(t)), addr, msize, attr))
    print(f"  TDVF metadata {TDX_METADATA} -> {TDVF_DESCRIPTOR} 'TDVF' v{version}, {n} sections: "
          + ", ".join(f"{t}@0x{a:x}+0x{s:x}" + (f"(attr {at:#x})" if at else "") for t, a, s, at in sections))
    kinds = {s[0] for s in sections}
    for need in ("BFV", "CFV", "TD_HOB", "TempMem"):
        if need not in kinds:
            fail(f"no {need} section in the TDVF metadata")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("amdsev", "inteltdx"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    fd = open(sys.argv[1], "rb").read()
    table = guid_table(fd)
    print(f"check-fd: {sys.argv[1]} ({len(fd)} bytes), OVMF GUIDed table: "
          + ", ".join(str(g) for g in table))
    (check_amdsev if sys.argv[2] == "amdsev" else check_inteltdx)(fd, table)
    print(f"check-fd: {sys.argv[2]} OK")


if __name__ == "__main__":
    main()
