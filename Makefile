# The one entry point for people and CI. `make help` lists the targets.
#
# Every target builds with the release profile into one target folder, so that DuckDB's C++
# (45 minutes on 2 cores) is compiled once per machine and shared by tests, demo and benchmarks.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/ldsync-target
CARGO ?= cargo
CARGO_FLAGS := --release --locked
LDSYNC := $(CARGO_TARGET_DIR)/release/ldsync

.DEFAULT_GOAL := help
.PHONY: help build fmt check test check-syncs validate-syncs demo bench fuzz chaos ci

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Every build selects the whole workspace with all targets, as `cargo test --workspace` does:
# selecting one package (`-p`) can change the features of DuckDB's build dependencies, and
# with them the hash under which its 45-minute C++ build is cached.
build: ## Build the ldsync binary and everything else (release)
	$(CARGO) build $(CARGO_FLAGS) --workspace --all-targets

fmt: ## Format the code
	$(CARGO) fmt --all

check: ## Format check, clippy with -D warnings, docs with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(CARGO_FLAGS) --workspace --no-deps

test: ## Run every test: unit, integration, end to end
	$(CARGO) test $(CARGO_FLAGS) --workspace
	@# The tests built the binary; validating with it spares a second build.
	$(MAKE) --no-print-directory validate-syncs

check-syncs: build validate-syncs ## Validate ldsync.toml and every file in syncs/

validate-syncs:
	LD_ACCESS_TOKEN="$${LD_ACCESS_TOKEN:-check-syncs-token}" \
	WAREHOUSE_URL="$${WAREHOUSE_URL:-postgres://ldsync@127.0.0.1:5432/analytics}" \
	$(LDSYNC) --config ldsync.toml validate

demo: build ## Run the main job on the embedded default (DuckDB warehouse, local emulator)
	./scripts/demo.sh "$(LDSYNC)"

bench: build ## Run the benchmarks; numbers go to docs/benchmarks.md
	./scripts/bench.sh "$(LDSYNC)"

# The fuzz crate is outside the workspace and builds only the config, core and emulator crates,
# with its own target folder: libFuzzer's instrumentation would otherwise rebuild what the
# release builds share. `-s none` needs no sanitizer runtime, so the stable toolchain does.
FUZZ_SECONDS ?= 60
FUZZ_DIR := crates/ldsync-fuzz
FUZZ_TARGETS := config_project emulator_request emulator_body snapshot_file
FUZZ_CARGO_TARGET_DIR ?= $(HOME)/.cache/fuzz-target

fuzz: ## Fuzz the config parser, the emulator and snapshot files, FUZZ_SECONDS (60) per target
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	CARGO_TARGET_DIR=$(FUZZ_CARGO_TARGET_DIR) $(CARGO) fuzz build --fuzz-dir $(FUZZ_DIR) -s none
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$target && \
		CARGO_TARGET_DIR=$(FUZZ_CARGO_TARGET_DIR) $(CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) -s none \
			$$target $(FUZZ_DIR)/corpus/$$target $(FUZZ_DIR)/seeds/$$target \
			-- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			|| exit 1; \
	done

SEEDS ?= 500

chaos: build ## The long chaos run: SEEDS (500) seeds of every fault at once (make test runs 50)
	CHAOS_SEEDS=$(SEEDS) $(CARGO) test $(CARGO_FLAGS) --workspace --test cli chaos -- --nocapture

ci: check test ## What CI runs
