#!/usr/bin/env bash
# Prints the path of a pristine Debian 12 root (debootstrap from Debian's packages) for
# tests/package.rs, building it once: the root is cached under /var/cache/xray-warden-tests,
# keyed by a hash of scripts/debian-root.pin, and reused while the pin is unchanged. The test
# never writes into it: it mounts it as the read-only lower layer of an overlay of its own.
# Run as root. Exit status 3: debootstrap is not installed (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

pin_file=scripts/debian-root.pin
value() { sed -n "s/^$1=//p" "$pin_file"; }
key="$(grep -v '^#' "$pin_file" | sha256sum | cut -c1-12)"
suite="$(value suite)"
root="${XRAY_CACHE:-/var/cache/xray-warden-tests}/debian-root-$suite-$key"
# Written last: a root without it is an interrupted bootstrap, never used.
stamp="$root/.xray-warden-root-complete"
if [[ -f "$stamp" ]]; then
  echo "$root"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap is not installed (apt-get install debootstrap)" >&2
  exit 3
fi

echo "bootstrapping Debian $suite into $root (once; a few minutes)" >&2
work="$root.partial"
# An interrupted run may have left its /proc or /sys mounted in the partial root.
for mnt in $(awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
  umount -l "$mnt"
done
rm -rf --one-file-system "$work"
mkdir -p "$(dirname "$root")"
debootstrap --variant="$(value variant)" --include="$(value include)" \
  "$suite" "$work" "$(value mirror)" >&2
# Keep the root small and quiet: no cached .debs, and no leftover of the bootstrap's own mounts.
rm -f "$work"/var/cache/apt/archives/*.deb
date -u +%FT%TZ >"$work/.xray-warden-root-complete"
rm -rf --one-file-system "$root"
mv "$work" "$root"
echo "$root"
