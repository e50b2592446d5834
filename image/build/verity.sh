# Sourced by the image scripts: dm-verity without a superblock, every parameter fixed.
#
# verity_format FILE SALT: appends the SHA-256 hash tree (4096-byte blocks) to FILE, whose
# size must be a multiple of 4096, and prints "ROOT_HASH DATA_BLOCKS": the hash tree starts
# at block DATA_BLOCKS of the same file.
verity_format() {
  local file="$1" salt="$2" size blocks root
  size=$(stat -c %s "$file")
  [ $((size % 4096)) = 0 ] || { echo "verity_format: $file is not 4 KiB aligned" >&2; return 1; }
  blocks=$((size / 4096))
  root=$(veritysetup format --no-superblock --salt "$salt" --hash sha256 \
      --data-block-size 4096 --hash-block-size 4096 --data-blocks "$blocks" \
      --hash-offset "$size" "$file" "$file" \
    | sed -n 's/^Root hash:[[:space:]]*//p')
  [ ${#root} = 64 ] || { echo "verity_format: veritysetup gave no root hash for $file" >&2; return 1; }
  echo "$root $blocks"
}
