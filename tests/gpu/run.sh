#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (H100/H200; no network, no Rust): see
# shared/design/GPU.md "Run on the GPU machine".
#
#   tests/gpu/run.sh [GUEST_BINARY] [MISTRALRS_BINARY]
#
#   GUEST_BINARY      the CUDA guest scripts/build-guest-cuda.sh makes (default
#                     ~/.cache/cocoon-cuda/target/release/cocoon-guest, or its .xz copy)
#   MISTRALRS_BINARY  the stock `mistralrs` CLI, the peer (optional: skipped without it)
#   MODEL_DIR         a Hugging Face model directory to serve; default: a random
#                     Llama-3-8B-shaped bf16 model generated here (needs TOKENIZER_DIR,
#                     default tests/gpu/tokenizer, holding tokenizer.json and
#                     tokenizer_config.json / chat_template.jinja)
#   PEER_ARGS         how to start the peer, with {PORT} and {MODEL} substituted
#                     (default: "serve --port {PORT} text -m {MODEL}")
#   OUT               where results go (default: a new temporary directory)
#
# Steps: confidential-computing state, HBM copy bandwidth, the model, the guest's own GPU
# checks (--gpu nvidia; on a machine without CC it names cc_mode and the benchmark then
# serves with --gpu nvidia-unattested), our guest and the
# peer at concurrency 1/8/32/64 (aggregate completion tokens/s, TTFT), then a sweep of
# --max-concurrent-requests {8,16,32} x --kv-cache-gpu-utilization {0.80,0.90} for ours.
# Fails loudly when a request got a 5xx or a server died.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$(mktemp -d /tmp/cocoon-gpu.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
SUMMARY=$OUT/summary.txt
: > "$RESULTS"
: > "$SUMMARY"
say() { echo "gpu-run: $*" | tee -a "$SUMMARY"; }
die() { echo "gpu-run: FAILED: $*" | tee -a "$SUMMARY" >&2; exit 1; }
record() { echo "$1" >> "$RESULTS"; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- 1. binaries and libraries ---------------------------------------------------------
GUEST=${1:-$HOME/.cache/cocoon-cuda/target/release/cocoon-guest}
PEER=${2:-}
if [ ! -x "$GUEST" ] && [ -f "$GUEST.xz" ]; then
  say "unpacking $GUEST.xz"
  xz -dkc "$GUEST.xz" > "$OUT/cocoon-guest" && chmod +x "$OUT/cocoon-guest"
  GUEST=$OUT/cocoon-guest
fi
[ -x "$GUEST" ] || die "no guest binary at $GUEST (build it with scripts/build-guest-cuda.sh)"
if [ -n "$PEER" ] && [ ! -x "$PEER" ]; then die "no peer binary at $PEER"; fi
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || die "no $PYTHON"
"$PYTHON" -c 'import torch, transformers, httpx' 2>/dev/null \
  || die "$PYTHON lacks torch, transformers or httpx"

# Every nvidia/*/lib of python's site-packages (cudart, cublas, cublasLt, curand for CUDA
# 13 come with PyTorch) + the driver's libcuda.
LIBS=$("$PYTHON" - <<'PY'
import glob, os, site
dirs = []
for base in site.getsitepackages() + [site.getusersitepackages()]:
    dirs += sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib")))
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH=${LIBS}:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ldd "$GUEST" | grep -q "not found"; then
  ldd "$GUEST" | grep "not found" | tee -a "$SUMMARY"
  die "the guest's shared libraries do not resolve (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
fi
say "guest $GUEST; peer ${PEER:-none}; results in $OUT"

# --- 2. the GPU and its confidential-computing state -----------------------------------
command -v nvidia-smi >/dev/null || die "no nvidia-smi: this is not a GPU machine"
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv | tee -a "$SUMMARY"
CC_STATE="CC off"
if nvidia-smi conf-compute -f >"$OUT/cc.txt" 2>&1; then
  nvidia-smi conf-compute -e >>"$OUT/cc.txt" 2>&1 || true
  nvidia-smi conf-compute -grs >>"$OUT/cc.txt" 2>&1 || true
  cat "$OUT/cc.txt" | tee -a "$SUMMARY"
  grep -qi "CC status: ON" "$OUT/cc.txt" && CC_STATE="CC on"
else
  say "nvidia-smi conf-compute not available: $(head -1 "$OUT/cc.txt")"
fi
say "$CC_STATE"
record "{\"step\":\"cc\",\"state\":\"$CC_STATE\"}"

# --- 3. HBM copy bandwidth --------------------------------------------------------------
HBM_GBS=$("$PYTHON" - <<'PY'
import torch
n = 2 << 30  # 2 GiB
a = torch.empty(n, dtype=torch.uint8, device="cuda")
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
reps = 20
start.record()
for _ in range(reps):
    b.copy_(a)
end.record()
torch.cuda.synchronize()
secs = start.elapsed_time(end) / 1000
# A copy reads and writes every byte.
print(round(2 * n * reps / secs / 1e9, 1))
PY
) || die "measuring HBM bandwidth failed"
say "HBM copy bandwidth: $HBM_GBS GB/s"
record "{\"step\":\"hbm\",\"gb_per_s\":$HBM_GBS}"

# --- 4. the model -----------------------------------------------------------------------
if [ -z "${MODEL_DIR:-}" ]; then
  TOKENIZER_DIR=${TOKENIZER_DIR:-$HERE/tokenizer}
  [ -f "$TOKENIZER_DIR/tokenizer.json" ] \
    || die "no MODEL_DIR and no tokenizer.json in $TOKENIZER_DIR to build a random model with"
  MODEL_DIR=${MODEL_OUT:-/dev/shm/cocoon-llama3-8b-random}
  if [ ! -f "$MODEL_DIR/config.json" ]; then
    say "generating a random Llama-3-8B-shaped bf16 model in $MODEL_DIR"
    "$PYTHON" - "$TOKENIZER_DIR" "$MODEL_DIR" <<'PY' || die "generating the model failed"
import json, os, shutil, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
tok_dir, out = sys.argv[1], sys.argv[2]
tok = json.load(open(os.path.join(tok_dir, "tokenizer.json")))
ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
config = LlamaConfig(
    vocab_size=max(ids) + 1, hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
    torch_dtype="bfloat16", tie_word_embeddings=False,
)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(out, safe_serialization=True)
for name in os.listdir(tok_dir):
    shutil.copy(os.path.join(tok_dir, name), out)
# transformers 5 writes rope_parameters; mistral.rs 0.8.1 reads rope_theta.
path = os.path.join(out, "config.json")
c = json.load(open(path))
c["rope_theta"] = 500000.0
c.setdefault("torch_dtype", "bfloat16")
json.dump(c, open(path, "w"), indent=2)
PY
  fi
fi
[ -f "$MODEL_DIR/config.json" ] || die "no config.json in $MODEL_DIR"
WEIGHT_BYTES=$(du -cb "$MODEL_DIR"/*.safetensors | tail -1 | cut -f1)
BOUND=$("$PYTHON" -c "print(round($HBM_GBS * 1e9 / $WEIGHT_BYTES, 1))")
say "model $MODEL_DIR: $WEIGHT_BYTES bytes of weights; batch-1 decode bound $BOUND tokens/s"
record "{\"step\":\"model\",\"dir\":\"$MODEL_DIR\",\"weight_bytes\":$WEIGHT_BYTES,\"hbm_bound_tokens_per_s\":$BOUND}"

# --- 5. the guest's own GPU checks (NVML) -------------------------------------------------
# `--gpu nvidia` runs driver, device, cc_mode, dev_tools, protected_pcie, evidence and
# ready_state and stops at the first that fails; on a machine without CC that is cc_mode.
CHECK_LOG=$OUT/guest-gpu-checks.log
CHECK_PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
timeout 900 "$GUEST" serve --listen "127.0.0.1:$CHECK_PORT" --tee simulated --gpu nvidia \
  --model "$MODEL_DIR" --model-staging-dir "${STAGING_DIR:-/dev/shm}" >"$CHECK_LOG" 2>&1 &
CHECK_PID=$!
GPU_MODE=nvidia-unattested
for _ in $(seq 900); do
  if grep -q "cocoon-guest: listening on" "$CHECK_LOG"; then GPU_MODE=nvidia; break; fi
  kill -0 "$CHECK_PID" 2>/dev/null || break
  sleep 1
done
kill "$CHECK_PID" 2>/dev/null || true
wait "$CHECK_PID" 2>/dev/null || true
if [ "$GPU_MODE" = nvidia ]; then
  say "guest GPU checks: every check passed, GPU evidence bound (CC on)"
else
  CHECK_LINE=$(grep -m1 "GPU check" "$CHECK_LOG" || tail -1 "$CHECK_LOG")
  say "guest GPU checks: $CHECK_LINE"
  say "serving with --gpu nvidia-unattested (the GPU outside the proof) for the benchmark"
fi
record "{\"step\":\"guest_checks\",\"gpu_mode\":\"$GPU_MODE\",\"detail\":$("$PYTHON" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "${CHECK_LINE:-all passed}")}"

# --- 6. servers -------------------------------------------------------------------------
MODEL_ID=bench
GUEST_PID=
GUEST_URL=
start_guest() { # max_concurrent utilization
  local log=$OUT/guest-$1-$2.log port
  port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$GUEST" serve --listen "127.0.0.1:$port" --tee simulated --gpu "$GPU_MODE" --model "$MODEL_DIR" \
    --model-id "$MODEL_ID" --allow-anonymous --model-staging-dir "${STAGING_DIR:-/dev/shm}" \
    --max-concurrent-requests "$1" --max-queued-requests 1024 \
    --kv-cache-gpu-utilization "$2" --kv-wait-secs 600 \
    --max-tokens-limit 512 --request-timeout-secs 1200 >"$log" 2>&1 &
  GUEST_PID=$!
  PIDS+=("$GUEST_PID")
  for _ in $(seq 600); do
    if grep -q "cocoon-guest: listening on" "$log"; then
      GUEST_URL=https://127.0.0.1:$port
      say "guest up (max-concurrent $1, utilization $2): $(grep -m1 'KV cache' "$log" || echo 'KV cache: not bounded (no GPU seen)')"
      return 0
    fi
    kill -0 "$GUEST_PID" 2>/dev/null || { tail -30 "$log"; die "the guest exited at start ($log)"; }
    sleep 1
  done
  tail -30 "$log"
  die "the guest did not listen within 600 s ($log)"
}
stop_guest() {
  kill -0 "$GUEST_PID" 2>/dev/null || die "the guest died under load ($OUT/guest-*.log)"
  kill "$GUEST_PID"; wait "$GUEST_PID" 2>/dev/null || true
}

PEER_PID=
PEER_URL=
start_peer() {
  [ -n "$PEER" ] || return 0
  local log=$OUT/peer.log port args
  port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  args=${PEER_ARGS:-"serve --port {PORT} text -m {MODEL}"}
  args=${args//\{PORT\}/$port}
  args=${args//\{MODEL\}/$MODEL_DIR}
  # shellcheck disable=SC2086
  "$PEER" $args >"$log" 2>&1 &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1; then
      PEER_URL=http://127.0.0.1:$port
      PEER_MODEL=$(curl -s "$PEER_URL/v1/models" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
      say "peer up: $PEER $args (model $PEER_MODEL)"
      return 0
    fi
    kill -0 "$PEER_PID" 2>/dev/null || { tail -30 "$log"; die "the peer exited at start ($log); set PEER_ARGS"; }
    sleep 1
  done
  die "the peer did not answer within 600 s ($log)"
}

bench() { # label url model concurrency -> prints the JSON line
  local line rc=0
  line=$("$PYTHON" "$HERE/bench.py" --url "$2" --model "$3" --concurrency "$4" --label "$1") || rc=$?
  echo "$line" >> "$RESULTS"
  if [ "$rc" -ne 0 ]; then
    echo "$line" | tee -a "$SUMMARY" >&2
    die "$1 at concurrency $4: a request failed with a 5xx or a dead connection (rc $rc)"
  fi
  echo "$line"
}
field() { "$PYTHON" -c "import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print('-' if v is None else v)" "$1" "$2"; }

# --- 7. ours vs the peer ----------------------------------------------------------------
start_guest 32 0.85
start_peer
printf '%-6s %12s %12s %8s %12s %12s %10s\n' conc ours_tok/s peer_tok/s ratio ours_ttft peer_ttft ours/bound | tee -a "$SUMMARY"
for c in 1 8 32 64; do
  ours=$(bench ours "$GUEST_URL" "$MODEL_ID" "$c")
  kill -0 "$GUEST_PID" 2>/dev/null || die "the guest died at concurrency $c"
  o_tps=$(field "$ours" tokens_per_s); o_ttft=$(field "$ours" ttft_median_s)
  p_tps=-; p_ttft=-; ratio=-
  if [ -n "$PEER_URL" ]; then
    peer=$(bench peer "$PEER_URL" "$PEER_MODEL" "$c")
    kill -0 "$PEER_PID" 2>/dev/null || die "the peer died at concurrency $c"
    p_tps=$(field "$peer" tokens_per_s); p_ttft=$(field "$peer" ttft_median_s)
    ratio=$("$PYTHON" -c "print(round($o_tps / $p_tps, 2) if $p_tps else '-')")
  fi
  vs_bound=$("$PYTHON" -c "print(round($o_tps / $BOUND, 2))")
  printf '%-6s %12s %12s %8s %12s %12s %10s\n' "$c" "$o_tps" "$p_tps" "$ratio" "$o_ttft" "$p_ttft" "$vs_bound" | tee -a "$SUMMARY"
done
stop_guest
if [ -n "$PEER_PID" ]; then kill "$PEER_PID"; wait "$PEER_PID" 2>/dev/null || true; fi

# --- 8. sweep: admission width x KV utilization (ours) ----------------------------------
printf '%-8s %6s %6s %12s %12s\n' max_conc util conc tok/s ttft_med | tee -a "$SUMMARY"
for mcr in 8 16 32; do
  for util in 0.80 0.90; do
    start_guest "$mcr" "$util"
    for c in 32 64; do
      line=$(bench "ours-mcr$mcr-util$util" "$GUEST_URL" "$MODEL_ID" "$c")
      printf '%-8s %6s %6s %12s %12s\n' "$mcr" "$util" "$c" "$(field "$line" tokens_per_s)" "$(field "$line" ttft_median_s)" | tee -a "$SUMMARY"
    done
    grep -m1 "KV cache" "$OUT/guest-$mcr-$util.log" >>"$SUMMARY" || true
    stop_guest
  done
done
say "done: no 5xx, no server died; every figure in $RESULTS"
