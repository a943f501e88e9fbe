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
set -euo pipefail

readonly PACKAGES=(systemd dbus util-linux perl-base prometheus prometheus-alertmanager prometheus-node-exporter v2ray curl ca-certificates)

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
