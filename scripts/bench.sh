#!/usr/bin/env bash
# `make bench`: builds the benchmark binary and runs it. BENCH_ROWS sets the size (default 1 M);
# BENCH_ONLY=segments or BENCH_ONLY=events runs one group of scenarios.
set -euo pipefail
ldsync=${1:?usage: scripts/bench.sh PATH/TO/ldsync}
cd "$(dirname "$0")/.."
# The Makefile's `build` already built ldsync-bench with the rest of the workspace (never
# `-p`: it would change the hash DuckDB's C++ build is cached under).
"${CARGO_TARGET_DIR:-target}/release/ldsync-bench" "$ldsync"
