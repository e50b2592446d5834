#!/usr/bin/env bash
# Build cocoon's confidential-VM firmware from Debian's edk2 source package, reproducibly.
#
#   OVMF.amdsev.fd    OvmfPkg/AmdSev/AmdSevX64.dsc     SEV-SNP, kernel-hashes table (QEMU -bios, kernel-hashes=on)
#   OVMF.inteltdx.fd  OvmfPkg/IntelTdx/IntelTdxX64.dsc TDVF for TDX
#
# The source package (version and SHA-256 of every file) is pinned in edk2.lock beside this
# script. Outputs, the downloads and the unpacked source live in
#   ${COCOON_FIRMWARE_DIR:-$HOME/.cache/cocoon-firmware}/<debian-version>/
# With that directory present, a run only checks the outputs against SHA256SUMS (written at
# build time) and prints where they are. See README.md beside this script.
#
# Usage: build.sh [--rebuild] [--no-install]
#   --rebuild     build again even if the cache is complete (the old outputs are replaced only
#                 when the new build succeeds)
#   --no-install  never call apt-get; fail if a build dependency is missing
# Environment:
#   COCOON_FIRMWARE_DIR         cache root (default $HOME/.cache/cocoon-firmware)
#   COCOON_FIRMWARE_BUILD_PATH  fixed build directory (default /var/tmp/cocoon-firmware-build);
#                               the outputs depend on its length, so keep it fixed
#   COCOON_FIRMWARE_JOBS        parallel jobs (default 2)
#   COCOON_FIRMWARE_MIRROR      Debian mirror (default http://deb.debian.org/debian)
#   COCOON_FIRMWARE_REQUIRE_DSC=1  fail instead of falling back when the .dsc cannot be downloaded
#   COCOON_FIRMWARE_KEEP_BUILD=1   keep the build tree (~1 GB) in the build path after success
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
say() { printf 'firmware: %s\n' "$*" >&2; }
die() { printf 'firmware: error: %s\n' "$*" >&2; exit 1; }

rebuild=0
install=1
for arg in "$@"; do
    case $arg in
        --rebuild) rebuild=1 ;;
        --no-install) install=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

# shellcheck source=edk2.lock
. "$here/edk2.lock"
: "${EDK2_DEB_VERSION:?} ${EDK2_DSC_SHA256:?} ${EDK2_ORIG_SHA256:?} ${EDK2_DEBIAN_SHA256:?}"

cache_root=${COCOON_FIRMWARE_DIR:-$HOME/.cache/cocoon-firmware}
out=$cache_root/$EDK2_DEB_VERSION
build_root=${COCOON_FIRMWARE_BUILD_PATH:-/var/tmp/cocoon-firmware-build}
jobs=${COCOON_FIRMWARE_JOBS:-2}
mirror=${COCOON_FIRMWARE_MIRROR:-http://deb.debian.org/debian}

# name:dsc-path:output-file
platforms=(
    "amdsev:OvmfPkg/AmdSev/AmdSevX64.dsc:OVMF.amdsev.fd:AmdSev"
    "inteltdx:OvmfPkg/IntelTdx/IntelTdxX64.dsc:OVMF.inteltdx.fd:IntelTdx"
)

# What decides the outputs besides the toolchain: the pins and the local patches.
recipe=$(cd "$here" && sha256sum edk2.lock patches/*.patch | sha256sum | cut -d' ' -f1)

# ---------------------------------------------------------------- cache hit: verify only
if [[ $rebuild == 0 && -f $out/SHA256SUMS && -f $out/RECIPE && $(<"$out/RECIPE") != "$recipe" ]]; then
    say "the cache in $out was built from other pins or patches (RECIPE differs); rebuilding"
    rebuild=1
fi
if [[ $rebuild == 0 && -f $out/SHA256SUMS && -f $out/firmware.json ]]; then
    if (cd "$out" && sha256sum --quiet --strict -c SHA256SUMS); then
        say "cached, SHA-256 verified against $out/SHA256SUMS (edk2 $EDK2_DEB_VERSION):"
        while read -r sum file; do printf '  %s  %s\n' "$sum" "$out/${file#\*}"; done < "$out/SHA256SUMS"
        exit 0
    fi
    die "the cached firmware in $out does not match its SHA256SUMS record; something changed it. Inspect it, then rerun with --rebuild (or remove $out)."
fi

# ---------------------------------------------------------------- build dependencies
# command-or-file : Debian package (bookworm)
deps=(
    "gcc:build-essential" "make:build-essential" "g++:build-essential"
    "nasm:nasm" "iasl:acpica-tools" "/usr/include/uuid/uuid.h:uuid-dev"
    "python3:python3" "dpkg-source:dpkg-dev" "dpkg-parsechangelog:dpkg-dev"
    "curl:curl" "xz:xz-utils" "patch:patch" "flock:util-linux" "sha256sum:coreutils"
)
missing=()
for d in "${deps[@]}"; do
    what=${d%%:*} pkg=${d#*:}
    if [[ $what == /* ]]; then [[ -e $what ]] && continue
    else command -v "$what" >/dev/null 2>&1 && continue; fi
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [[ $install == 1 ]] || die "missing build dependencies: ${missing[*]} (apt-get install ${missing[*]})"
    apt=(apt-get)
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing build dependencies: ${missing[*]}; run as root or install them: apt-get install ${missing[*]}"
        apt=(sudo apt-get)
    fi
    say "installing build dependencies: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- fetch + verify the source package
mkdir -p "$out/downloads"
# Serialise builds: the fixed build path is shared by every cache directory.
mkdir -p "$build_root"
exec 9>"$build_root/.lock"
flock -n 9 || { say "another firmware build is running; waiting for it"; flock 9; }

fetch() { # file sha256 [optional]
    local file=$1 sum=$2 optional=${3:-} dest=$out/downloads/$1
    if [[ -f $dest ]] && echo "$sum  $dest" | sha256sum --quiet --strict -c - 2>/dev/null; then
        return 0
    fi
    local url=$mirror/$EDK2_DEB_POOL/${file//+/%2B}
    say "downloading $url"
    local err
    if ! err=$(curl -fsSL --retry 3 -o "$dest.part" "$url" 2>&1); then
        rm -f "$dest.part"
        [[ -n $optional ]] && { say "not available: $err"; return 1; }
        die "could not download $url: $err"
    fi
    echo "$sum  $dest.part" | sha256sum --quiet --strict -c - 2>/dev/null ||
        die "SHA-256 mismatch for $file: expected $sum, got $(sha256sum < "$dest.part" | cut -d' ' -f1); refusing to use it"
    mv "$dest.part" "$dest"
}
fetch "$EDK2_ORIG" "$EDK2_ORIG_SHA256"
fetch "$EDK2_DEBIAN" "$EDK2_DEBIAN_SHA256"
dsc=$out/downloads/$EDK2_DSC
dsc_origin=debian
if ! fetch "$EDK2_DSC" "$EDK2_DSC_SHA256" optional; then
    # Some networks (this project's registry proxy among them) serve the tarballs but not the
    # .dsc. Its only job for dpkg-source is to name the tarballs and their checksums, which
    # edk2.lock pins (from the same signed index), so write an equivalent unsigned one.
    [[ ${COCOON_FIRMWARE_REQUIRE_DSC:-0} == 1 ]] && die "the .dsc could not be downloaded and COCOON_FIRMWARE_REQUIRE_DSC=1"
    say "warning: $EDK2_DSC is not downloadable here; writing a local .dsc from the pinned tarball checksums (the tarballs themselves are verified)"
    dsc=$out/downloads/local-$EDK2_DSC
    dsc_origin=local
    cat > "$dsc" <<EOF
Format: 3.0 (quilt)
Source: edk2
Version: $EDK2_DEB_VERSION
Checksums-Sha256:
 $EDK2_ORIG_SHA256 $EDK2_ORIG_SIZE $EDK2_ORIG
 $EDK2_DEBIAN_SHA256 $EDK2_DEBIAN_SIZE $EDK2_DEBIAN
Files:
 $(md5sum < "$out/downloads/$EDK2_ORIG" | cut -d' ' -f1) $EDK2_ORIG_SIZE $EDK2_ORIG
 $(md5sum < "$out/downloads/$EDK2_DEBIAN" | cut -d' ' -f1) $EDK2_DEBIAN_SIZE $EDK2_DEBIAN
EOF
fi

# ---------------------------------------------------------------- unpack (Debian's patches applied by dpkg-source)
# Unpacked afresh for every build, from the verified tarballs, so nothing left in the cache
# between builds can slip into the firmware.
src=$out/src
say "unpacking edk2 $EDK2_DEB_VERSION into $src with dpkg-source (applies debian/patches)"
rm -rf "$src"
(cd "$out/downloads" && dpkg-source --no-copy -x "$dsc" "$src" >/dev/null)
# The platforms need these git submodules of edk2; Debian's orig tarball carries them.
for sub in CryptoPkg/Library/OpensslLib/openssl MdeModulePkg/Library/BrotliCustomDecompressLib/brotli \
           MdePkg/Library/BaseFdtLib/libfdt MdePkg/Library/MipiSysTLib/mipisyst \
           CryptoPkg/Library/MbedTlsLib/mbedtls SecurityPkg/DeviceSecurity/SpdmLib/libspdm; do
    [[ -n $(ls -A "$src/$sub" 2>/dev/null) ]] || die "the source package lacks the submodule $sub"
done

# ---------------------------------------------------------------- build in a fixed path
ws=$build_root/edk2
say "preparing the workspace $ws"
rm -rf "$ws"
mkdir -p "$build_root"
cp -a "$src" "$ws"
for p in "$here"/patches/*.patch; do
    say "applying $(basename "$p")"
    patch -d "$ws" -p1 --quiet --no-backup-if-mismatch < "$p"
done

export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$ws/debian/changelog" -STimestamp)
export TZ=UTC LC_ALL=C.UTF-8 LANG=C.UTF-8 PYTHONHASHSEED=0
umask 022
unset WORKSPACE EDK_TOOLS_PATH CONF_PATH PACKAGES_PATH ELF_PACKAGE_METADATA
gcc_v=$(gcc -dumpfullversion)
nasm_v=$(nasm -v | awk '{print $3}')
iasl_v=$(iasl -v 2>/dev/null | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -1)
ld_v=$(ld --version | sed -n '1s/.* //p')
say "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH gcc $gcc_v, nasm $nasm_v, iasl $iasl_v, $jobs jobs"

cd "$ws"
set +u
set --   # edksetup.sh reads "$@" as its own options
# shellcheck disable=SC1091
. ./edksetup.sh >"$build_root/edksetup.log" 2>&1 || die "edksetup.sh failed (log: $build_root/edksetup.log)"
set -u
t0=$(date +%s)
say "building BaseTools"
make -C BaseTools -j"$jobs" >"$build_root/basetools.log" 2>&1 || { tail -40 "$build_root/basetools.log" >&2; die "BaseTools failed (log: $build_root/basetools.log)"; }
t_tools=$(( $(date +%s) - t0 ))
say "BaseTools built in ${t_tools}s"

stage=$out/.staging
rm -rf "$stage"; mkdir -p "$stage"
declare -A secs
for p in "${platforms[@]}"; do
    IFS=: read -r name dscpath file outdir <<<"$p"
    log=$build_root/$name.log
    say "building $dscpath (log: $log)"
    t=$(date +%s)
    build -a X64 -t GCC5 -b RELEASE -n "$jobs" -p "$dscpath" -DBUILD_SHELL=FALSE >"$log" 2>&1 ||
        { tail -40 "$log" >&2; die "$dscpath failed (log: $log)"; }
    secs[$name]=$(( $(date +%s) - t ))
    cp "Build/$outdir/RELEASE_GCC5/FV/OVMF.fd" "$stage/$file"
    say "$file built in ${secs[$name]}s"
done
total=$(( $(date +%s) - t0 ))

# ---------------------------------------------------------------- check the outputs carry their metadata
python3 "$here/check-fd.py" "$stage/OVMF.amdsev.fd" amdsev
python3 "$here/check-fd.py" "$stage/OVMF.inteltdx.fd" inteltdx

# ---------------------------------------------------------------- record and install into the cache
dsc_sha=$(sha256sum < "$dsc" | cut -d' ' -f1)
python3 - "$stage" <<EOF
import json, os, sys, hashlib
stage = sys.argv[1]
outs = {}
for f in ("OVMF.amdsev.fd", "OVMF.inteltdx.fd"):
    data = open(os.path.join(stage, f), "rb").read()
    outs[f] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
doc = {
    "source": {
        "package": "edk2", "version": "$EDK2_DEB_VERSION", "distribution": "debian trixie",
        "dsc": "$EDK2_DSC", "dsc_sha256": "$EDK2_DSC_SHA256",
        "dsc_used": "$dsc_origin" + ("" if "$dsc_origin" == "debian" else " (written from edk2.lock; sha256 $dsc_sha)"),
        "orig_sha256": "$EDK2_ORIG_SHA256", "debian_tar_sha256": "$EDK2_DEBIAN_SHA256",
        "local_patches": sorted(os.path.basename(p) for p in os.listdir("$here/patches") if p.endswith(".patch")),
    },
    "platforms": {"OVMF.amdsev.fd": "OvmfPkg/AmdSev/AmdSevX64.dsc", "OVMF.inteltdx.fd": "OvmfPkg/IntelTdx/IntelTdxX64.dsc"},
    "build": {
        "target": "RELEASE", "toolchain_tag": "GCC5", "defines": ["BUILD_SHELL=FALSE"],
        "source_date_epoch": $SOURCE_DATE_EPOCH, "build_path": "$ws", "jobs": $jobs,
        "host": "$(. /etc/os-release && echo "$PRETTY_NAME")",
        "toolchain": {"gcc": "$gcc_v", "nasm": "$nasm_v", "iasl": "$iasl_v", "binutils": "$ld_v",
                      "python3": "$(python3 -c 'import platform; print(platform.python_version())')"},
        "seconds": {"basetools": $t_tools, "amdsev": ${secs[amdsev]}, "inteltdx": ${secs[inteltdx]}, "total": $total},
    },
    "outputs": outs,
}
json.dump(doc, open(os.path.join(stage, "firmware.json"), "w"), indent=2)
open(os.path.join(stage, "firmware.json"), "a").write("\n")
EOF
(cd "$stage" && sha256sum OVMF.amdsev.fd OVMF.inteltdx.fd firmware.json > SHA256SUMS)
echo "$recipe" > "$stage/RECIPE"
rm -f "$out/SHA256SUMS"
for f in OVMF.amdsev.fd OVMF.inteltdx.fd firmware.json RECIPE; do mv -f "$stage/$f" "$out/$f"; done
mv -f "$stage/SHA256SUMS" "$out/SHA256SUMS"   # last: its presence marks a complete cache
rmdir "$stage"
if [[ ${COCOON_FIRMWARE_KEEP_BUILD:-0} != 1 ]]; then
    rm -rf "$ws"   # ~1 GB of objects; the logs stay in $build_root
fi
say "done in ${total}s (BaseTools ${t_tools}s, AmdSev ${secs[amdsev]}s, IntelTdx ${secs[inteltdx]}s):"
while read -r sum file; do printf '  %s  %s\n' "$sum" "$out/$file"; done < "$out/SHA256SUMS"
say "record: $out/firmware.json"
