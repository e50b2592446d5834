#!/usr/bin/env bash
# Builds cocoon-guest with mistral.rs's CUDA backend (`--features cuda`) on a machine with
# no GPU and no CUDA installation (`make guest-cuda`; the recipe of shared/design/GPU.md):
#
#  1. the CUDA 13.0 toolchain and libraries from NVIDIA's PyPI wheels, into a virtualenv
#     outside the clone (versions pinned to match the GPU machines' driver: PTX from a newer
#     nvcc fails to JIT on an older driver);
#  2. a link directory with the unversioned library names the crates link (`-lcublas`, ...)
#     and a stub `libcuda.so` (soname `libcuda.so.1`): the driver library exists only on
#     the GPU machine, where the real one is loaded at run time. The stub defines every
#     `cu*` driver symbol the build's objects leave undefined, so it is made after a first
#     build whose final link fails for want of it;
#  3. cargo with the same RUSTFLAGS every time (changing them rebuilds everything).
#
# Output: $CUDA_TARGET_DIR/release/cocoon-guest and an xz copy beside it, with the shared
# libraries it needs listed (they come from the GPU machine's CUDA 13 install).
# Cost (2 cores): 31 min the first time (measured 2026-12-05: wheels 1.2 GB, nvcc for sm_90a
# included; 445 stubbed symbols; binary 136 MB, 21 MB as .xz), seconds to relink.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${COCOON_CUDA_CACHE:-$HOME/.cache/cocoon-cuda}
VENV=$CACHE/venv
LINK_DIR=$CACHE/link
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$CACHE/target}
PYTHON=${PYTHON:-python3}
CARGO=${CARGO:-cargo}
# H100/H200: compute capability 9.0 (there is no GPU here to ask).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)
# What the crates link: cudarc (cuda nvrtc curand cublas cublasLt) and mistral.rs (cudart).
LINKED=(cublas cublasLt curand nvrtc cudart)

say() { echo "guest-cuda: $*"; }

mkdir -p "$CACHE" "$LINK_DIR"
stamp=$VENV/.wheels
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${WHEELS[*]}" ]; then
  say "installing the CUDA 13.0 wheels into $VENV (about 1.2 GB)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${WHEELS[@]}"
  echo "${WHEELS[*]}" > "$stamp"
fi
CU=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
for dir in bin include lib nvvm; do
  [ -d "$CU/$dir" ] || { say "the wheels did not install $CU/$dir"; exit 1; }
done
export PATH=$CU/bin:$PATH CUDA_ROOT=$CU CUDA_PATH=$CU CUDA_HOME=$CU
export LD_LIBRARY_PATH=$CU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvcc --version | tail -1

for lib in "${LINKED[@]}"; do
  real=$(ls "$CU/lib/lib$lib.so."* 2>/dev/null | sort | head -1 || true)
  [ -n "$real" ] || { say "no lib$lib.so.* in $CU/lib"; exit 1; }
  ln -sf "$real" "$LINK_DIR/lib$lib.so"
done
export RUSTFLAGS="-L native=$LINK_DIR"

build() {
  "$CARGO" build --release --locked -p cocoon-guest --features cuda --manifest-path "$ROOT/Cargo.toml"
}

# The stub libcuda: one empty function per undefined `cu*` symbol of the build's objects.
make_stub() {
  local symbols=$CACHE/libcuda.symbols
  find "$CARGO_TARGET_DIR/release" \( -name '*.rlib' -o -name '*.a' \) -print0 \
    | xargs -0 nm -u --format=just-symbols 2>/dev/null \
    | grep -E '^cu[A-Z][A-Za-z0-9_]*$' | sort -u > "$symbols"
  [ -s "$symbols" ] || { say "no cu* symbols found to stub"; exit 1; }
  sed 's/.*/void &(void) {}/' "$symbols" > "$CACHE/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LINK_DIR/libcuda.so" "$CACHE/libcuda_stub.c"
  say "stub libcuda.so: $(wc -l < "$symbols") symbols"
}

if [ ! -f "$LINK_DIR/libcuda.so" ]; then
  log=$CACHE/first-build.log
  say "first build (its final link needs the stub libcuda made from its objects; log: $log)"
  if ! build > "$log" 2>&1; then
    # Expected: the final link fails for want of -lcuda; anything else is a real failure.
    grep -q 'unable to find library -lcuda\|cannot find -lcuda' "$log" \
      || { tail -40 "$log"; say "the first build failed (see $log)"; exit 1; }
  fi
  make_stub
fi
if ! build; then
  # New code may use driver symbols the stub lacks: remake it once and retry.
  make_stub
  build
fi

bin=$CARGO_TARGET_DIR/release/cocoon-guest
xz -6 -T2 -k -f "$bin"
say "built $bin ($(du -h "$bin" | cut -f1); $(du -h "$bin.xz" | cut -f1) as $bin.xz)"
say "shared libraries it needs on the GPU machine:"
readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/  \1/p'
