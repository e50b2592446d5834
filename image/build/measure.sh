#!/usr/bin/env bash
# Writes the reference values of one deployment (an image + a model disk) as an unsigned
# manifest, for `cocoon-verify manifest sign`.
#
#   image/build/measure.sh --image DIR --model-disk DIR --model FILE --guest BIN
#       --measure BIN --firmware-dir DIR --out FILE [--deploy DIR] [--release N] [--not-after RFC3339]
#       [--snp-vcpus 1,2,4] [--snp-vcpu-types EPYC-v4,EPYC-Milan,EPYC-Genoa] [--tdx-rtmr0 HEX]
#
# - The deployment directory (--deploy, default DIR/deploy) gets the kernel, the initrd
#   and the deployed command line (the image's plus the model disk's `cocoon.model=...`):
#   what the launcher boots and measures; and measured-config.json, the guest's config.
# - The config digest: `cocoon-guest measured-config` with the image's flags
#   (image/build/guest.PROFILE.args, read from the built image's profile) and the model.
# - SEV-SNP: one launch digest per vCPU count and type, for the AmdSev OVMF.
# - TDX: only with --tdx-rtmr0 (RTMR0 is not predicted; see image/README.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
release=1 not_after= snp_vcpus=1,2,4,8,16,32 snp_types=EPYC-v4,EPYC-Milan,EPYC-Genoa tdx_rtmr0=
image= model_disk= model= guest= measure= firmware_dir= out= deploy=
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image="$2"; shift 2 ;;
    --model-disk) model_disk="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --guest) guest="$2"; shift 2 ;;
    --measure) measure="$2"; shift 2 ;;
    --firmware-dir) firmware_dir="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --deploy) deploy="$2"; shift 2 ;;
    --release) release="$2"; shift 2 ;;
    --not-after) not_after="$2"; shift 2 ;;
    --snp-vcpus) snp_vcpus="$2"; shift 2 ;;
    --snp-vcpu-types) snp_types="$2"; shift 2 ;;
    --tdx-rtmr0) tdx_rtmr0="$2"; shift 2 ;;
    *) echo "measure.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for f in "$image/vmlinuz" "$image/initrd.img" "$image/cmdline" "$image/image.json" \
         "$model_disk/model.json" "$model_disk/cmdline" "$model"; do
  [ -e "$f" ] || { echo "measure.sh: $f is missing (make image, make model-disk)" >&2; exit 2; }
done
[ -n "$not_after" ] || not_after=$(date -u -d '+180 days' +%Y-%m-%dT00:00:00Z)
profile=$(sed -n 's/.*"profile": "\([a-z]*\)".*/\1/p' "$image/image.json")
amdsev=$(ls "$firmware_dir"/*/OVMF.amdsev.fd 2>/dev/null | sort | tail -n1)
[ -n "$amdsev" ] || { echo "measure.sh: no OVMF.amdsev.fd under $firmware_dir (make firmware)" >&2; exit 2; }

[ -n "$deploy" ] || deploy="$image/deploy"
mkdir -p "$deploy"
cp -f "$image/vmlinuz" "$image/initrd.img" "$deploy/"
printf '%s %s\n' "$(cat "$image/cmdline")" "$(cat "$model_disk/cmdline")" > "$deploy/cmdline"

root=$(sed -n 's/.*"root_hash": "\([0-9a-f]*\)".*/\1/p' "$model_disk/model.json")
mapfile -t flags < <(grep -v -e '^#' -e '^[[:space:]]*$' "$here/guest.$profile.args")
[ "${flags[0]}" = serve ] || { echo "measure.sh: guest.$profile.args must start with serve" >&2; exit 1; }
# stdout: the digest; stderr: the canonical config (or why there is none).
config=$("$guest" measured-config "${flags[@]:1}" --model "$model" --model-verity-root "$root" \
  2>"$deploy/measured-config.json") \
  || { cat "$deploy/measured-config.json" >&2; echo "measure.sh: cocoon-guest measured-config failed" >&2; exit 1; }

tdx=()
if [ -n "$tdx_rtmr0" ]; then
  tdvf=$(ls "$firmware_dir"/*/OVMF.inteltdx.fd | sort | tail -n1)
  tdx=(--tdx-firmware "$tdvf" --tdx-rtmr0 "$tdx_rtmr0")
fi
"$measure" manifest --image-dir "$deploy" --snp-ovmf "$amdsev" --snp-vcpus "$snp_vcpus" \
  --snp-vcpu-type "$snp_types" "${tdx[@]}" --config-digest "$config" \
  --image "cocoon $profile image $(sed -n 's/.*"rootfs.img": "\([0-9a-f]\{12\}\).*/\1/p' "$image/image.json")" \
  --release "$release" --not-after "$not_after" -o "$out"
echo "manifest: $out (config digest $config; firmware $amdsev)"
echo "sign it: cocoon-verify manifest sign --key KEY.pem --out ${out%.json}.dsse.json $out"
