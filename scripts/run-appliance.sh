#!/usr/bin/env bash
# Starts the appliance on its embedded defaults (simulated TEE, bundled model) on
# loopback: the guest on $GUEST_PORT (its internal receipts API on $INTERNAL_PORT), the
# host agent relaying $AGENT_PORT to it, collecting its receipts into the SQLite ledger
# $STATE/ledger.sqlite3 and serving its admin API on $ADMIN_PORT. Waits until the guest is
# ready, verifies it through the host agent with cocoon-verify, prints how to call it,
# and stays up until Ctrl-C, then stops both.
set -euo pipefail

BIN=${BIN:-target/release}
MODEL=${MODEL:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
GUEST_PORT=${GUEST_PORT:-8443}
AGENT_PORT=${AGENT_PORT:-9443}
INTERNAL_PORT=${INTERNAL_PORT:-8444}
ADMIN_PORT=${ADMIN_PORT:-9444}
STATE=${STATE:-.cocoon}
mkdir -p "$STATE"
CERT="$STATE/guest-cert.pem"

# The host token (the guest's receipt journal) and the admin API's token: random, kept.
umask 077
for token in host-token admin-token; do
  [ -s "$STATE/$token" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/$token"
done
umask 022
cat >"$STATE/host-agent.toml" <<TOML
# Written by scripts/run-appliance.sh (make run); see host-agent/examples/agent.toml.
[relay]
listen = "127.0.0.1:$AGENT_PORT"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
token_file = "admin-token"
[ledger]
path = "ledger.sqlite3"
[[guest]]
name = "dev"
address = "127.0.0.1:$GUEST_PORT"
internal_address = "127.0.0.1:$INTERNAL_PORT"
host_token_file = "host-token"
[guest.attestation]
allow_simulated = true   # the development guest's evidence is SIMULATED
accept_any_image = true  # and it is not a published image
[guest.collateral]
offline = true
TOML

pids=()
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "stopping guest and host agent..."
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "stopped."
}
trap cleanup INT TERM EXIT

guest_log="$STATE/guest.log"
agent_log="$STATE/host-agent.log"
# --allow-anonymous: requests that name no account (the curl line and plain SDKs below)
# are served and billed to `anonymous`, which no key owns and no one can settle.
"$BIN/cocoon-guest" serve --listen "127.0.0.1:$GUEST_PORT" --tee simulated --model "$MODEL" \
  --allow-anonymous --host-token-file "$STATE/host-token" \
  --internal-listen "127.0.0.1:$INTERNAL_PORT" >"$guest_log" 2>&1 &
pids+=($!)
"$BIN/cocoon-host-agent" run --config "$STATE/host-agent.toml" >"$agent_log" 2>&1 &
pids+=($!)

# Exits (showing the logs) as soon as the guest or the host agent has died.
exit_if_one_died() {
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a process exited; last lines of its logs:" >&2
      tail -n 20 "$guest_log" "$agent_log" >&2
      exit 1
    fi
  done
}

echo "starting the guest (loading the model; log: $guest_log)..."
for _ in $(seq 1 600); do
  if grep -q "^cocoon-guest: listening on" "$guest_log" 2>/dev/null; then break; fi
  exit_if_one_died
  sleep 0.5
done
grep -q "^cocoon-guest: listening on" "$guest_log" || { echo "guest not ready after 300 s" >&2; exit 1; }
model_id=$(sed -n 's/^cocoon-guest: listening on .* model=\([^ ]*\) .*/\1/p' "$guest_log")

url="https://127.0.0.1:$AGENT_PORT"
# The host agent relays only once it has verified the guest itself (its health loop).
for _ in $(seq 1 120); do
  if grep -q "agent::guest: verified: " "$agent_log" 2>/dev/null; then break; fi
  exit_if_one_died
  sleep 0.5
done
echo
echo "verifying the guest through the host agent: cocoon-verify endpoint $url --allow-simulated --accept-any-image"
"$BIN/cocoon-verify" endpoint "$url" --allow-simulated --accept-any-image --cert-out "$CERT"

cat <<MSG

The appliance is up (simulated TEE: development evidence, no hardware protection).
  guest       https://127.0.0.1:$GUEST_PORT   (TLS ends here, inside the "TEE")
  host agent  $url   (relays ciphertext; use this)
  model       $model_id
  certificate $CERT   (verified above; trust exactly this file)

curl:
  curl --cacert $CERT $url/v1/chat/completions \\
    -H 'content-type: application/json' \\
    -d '{"model":"$model_id","messages":[{"role":"user","content":"Hello!"}],"max_tokens":32}'

Python (pip install openai):
  import ssl, openai
  ctx = ssl.create_default_context(cafile="$CERT")
  client = openai.OpenAI(base_url="$url/v1", api_key="unused",
                         http_client=openai.DefaultHttpxClient(verify=ctx))
  r = client.chat.completions.create(model="$model_id",
        messages=[{"role": "user", "content": "Hello!"}], max_tokens=32)
  print(r.choices[0].message.content)

Billed to your own account (an Ed25519 key, proven inside every attested TLS session):
  $BIN/cocoon-client account keygen --out $STATE/account.pem   (once; prints the account id)
  $BIN/cocoon-client proxy --upstream $url --allow-simulated --accept-any-image --account-key $STATE/account.pem
  (then point any OpenAI SDK at http://127.0.0.1:8080/v1)

What was served and billed (the host agent's ledger, $STATE/ledger.sqlite3):
  $BIN/cocoon-host-agent usage --admin 127.0.0.1:$ADMIN_PORT --admin-token-file $STATE/admin-token
  $BIN/cocoon-host-agent receipts export --admin 127.0.0.1:$ADMIN_PORT --admin-token-file $STATE/admin-token
  curl -H "authorization: Bearer \$(cat $STATE/admin-token)" http://127.0.0.1:$ADMIN_PORT/metrics

Logs: $guest_log, $agent_log. Press Ctrl-C to stop.
MSG

# Wait until Ctrl-C or until either process dies.
while true; do
  exit_if_one_died
  sleep 1
done
