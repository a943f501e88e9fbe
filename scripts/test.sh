#!/usr/bin/env bash
# The whole test command: installs what the tests need, then runs every tier.
#   1. lint   cargo fmt --check, cargo clippy --all-targets -D warnings
#   2. unit   pure logic beside the code, in-process HTTP on port 0 (cargo test --lib)
#   3. proof  the real binary against a REAL systemd booted in namespaces (tests/*.rs; needs root);
#             tests/package.rs builds the .deb and installs it into a cached Debian 12 root
#   4. fuzz   a bounded run of every cargo-fuzz target (FUZZ_SECONDS each, default 25; nightly)
# Usage (as root, from anywhere): scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "scripts/test.sh needs root: the proof tier boots systemd in new namespaces" >&2
  exit 1
fi
scripts/install-deps.sh
# Every proof that runs a core runs on both real cores (tests/support/cores.rs): V2Ray 4.34 from
# Debian, Xray-core built pinned from the Go module proxy (scripts/install-xray.sh; XRAY_BIN wins).
set +e
xray="$(scripts/install-xray.sh)"
status=$?
set -e
case $status in
  0) export XRAY_BIN="$xray" ;;
  3) echo "SKIPPED: every Xray-core proof (no Go toolchain to build it, no XRAY_BIN); V2Ray only" >&2
     export WARDEN_TEST_CORES=v2ray ;;
  *) exit "$status" ;;
esac

# grafana/dashboard-linter, pinned, for tests/dashboards.rs (scripts/install-dashboard-linter.sh):
# 3 = no Go, 4 = the module proxy does not serve it; the tests then run its rules as a port only.
if linter="$(scripts/install-dashboard-linter.sh)"; then
  export DASHBOARD_LINTER="$linter"
else
  status=$?
  ((status == 3 || status == 4)) || exit "$status"
  echo "SKIPPED: grafana/dashboard-linter (see above); tests/dashboards.rs runs its rules as a port" >&2
fi

echo "== lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== unit + proof tiers"
# tests/demo.rs runs scripts/demo.sh with the debug build of examples/demo_stack.rs.
cargo build --locked --examples
# Not --all-targets: that would also run benches/scrape.rs, a benchmark, not a test.
cargo test --locked --lib --bins --tests

echo "== fuzz smoke"
# Each parser of outside input for a short while from its seeds; longer runs: docs/fuzzing.md.
fuzz/run.sh "${FUZZ_SECONDS:-25}"
