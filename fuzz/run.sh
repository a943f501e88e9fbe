#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 25) from its committed seeds
# (fuzz/corpus/<target>/seed-*) and reproducers of fixed crashes (fuzz/regressions/<target>/). What a run discovers goes to fuzz/target/corpus/<target>/, kept
# between runs but never committed; a crash stops here with libFuzzer's report, its input in
# fuzz/artifacts/<target>/ and the command that reproduces it. See docs/fuzzing.md.
# Usage (from anywhere): fuzz/run.sh [SECONDS [TARGET...]]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-25}
shift || true
# The fuzz build has its own RUSTFLAGS (sanitizer, coverage): never share the main target dir.
export CARGO_TARGET_DIR="$PWD/fuzz/target"

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build
for target in "${targets[@]}"; do
  dict=()
  case $target in
    users_document | tunnel_config | alertmanager_payload) dict=(-dict=fuzz/dicts/json.dict) ;;
    config_toml) dict=(-dict=fuzz/dicts/toml.dict) ;;
  esac
  found=fuzz/target/corpus/$target
  mkdir -p "$found"
  inputs=("$found")
  for dir in "fuzz/corpus/$target" "fuzz/regressions/$target"; do
    if [[ -d $dir ]]; then inputs+=("$dir"); fi
  done
  echo "-- $target: ${seconds}s"
  cargo +nightly fuzz run "$target" "${inputs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}"
done
