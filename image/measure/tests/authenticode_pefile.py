#!/usr/bin/env python3
"""Independent Authenticode digest (SHA-256 and SHA-384) of a PE/COFF file, written
from the PE/COFF specification with `pefile` for parsing and hashlib for hashing, to
cross-check cocoon-measure's Rust implementation. Usage: authenticode_pefile.py FILE..."""
import hashlib
import sys

import pefile


def authenticode(path, algorithm):
    data = open(path, "rb").read()
    pe = pefile.PE(data=data, fast_load=True)
    opt = pe.OPTIONAL_HEADER
    checksum_at = opt.get_field_absolute_offset("CheckSum")
    security = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]
    h = hashlib.new(algorithm)
    h.update(data[:checksum_at])
    if opt.NumberOfRvaAndSizes > security:
        cert_dir = opt.DATA_DIRECTORY[security]
        cert_dir_at = cert_dir.get_file_offset()
        h.update(data[checksum_at + 4:cert_dir_at])
        h.update(data[cert_dir_at + 8:opt.SizeOfHeaders])
        cert_size = cert_dir.Size
    else:
        h.update(data[checksum_at + 4:opt.SizeOfHeaders])
        cert_size = 0
    hashed = opt.SizeOfHeaders
    for s in sorted((s for s in pe.sections if s.SizeOfRawData), key=lambda s: s.PointerToRawData):
        h.update(data[s.PointerToRawData:s.PointerToRawData + s.SizeOfRawData])
        hashed += s.SizeOfRawData
    if len(data) > hashed + cert_size:
        h.update(data[hashed:len(data) - cert_size])
    return h.hexdigest()


for path in sys.argv[1:]:
    print(path, "sha256", authenticode(path, "sha256"))
    print(path, "sha384", authenticode(path, "sha384"))
