#!/usr/bin/env bash
# Starts the appliance on its embedded defaults (simulated TEE, bundled model, local TON
# chain) on loopback: the guest on $GUEST_PORT (its internal receipts API on
# $INTERNAL_PORT), the host agent relaying $AGENT_PORT to it, collecting its receipts and
# vouchers into the SQLite ledger $STATE/ledger.sqlite3, settling them on its embedded
# chain ($STATE/chain.state, TON HTTP API on $TON_API_PORT) and serving its admin API on
# $ADMIN_PORT. Waits until the guest is ready and verifies it through the host agent with
# cocoon-verify; then a client deposits into its escrow, chats through `cocoon-client
# proxy` ($PROXY_PORT), and the operator's payout lands. Stays up until Ctrl-C.
# TEE=simulated (TDX, the default), simulated-sev-snp, or simulated-vtpm (SEV-SNP plus a
# vTPM: swtpm, started here with a fresh state, quoting PCRs; verified with --require-vtpm).
set -euo pipefail

BIN=${BIN:-target/release}
MODEL=${MODEL:-models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
GUEST_PORT=${GUEST_PORT:-8443}
AGENT_PORT=${AGENT_PORT:-9443}
INTERNAL_PORT=${INTERNAL_PORT:-8444}
ADMIN_PORT=${ADMIN_PORT:-9444}
TON_API_PORT=${TON_API_PORT:-9445}
PROXY_PORT=${PROXY_PORT:-8080}
STATE=${STATE:-.cocoon}
TEE=${TEE:-simulated}
case "$TEE" in
  simulated | simulated-sev-snp | simulated-vtpm) ;;
  *) echo "TEE=$TEE: expected simulated, simulated-sev-snp or simulated-vtpm" >&2; exit 2 ;;
esac
mkdir -p "$STATE"
CERT="$STATE/guest-cert.pem"

# The host token (the guest's receipt journal) and the admin API's token: random, kept.
umask 077
for token in host-token admin-token; do
  [ -s "$STATE/$token" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/$token"
done
# The operator's wallet on the local chain: tonlib-core's public test words. Development
# only: anyone can spend a wallet of published words on a real network.
[ -s "$STATE/operator.words" ] || echo "section garden tomato dinner season dice renew length \
useful spin trade intact use universe what post spike keen mandate behind concert egg doll rug" \
  >"$STATE/operator.words"
# The client's account key (owns its escrow and the wallet that funds it).
[ -s "$STATE/client.pem" ] || "$BIN/cocoon-client" account keygen --out "$STATE/client.pem" >/dev/null
umask 022
wallet_of() { # the raw address of a key's wallet v5r1 on the local chain
  "$BIN/cocoon-client" account show "$@" --ton-network local | sed -n 's/^wallet v5r1 .*(\(0:[0-9a-f]*\)).*/\1/p'
}
operator_wallet=$(wallet_of --mnemonic-file "$STATE/operator.words")
client_wallet=$(wallet_of --account-key "$STATE/client.pem")
ton_api="http://127.0.0.1:$TON_API_PORT"
balance_of() { # nanoTON on an address, from the local chain's TON HTTP API
  curl -s "$ton_api/api/v2/getAddressInformation?address=$1" | sed -n 's/.*"balance": *"\{0,1\}\([0-9]*\).*/\1/p'
}
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
# Escrow billing on the embedded chain (real contract and wallet code, in process). Settles
# whatever is owed within seconds, so the demo shows a payout; see the example config for
# production thresholds.
[billing]
chain = "local"
network = "local"
wallet_mnemonic_file = "operator.words"
settle_min_nanoton = 1
settle_max_age_secs = 5
poll_secs = 2
[billing.local_chain]
state_file = "chain.state"
api_listen = "127.0.0.1:$TON_API_PORT"
[[billing.local_chain.genesis]]   # credited once, when chain.state is created
mnemonic_file = "operator.words"
nanoton = 100000000000
[[billing.local_chain.genesis]]
address = "$client_wallet"
nanoton = 100000000000
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
tee_flags=(--tee "$TEE")
vtpm_verify_flags=()
if [ "$TEE" = simulated-vtpm ]; then
  # A vTPM is fresh at every boot: new swtpm state, so PCR 15 holds only this start's config.
  command -v swtpm >/dev/null || { echo "TEE=simulated-vtpm needs swtpm (apt-get install swtpm)" >&2; exit 2; }
  rm -rf "$STATE/swtpm" && mkdir -p "$STATE/swtpm/state"
  swtpm socket --tpm2 --tpmstate "dir=$STATE/swtpm/state" \
    --server "type=unixio,path=$STATE/swtpm/cmd.sock" --ctrl "type=unixio,path=$STATE/swtpm/ctrl.sock" \
    --flags not-need-init,startup-clear >"$STATE/swtpm/swtpm.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do [ -S "$STATE/swtpm/cmd.sock" ] && break; sleep 0.1; done
  tee_flags+=(--vtpm "unix:$STATE/swtpm/cmd.sock")
  vtpm_verify_flags=(--require-vtpm --vtpm-pcr 15)
fi
# --allow-anonymous: requests that name no account (the curl line and plain SDKs below)
# are served and billed to `anonymous`, which no key owns and no one can settle.
# --payout-address: proven accounts pay through their escrows, vouchers pay the operator's
# wallet. Prices: 0.002 TON per prompt token, 0.006 per completion token (demo prices,
# high enough that one chat outweighs a settlement's gas).
"$BIN/cocoon-guest" serve --listen "127.0.0.1:$GUEST_PORT" "${tee_flags[@]}" --model "$MODEL" \
  --allow-anonymous --host-token-file "$STATE/host-token" \
  --payout-address "$operator_wallet" --ton-network local \
  --price-prompt 2000000000000 --price-cached-prompt 200000000000 --price-completion 6000000000000 \
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
echo "verifying the guest through the host agent: cocoon-verify endpoint $url --allow-simulated --accept-any-image ${vtpm_verify_flags[*]}"
"$BIN/cocoon-verify" endpoint "$url" --allow-simulated --accept-any-image "${vtpm_verify_flags[@]}" --cert-out "$CERT"

client_flags=(--account-key "$STATE/client.pem" --ton-api "$ton_api" --ton-network local)
verify_flags=(--allow-simulated --accept-any-image)
# The registry (billing/REGISTRY.md): a publisher vouches on-chain for the image, model and
# price table it verified; clients then accept the guest with --registry alone. The publisher
# key here is the operator's development words (funded on the local chain); on a real
# network it is the image publisher's own key.
publisher_flags=(--mnemonic-file "$STATE/operator.words" --ton-network local --ton-api "$ton_api")
registry=$("$BIN/cocoon-client" registry address --mnemonic-file "$STATE/operator.words")
registry_check=("$BIN/cocoon-verify" endpoint "$url" --allow-simulated --registry "$registry" --registry-api "$ton_api")
echo
if ! "${registry_check[@]}" >/dev/null 2>&1; then
  echo "publisher: registering the verified guest's image, model and price table in registry $registry..."
  "$BIN/cocoon-client" registry list "${publisher_flags[@]}" >/dev/null 2>&1 \
    || "$BIN/cocoon-client" registry deploy "${publisher_flags[@]}"
  "$BIN/cocoon-verify" endpoint "$url" "${verify_flags[@]}" --json >"$STATE/guest-values.json" 2>/dev/null
  "$BIN/cocoon-client" registry add "${publisher_flags[@]}" --from-verify "$STATE/guest-values.json" --skip-registered
fi
echo "verifying the guest against the registry alone: cocoon-verify endpoint $url --allow-simulated --registry $registry"
"${registry_check[@]}"

# A client pays: its escrow (deposit 10 TON, stake 2) is deployed from its own wallet through
# the local chain's TON HTTP API, the proxy authorizes the verified guest's key (cap 5 TON)
# and proves the account in each session; one chat; then the host agent settles the voucher.
echo
echo "client: deploying its escrow (10 TON, stake 2 TON) for the verified guest..."
if ! "$BIN/cocoon-client" balance --upstream "$url" "${verify_flags[@]}" "${client_flags[@]}" --json \
    2>/dev/null | grep -q '"deployed": *true'; then
  "$BIN/cocoon-client" escrow deploy --upstream "$url" "${verify_flags[@]}" "${client_flags[@]}" \
    --amount 10 --stake 2
fi
proxy_log="$STATE/proxy.log"
"$BIN/cocoon-client" proxy --listen "127.0.0.1:$PROXY_PORT" --upstream "$url" "${verify_flags[@]}" \
  --account-key "$STATE/client.pem" --spend-cap 5 >"$proxy_log" 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do
  grep -q "^cocoon-client: listening on" "$proxy_log" 2>/dev/null && break
  exit_if_one_died
  sleep 0.5
done
operator_before=$(balance_of "$operator_wallet")
echo "client: one chat through the proxy (http://127.0.0.1:$PROXY_PORT/v1)..."
answer=$(curl -sS -D "$STATE/chat.head" "http://127.0.0.1:$PROXY_PORT/v1/chat/completions" \
  -H 'content-type: application/json' \
  -d "{\"model\":\"$model_id\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],\"max_tokens\":32}")
echo "  answer: $(echo "$answer" | sed -n 's/.*"content":"\([^"]*\)".*/\1/p' | head -c 200)"
echo "  usage:  $(echo "$answer" | grep -o '"usage":{[^}]*}')"
echo "operator: waiting for the host agent to settle the voucher on-chain..."
# Settled when this boot's guest key shows nothing unsettled (the escrow and the chain
# persist in $STATE across runs, so its total alone says nothing about this chat).
settled=""
for _ in $(seq 1 60); do
  shown=$("$BIN/cocoon-client" balance --upstream "$url" "${verify_flags[@]}" "${client_flags[@]}" 2>/dev/null || true)
  settled=$(echo "$shown" | sed -n 's/^ *settled[^0-9]*\([0-9.]*\).*/\1/p' | head -1)
  unsettled=$(echo "$shown" | sed -n 's/^ *unsettled *\([0-9.]*\).*/\1/p' | head -1)
  [ "$unsettled" = "0.000000000" ] && break
  exit_if_one_died
  sleep 1
done
"$BIN/cocoon-client" balance --upstream "$url" "${verify_flags[@]}" "${client_flags[@]}" || true
operator_after=$(balance_of "$operator_wallet")
echo "operator wallet $operator_wallet (also the guest's payout address):"
echo "  $operator_before -> $operator_after nanoTON: +$((operator_after - operator_before)): this chat's charge less the gas of its settlement (the escrow has charged ${settled} TON in all)"
curl -s -H "authorization: Bearer $(cat "$STATE/admin-token")" "http://127.0.0.1:$ADMIN_PORT/v1/settlements" | head -c 600; echo

# The public record (issue 20): the chat's receipt, proven against the receipts root the
# escrow recorded on-chain, with the proof the host agent makes from its ledger; then what
# the chain alone says was served per model and guest key.
admin_flags=(--admin "127.0.0.1:$ADMIN_PORT" --admin-token-file "$STATE/admin-token")
request_id=$(echo "$answer" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
receipt_key=$("$BIN/cocoon-verify" endpoint "$url" "${verify_flags[@]}" --json 2>/dev/null \
  | grep -o '"receipt_key": *"[0-9a-f]*"' | head -1 | grep -o '[0-9a-f]\{64\}')
echo
echo "public record: receipt of $request_id, proven on-chain (cocoon-host-agent receipts proof; cocoon-verify receipt --onchain):"
"$BIN/cocoon-host-agent" receipts proof "$request_id" "${admin_flags[@]}" \
  --output "$STATE/proof.json" --receipt-output "$STATE/receipt.jws"
"$BIN/cocoon-verify" receipt "$STATE/receipt.jws" --receipt-key "$receipt_key" \
  --onchain --proof "$STATE/proof.json" --ton-api "$ton_api"
echo "public record: served and charged per model and guest key, from the chain alone (cocoon-verify audit):"
"$BIN/cocoon-verify" audit --ton-api "$ton_api" --payout "$operator_wallet"

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

Billed to the client's escrow (its key $STATE/client.pem, proven inside every attested session;
the proxy above authorizes the guest to charge it up to 5 TON):
  point any OpenAI SDK at http://127.0.0.1:$PROXY_PORT/v1 (log: $proxy_log)
  $BIN/cocoon-client balance --upstream $url --allow-simulated --accept-any-image \\
    --account-key $STATE/client.pem --ton-api $ton_api --ton-network local
  $BIN/cocoon-client escrow top-up|set-stake|withdraw|close|refund ... (same flags; --help)

What was served and billed (the host agent's ledger, $STATE/ledger.sqlite3):
  $BIN/cocoon-host-agent usage --admin 127.0.0.1:$ADMIN_PORT --admin-token-file $STATE/admin-token
  $BIN/cocoon-host-agent receipts export --admin 127.0.0.1:$ADMIN_PORT --admin-token-file $STATE/admin-token
  $BIN/cocoon-host-agent receipts proof REQUEST_ID --admin 127.0.0.1:$ADMIN_PORT --admin-token-file $STATE/admin-token
  $BIN/cocoon-verify receipt RECEIPT --receipt-key $receipt_key --onchain --proof PROOF --ton-api $ton_api
  $BIN/cocoon-verify audit --ton-api $ton_api --payout $operator_wallet
  curl -H "authorization: Bearer \$(cat $STATE/admin-token)" http://127.0.0.1:$ADMIN_PORT/metrics
  curl -H "authorization: Bearer \$(cat $STATE/admin-token)" http://127.0.0.1:$ADMIN_PORT/v1/settlements

Logs: $guest_log, $agent_log. Press Ctrl-C to stop.
MSG

# Wait until Ctrl-C or until either process dies.
while true; do
  exit_if_one_died
  sleep 1
done
