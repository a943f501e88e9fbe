#!/usr/bin/env bash
# Puts a real Xray-core where the tests and the demo find it, built from the Go module proxy at the
# version pinned in scripts/xray-core.pin (../shared/xray-core-semantics.md: Xray tags each release
# 26.M.D as the Go module version v1.26MMDD.0).
#   XRAY_BIN=/path/to/xray   use that binary instead (an operator's own build); nothing is built
# The build goes to a cache outside the checkout, once: a cached binary whose `xray version`
# matches the pin is reused. Prints the binary's path as its last line.
# Exit status 3: no Go toolchain and no XRAY_BIN, so nothing Xray-based can run here.
set -euo pipefail
cd "$(dirname "$0")/.."

pin="$(tr -d '[:space:]' < scripts/xray-core.pin)"
if [[ ! "$pin" =~ ^v1\.([0-9]{2})([0-9]{2})([0-9]{2})\.0$ ]]; then
  echo "scripts/xray-core.pin: $pin is not a v1.YYMMDD.0 module version" >&2
  exit 1
fi
# The first line of `BIN version`, read whole: `| head -n1` would end the binary with SIGPIPE,
# which pipefail reports as a failure, so a good cached binary looked stale and was rebuilt.
first_line() {
  local out
  out=$("$1" version 2>/dev/null) || return 0
  echo "${out%%$'\n'*}"
}
release="${BASH_REMATCH[1]}.$((10#${BASH_REMATCH[2]})).$((10#${BASH_REMATCH[3]}))"

if [[ -n "${XRAY_BIN:-}" ]]; then
  if ! "$XRAY_BIN" version >/dev/null 2>&1; then
    echo "XRAY_BIN=$XRAY_BIN does not run (\`$XRAY_BIN version\` failed)" >&2
    exit 1
  fi
  echo "using XRAY_BIN: $(first_line "$XRAY_BIN")" >&2
  echo "$XRAY_BIN"
  exit 0
fi

cache="${XRAY_CACHE:-/var/cache/xray-warden-tests}/xray-core-$pin"
bin="$cache/xray"
if [[ -x "$bin" ]] && [[ $(first_line "$bin") == "Xray $release "* ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    [[ -x "$candidate" ]] && PATH="$(dirname "$candidate"):$PATH" && break
  done
fi
if ! command -v go >/dev/null; then
  echo "no Go toolchain: cannot build Xray-core $release; the Xray half of the proofs is skipped" \
       "(install Go >= 1.26, or set XRAY_BIN to an Xray binary)" >&2
  exit 3
fi

echo "building Xray-core $release ($pin) from the Go module proxy into $cache (once; a few minutes on 2 cores)" >&2
started=$SECONDS
work="$cache.build"
rm -rf "$work"
mkdir -p "$work"
# -v names each package as it is compiled: the progress of a build that takes minutes.
GOBIN="$work" GOFLAGS=-trimpath go install -v "github.com/xtls/xray-core/main@$pin" 2>&1 \
  | awk -v start="$(date +%s)" '{ n++; if (n % 25 == 0) { printf "  %4d packages, %ds\n", n, systime() - start > "/dev/stderr"; fflush("/dev/stderr") } }'
mv "$work/main" "$work/xray"
if [[ $(first_line "$work/xray") != "Xray $release "* ]]; then
  echo "the built binary does not report Xray $release: $(first_line "$work/xray")" >&2
  exit 1
fi
rm -rf "$cache"
mv "$work" "$cache"
chmod 0755 "$cache" "$bin"
echo "built $("$bin" version | head -n1) in $((SECONDS - started)) s" >&2
echo "$bin"
