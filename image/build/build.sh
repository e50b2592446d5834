#!/usr/bin/env bash
# Builds the appliance image reproducibly: kernel, initramfs, kernel command line and a
# dm-verity protected SquashFS root, from pinned Debian trixie packages and our binaries.
#
#   image/build/build.sh --profile prod|dev --guest BIN --init BIN --out DIR [--update-lock]
#
# Output (DIR): vmlinuz, initrd.img, rootfs.img (SquashFS + its verity hash tree),
# cmdline (the kernel command line, without a model: `make measure` appends the model
# disk's parameters), image.json (hashes, sizes, verity parameters, package versions).
#
# Reproducible: every input is pinned (package versions in packages.lock, checked on
# every build; our binaries by their SHA-256 in image.json), every timestamp is
# SOURCE_DATE_EPOCH, file order is sorted, owners are root, the verity salt is fixed and
# no superblock/UUID is written. Two builds from the same inputs give the same bytes
# (`make test-image` checks it).
#
# Needs root (mmdebstrap, mknod for /dev/console) and: mmdebstrap, squashfs-tools,
# cryptsetup-bin (veritysetup), cpio, kmod (depmod), xz-utils, gzip.
set -euo pipefail
# File modes must not depend on the caller's umask.
umask 022

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=verity.sh
. "$here/verity.sh"
# Fixed build time of every file in the image (2026-12-01T00:00:00Z).
export SOURCE_DATE_EPOCH=1796083200
# The Debian suite and mirror the image is built from (the host's own apt sources may be
# another release: the build uses only these).
SUITE=trixie
MIRROR=http://deb.debian.org/debian
PACKAGES=linux-image-amd64,libc6,libgcc-s1
LOCK="$here/packages.lock"
# dm-verity salt of the root filesystem: fixed so that the root hash is a function of
# the filesystem's bytes only (SHA-256 of "cocoon rootfs verity salt v1").
ROOT_SALT=$(printf 'cocoon rootfs verity salt v1' | sha256sum | cut -d' ' -f1)
CACHE="${COCOON_IMAGE_CACHE:-$HOME/.cache/cocoon-image}"

profile= guest= init= out= update_lock=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --guest) guest="$2"; shift 2 ;;
    --init) init="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --update-lock) update_lock=1; shift ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$profile" in prod|dev) ;; *) echo "build.sh: --profile must be prod or dev" >&2; exit 2 ;; esac
for f in "$guest" "$init"; do
  [ -x "$f" ] || { echo "build.sh: $f is not an executable (build it first: make build)" >&2; exit 2; }
done
[ -n "$out" ] || { echo "build.sh: --out DIR is required" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "build.sh: must run as root (mmdebstrap, mknod)" >&2; exit 2; }
for tool in mmdebstrap mksquashfs veritysetup cpio depmod xz gzip; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (make image-deps installs it)" >&2; exit 2; }
done

started=$(date +%s)
work="$(mktemp -d /tmp/cocoon-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$CACHE/debs" "$out"

step() { printf '== %s\n' "$*"; }

# 1. The packages: extracted (not installed: no maintainer scripts, no dpkg database),
# with the .deb files kept in a cache outside the clone for the next build.
step "debian $SUITE: $PACKAGES"
mmdebstrap --quiet --variant=extract --include="$PACKAGES" --components=main \
  --skip=cleanup/apt/cache \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives && cp -a '"$CACHE"'/debs/. "$1"/var/cache/apt/archives/' \
  "$SUITE" "$work/deb" "$MIRROR" >"$work/mmdebstrap.log" 2>&1 \
  || { cat "$work/mmdebstrap.log" >&2; echo "build.sh: mmdebstrap failed" >&2; exit 1; }
for d in "$work"/deb/var/cache/apt/archives/*.deb; do
  cp -n "$d" "$CACHE/debs/"
  printf '%s %s %s\n' "$(dpkg-deb -f "$d" Package)" "$(dpkg-deb -f "$d" Version)" "$(sha256sum < "$d" | cut -d' ' -f1)"
done | LC_ALL=C sort > "$work/packages.resolved"
# The lock pins the packages whose files the image contains (their dependencies are
# extracted by apt but not used, so their updates do not change the image).
grep -E '^(linux-image-[0-9][^ ]*-amd64|libc6|libgcc-s1) ' "$work/packages.resolved" > "$work/packages.used"

if [ "$update_lock" = 1 ] || [ ! -f "$LOCK" ]; then
  { echo "# Debian $SUITE packages the image is built from: name version sha256(.deb)."
    echo "# Checked by every build; update deliberately with 'make image-lock' (a new lock"
    echo "# means new measurements: publish a new manifest)."
    cat "$work/packages.used"; } > "$LOCK"
  step "wrote $LOCK"
elif ! diff <(grep -v '^#' "$LOCK") "$work/packages.used" >"$work/lock.diff"; then
  cat "$work/lock.diff" >&2
  echo "build.sh: Debian $SUITE now resolves other packages than $LOCK pins (above: < pinned, > now)." >&2
  echo "build.sh: the image would not reproduce; review and run 'make image-lock' to accept them." >&2
  exit 1
fi

deb="$work/deb"
kver=$(ls "$deb/usr/lib/modules" | head -n1)
[ -n "$kver" ] && [ -f "$deb/boot/vmlinuz-$kver" ] || { echo "build.sh: no kernel in the packages" >&2; exit 1; }
step "kernel $kver"
libdir=usr/lib/x86_64-linux-gnu
libs=(ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libgcc_s.so.1)

# Our binaries may need only the libraries we ship.
for bin in "$guest" "$init"; do
  for needed in $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    printf '%s\n' "${libs[@]}" | grep -qx "$needed" \
      || { echo "build.sh: $bin needs $needed, which the image does not ship" >&2; exit 1; }
  done
done

# Copies the shared libraries into a tree (merged /usr layout, the loader at its ABI path).
install_libs() {
  local root="$1"
  mkdir -p "$root/$libdir" "$root/usr/lib64"
  for l in "${libs[@]}"; do cp -L "$deb/$libdir/$l" "$root/$libdir/$l"; done
  ln -s "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$root/usr/lib64/ld-linux-x86-64.so.2"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  ln -s usr/bin "$root/bin"
}

# Sets every file's time to SOURCE_DATE_EPOCH (links themselves included).
normalise_times() {
  find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# 2. The root filesystem: the guest, its libraries, its flags. No shell, no package
# manager, no login: nothing but what cocoon-guest runs on.
step "root filesystem ($profile)"
root="$work/rootfs"
mkdir -p "$root/usr/bin" "$root/etc/cocoon" "$root"/{dev,proc,sys,tmp,run,models}
install_libs "$root"
install -m 0755 "$guest" "$root/usr/bin/cocoon-guest"
install -m 0644 "$here/guest.$profile.args" "$root/etc/cocoon/guest.args"
install -m 0644 "$LOCK" "$root/etc/cocoon/packages.lock"
cat > "$root/etc/os-release" <<EOF
NAME="Cocoon appliance"
ID=cocoon
VARIANT_ID=$profile
VERSION_ID=debian-$SUITE-$kver
EOF
chmod 0644 "$root/etc/os-release"
chmod 1777 "$root/tmp"
normalise_times "$root"
# mksquashfs takes every time stamp (files and the filesystem) from SOURCE_DATE_EPOCH.
mksquashfs "$root" "$work/rootfs.img" -quiet -noappend -comp zstd -all-root -no-xattrs \
  -processors 2 >/dev/null
read -r root_hash data_blocks < <(verity_format "$work/rootfs.img" "$ROOT_SALT")
[ -n "$data_blocks" ] || exit 1

# 3. The initramfs: cocoon-init, its libraries, the decompressed modules in load order.
step "initramfs"
initrd="$work/initramfs"
mkdir -p "$initrd"/{dev,proc,sys,sysroot,etc/cocoon-init}
install_libs "$initrd"
install -m 0755 "$init" "$initrd/init"
mknod -m 0600 "$initrd/dev/console" c 5 1
ln -s usr/lib "$deb/lib" 2>/dev/null || true
depmod -b "$deb" "$kver"
moddir="usr/lib/modules/$kver"
order=()
add_module() { # appends a module file and, before it, its dependencies (once each)
  local file="$1" dep
  for dep in $(sed -n "s|^$file:||p" "$deb/$moddir/modules.dep"); do add_module "$dep"; done
  printf '%s\n' "${order[@]}" | grep -qx "$file" || order+=("$file")
}
: > "$initrd/etc/cocoon-init/modules"
while read -r name; do
  case "$name" in ''|'#'*) continue ;; esac
  optional=; [ "${name#\?}" != "$name" ] && optional='?' && name="${name#\?}"
  pattern="${name//_/[-_]}"
  file=$(grep -oE "^kernel/[^:]*/${pattern}\.ko\.xz:" "$deb/$moddir/modules.dep" | tr -d : || true)
  [ -n "$file" ] || { echo "build.sh: module $name is not in kernel $kver" >&2; exit 1; }
  before=${#order[@]}
  add_module "$file"
  for f in "${order[@]:$before}"; do
    mkdir -p "$initrd/$moddir/$(dirname "$f")"
    xz -dc "$deb/$moddir/$f" > "$initrd/$moddir/${f%.xz}"
    # Dependencies of an optional module are loaded as optional too.
    echo "${optional}/$moddir/${f%.xz}" >> "$initrd/etc/cocoon-init/modules"
  done
done < "$here/modules.list"
normalise_times "$initrd"
(cd "$initrd" && find . -mindepth 1 | LC_ALL=C sort \
  | cpio --quiet -o -H newc --reproducible -R 0:0) | gzip -n -9 > "$work/initrd.img"

# 4. The kernel command line (measured: RTMR2 on TDX, the kernel-hashes table on SNP).
cmdline="console=ttyS0 panic=-1 ro cocoon.root=$root_hash,$ROOT_SALT,$data_blocks,$data_blocks"

install -m 0644 "$deb/boot/vmlinuz-$kver" "$out/vmlinuz"
install -m 0644 "$work/initrd.img" "$out/initrd.img"
install -m 0644 "$work/rootfs.img" "$out/rootfs.img"
printf '%s\n' "$cmdline" > "$out/cmdline"
sha() { sha256sum "$1" | cut -d' ' -f1; }
cat > "$out/image.json" <<EOF
{
  "profile": "$profile",
  "suite": "$SUITE",
  "kernel": "$kver",
  "source_date_epoch": $SOURCE_DATE_EPOCH,
  "cmdline": "$cmdline",
  "rootfs_verity": {"root_hash": "$root_hash", "salt": "$ROOT_SALT", "data_blocks": $data_blocks, "hash_start_block": $data_blocks},
  "sha256": {
    "vmlinuz": "$(sha "$out/vmlinuz")",
    "initrd.img": "$(sha "$out/initrd.img")",
    "rootfs.img": "$(sha "$out/rootfs.img")",
    "cocoon-guest": "$(sha "$guest")",
    "cocoon-init": "$(sha "$init")",
    "packages.lock": "$(sha "$LOCK")"
  },
  "bytes": {"vmlinuz": $(stat -c %s "$out/vmlinuz"), "initrd.img": $(stat -c %s "$out/initrd.img"), "rootfs.img": $(stat -c %s "$out/rootfs.img")}
}
EOF
step "done in $(( $(date +%s) - started )) s: $out (rootfs root hash $root_hash)"
