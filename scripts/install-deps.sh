#!/usr/bin/env bash
# Installs, from Debian's packages, what the demo and the tests need; does nothing when all of it
# is present. Run as root on Debian 12.
#   systemd, dbus        the real systemd the sandbox boots, and its bus
#   util-linux           unshare, nsenter, setpriv (the sandbox harness)
#   perl-base            a single-process CPU burner for the ground-truth tests
#   prometheus           promtool, which checks a real scrape
#   prometheus-alertmanager   amtool, which checks deploy/alertmanager.example.yml
#   prometheus-node-exporter   the baseline of the scrape benchmark
#   v2ray                a real core for the demo's tunnels
#   curl                 the demo prints a sample scrape with it
#   g++                  libfuzzer-sys compiles libFuzzer (C++) for the fuzz stage
#   debootstrap          the Debian 12 root tests/package.rs installs the .deb into (cached)
#   lintian              checks the .deb (tests/package.rs)
# and, from crates.io, cargo-fuzz at a pinned version, which the fuzz stage runs on the nightly
# toolchain (rustup's `nightly`, which this script checks for but cannot download), and cargo-deb
# at a pinned version, which builds the Debian package (docs/packaging.md).
set -euo pipefail

readonly PACKAGES=(systemd dbus util-linux perl-base prometheus prometheus-alertmanager prometheus-node-exporter v2ray curl ca-certificates g++ debootstrap lintian)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi

# The fuzz stage (docs/fuzzing.md): libFuzzer needs nightly's -Zsanitizer flags.
readonly CARGO_FUZZ_VERSION=0.13.2
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "the fuzz stage needs the nightly toolchain (\`cargo +nightly\` failed): rustup toolchain install nightly" >&2
  exit 1
fi
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

# The Debian package (docs/packaging.md); build.rs's generated assets rely on how this version
# resolves `target/release/` asset paths.
readonly CARGO_DEB_VERSION=3.8.0
if [[ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]]; then
  echo "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
fi
