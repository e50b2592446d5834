#!/usr/bin/env bash
# Packs a model (a GGUF file, or a directory such as a Hugging Face model) into a
# read-only SquashFS disk with a dm-verity hash tree appended, deterministically.
#
#   image/build/model-disk.sh --model PATH --out DIR
#
# Output (DIR): model.img (the disk), model.json (root hash, verity parameters, and the
# kernel command line fragment `cocoon.model=... cocoon.model_path=...` that
# `make measure` appends to the image's command line). The guest opens the disk with
# exactly that root hash (cocoon-init) and refuses to start if the model is not on such
# a device (cocoon-guest --model-verity-root); every block read is checked, so a
# corrupted disk fails the read. Data is stored uncompressed so the engine reads it in
# place. Needs squashfs-tools and cryptsetup-bin (veritysetup).
set -euo pipefail
# File modes must not depend on the caller's umask.
umask 022
export SOURCE_DATE_EPOCH=1796083200
# shellcheck source=verity.sh
. "$(dirname "$0")/verity.sh"
# Fixed salt (SHA-256 of "cocoon model verity salt v1"): the root hash depends on the
# model's bytes, names and layout only.
SALT=$(printf 'cocoon model verity salt v1' | sha256sum | cut -d' ' -f1)

model= out=
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "model-disk.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -e "$model" ] || { echo "model-disk.sh: --model $model does not exist" >&2; exit 2; }
[ -n "$out" ] || { echo "model-disk.sh: --out DIR is required" >&2; exit 2; }
name=$(basename "$model")
case "$name" in *[!A-Za-z0-9._+-]*|.*) echo "model-disk.sh: model name '$name' must be [A-Za-z0-9._+-] and not start with a dot" >&2; exit 2 ;; esac

work="$(mktemp -d /tmp/cocoon-model.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/fs" "$out"
cp -rL "$model" "$work/fs/$name"
find "$work/fs" -type d -exec chmod 0755 {} + ; find "$work/fs" -type f -exec chmod 0444 {} +
find "$work/fs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mksquashfs "$work/fs" "$work/model.img" -quiet -noappend -all-root -no-xattrs \
  -noD -noF -no-fragments -processors 2 >/dev/null
read -r root blocks < <(verity_format "$work/model.img" "$SALT")
[ -n "$blocks" ] || exit 1
install -m 0644 "$work/model.img" "$out/model.img"
fragment="cocoon.model=$root,$SALT,$blocks,$blocks cocoon.model_path=$name"
cat > "$out/model.json" <<JSON
{
  "model_path": "$name",
  "verity": {"root_hash": "$root", "salt": "$SALT", "data_blocks": $blocks, "hash_start_block": $blocks},
  "cmdline": "$fragment",
  "sha256": "$(sha256sum "$out/model.img" | cut -d' ' -f1)",
  "bytes": $(stat -c %s "$out/model.img")
}
JSON
printf '%s\n' "$fragment" > "$out/cmdline"
echo "model disk: $out/model.img (root hash $root)"
