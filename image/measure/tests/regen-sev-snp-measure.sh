#!/bin/sh
# Regenerates tests/fixtures/sev_snp_measure.json: SEV-SNP launch digests computed by the
# independent Python tool sev-snp-measure (virtee, PyPI) for Debian's OVMF.fd, which the
# Rust test `snp_cross_check` compares cocoon-measure against.
#
# Needs: Debian's `ovmf` package (/usr/share/ovmf/OVMF.fd), python3, and a venv with
#   python3 -m venv /work/venv-measure && /work/venv-measure/bin/pip install sev-snp-measure==0.0.12
# Usage: tests/regen-sev-snp-measure.sh [VENV]   (run from image/measure)
set -eu
VENV=${1:-/work/venv-measure}
TOOL="$VENV/bin/sev-snp-measure"
OVMF=${OVMF:-/usr/share/ovmf/OVMF.fd}
OUT=tests/fixtures/sev_snp_measure.json
version=$("$VENV/bin/pip" show sev-snp-measure | sed -n 's/^Version: //p')
pkg=$(dpkg-query -W -f '${Version}' ovmf)
sha=$(sha256sum "$OVMF" | cut -d' ' -f1)
{
  printf '{\n  "tool": "sev-snp-measure %s (PyPI)",\n' "$version"
  printf '  "ovmf": {"path": "%s", "sha256": "%s", "debian_package": "ovmf %s"},\n' "$OVMF" "$sha" "$pkg"
  printf '  "cases": [\n'
  first=1
  for type in EPYC-v4 EPYC-Milan EPYC-Genoa; do
    for vcpus in 1 2 4 16; do
      cmd="sev-snp-measure --mode snp --vcpus $vcpus --vcpu-type $type --vmm-type QEMU --ovmf $OVMF --output-format hex"
      digest=$("$TOOL" --mode snp --vcpus "$vcpus" --vcpu-type "$type" --vmm-type QEMU \
        --ovmf "$OVMF" --output-format hex)
      [ $first = 1 ] || printf ',\n'
      first=0
      printf '    {"vcpus": %s, "vcpu_type": "%s", "command": "%s", "measurement": "%s"}' \
        "$vcpus" "$type" "$cmd" "$digest"
    done
  done
  printf '\n  ]\n}\n'
} > "$OUT"
echo "wrote $OUT"
