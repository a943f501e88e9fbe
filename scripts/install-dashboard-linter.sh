#!/usr/bin/env bash
# Puts grafana/dashboard-linter where tests/dashboards.rs finds it (DASHBOARD_LINTER), built from
# the Go module proxy at the commit pinned in scripts/dashboard-linter.pin. The module has no
# release a plain `go install ...@latest` would pick reliably, so it is pinned by commit (the
# proxy resolves it to a pseudo-version); its go.mod has no `replace` directives at that commit,
# but the build still runs inside the downloaded module directory, with its own go.sum, so that a
# `replace` added later is honoured (../shared/xray-core-semantics.md, "Go tools").
#   DASHBOARD_LINTER=/path/to/dashboard-linter   use that binary instead; nothing is built
# The build goes to a cache outside the checkout, once, and is reused. Prints the binary's path as
# its last line.
# Exit status 3: no Go toolchain. Exit status 4: the Go module proxy does not serve the pinned
# version (this machine's proxy refuses every version of the module). Either way the real linter
# is skipped; tests/dashboards.rs still runs its rules as a port and says SKIPPED for the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

pin="$(tr -d '[:space:]' < scripts/dashboard-linter.pin)"
if [[ ! "$pin" =~ ^[0-9a-f]{40}$ && ! "$pin" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
  echo "scripts/dashboard-linter.pin: $pin is neither a commit hash nor a module version" >&2
  exit 1
fi
module=github.com/grafana/dashboard-linter

if [[ -n "${DASHBOARD_LINTER:-}" ]]; then
  if ! "$DASHBOARD_LINTER" --help >/dev/null 2>&1; then
    echo "DASHBOARD_LINTER=$DASHBOARD_LINTER does not run" >&2
    exit 1
  fi
  echo "$DASHBOARD_LINTER"
  exit 0
fi

cache="${XRAY_CACHE:-/var/cache/xray-warden-tests}/dashboard-linter-${pin:0:12}"
bin="$cache/dashboard-linter"
if [[ -x "$bin" ]] && "$bin" --help >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

# Go from PATH, else where Debian's golang or the upstream tarball puts it.
go="$(command -v go || ls /usr/local/go/bin/go /usr/lib/go/bin/go 2>/dev/null | head -n1 || true)"
if [[ -z "$go" ]]; then
  echo "no Go toolchain: cannot build $module; the real dashboard linter is skipped" >&2
  exit 3
fi
PATH="$(dirname "$go"):$PATH"

echo "fetching $module@${pin:0:12} from the Go module proxy to build it into $cache (once)" >&2
started=$SECONDS
work="$cache.build"
rm -rf "$work"
mkdir -p "$work"
if ! info="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module@$pin" 2>&1)"; then
  rm -rf "$work"
  echo "the Go module proxy does not serve $module@$pin; the real dashboard linter is skipped:" >&2
  echo "$info" | grep -m1 -E '"Error"|403|404|not available' >&2 || true
  exit 4
fi
dir="$(echo "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$dir" ]] || { echo "go mod download gave no module directory: $info" >&2; exit 1; }
# Inside a copy of the module (the module cache is read-only): its go.mod, go.sum and replaces.
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && GOFLAGS=-trimpath go build -o "$work/dashboard-linter" .)
rm -rf "$work/src"
"$work/dashboard-linter" --help >/dev/null
rm -rf "$cache"
mv "$work" "$cache"
echo "built $module@${pin:0:12} in $((SECONDS - started)) s" >&2
echo "$bin"
