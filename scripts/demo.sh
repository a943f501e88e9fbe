#!/usr/bin/env bash
# The demo: boots a REAL systemd in new namespaces (scripts/sandbox-boot.sh) with a few tunnels,
# each a real core (Xray-core built pinned by scripts/install-xray.sh, or Debian's V2Ray 4.34 where
# Go is missing) run as an xray-tunnel-{id}.service unit (API, VLESS and Trojan inbounds),
# plus one whose config is broken so that it crash-loops; then runs xray-warden against them with
# a users file as its source, so it syncs three users into every tunnel through the gRPC API, and
# prints the /metrics URL.
#
# Usage (as root): scripts/demo.sh
#   DEMO_SECONDS=N   stop by itself after N seconds (default: run until Ctrl-C)
#   DEMO_LISTEN=ADDR where the warden listens (default 127.0.0.1:9550)
# Everything started here is stopped by PID on exit, and the sandbox's cgroups are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly REPO=$PWD
readonly LISTEN=${DEMO_LISTEN:-127.0.0.1:9550}

if [[ $EUID -ne 0 ]]; then
  echo "scripts/demo.sh needs root: it boots systemd in new namespaces" >&2
  exit 1
fi
scripts/install-deps.sh
# The tunnels' core: Xray-core (XRAY_BIN, or the pinned build), V2Ray 4.34 when Go is missing.
if core=$(scripts/install-xray.sh); then
  core_run="$core run"
else
  [[ $? -eq 3 ]] || exit 1
  echo "no Xray-core here: the demo's tunnels run V2Ray 4.34"
  core=/usr/bin/v2ray core_run=/usr/bin/v2ray
fi
echo "tunnels run $core"
cargo build --release --locked --quiet

# The bus socket lands at $STATE/run/dbus/system_bus_socket and a unix socket path holds 107
# bytes: a deep checkout keeps its sandbox state in a short place instead.
demo_root="$REPO/target/demo"
# The warden tests configs as the tunnel user with ProtectHome=yes, so the state may not lie under
# /home or /root either, and the tunnel user must be able to reach it (0711: enter, not list).
case "$demo_root" in /home/* | /root/*) demo_root=/var/lib/xray-warden-demo ;; esac
((${#demo_root} <= 50)) || demo_root=/var/lib/xray-warden-demo
mkdir -p "$demo_root"
STATE=$(mktemp -d "$demo_root/sandbox-demo-XXXX")
chmod 0711 "$STATE"
readonly STATE
unshare_pid="" systemd_pid="" nsenter_pid="" warden_pid=""

cleanup() {
  trap - EXIT INT TERM
  echo "stopping the demo"
  [[ -n $warden_pid ]] && kill -s TERM "$warden_pid" 2>/dev/null || true
  [[ -n $nsenter_pid ]] && wait "$nsenter_pid" 2>/dev/null || true
  [[ -n $systemd_pid ]] && kill -s RTMIN+3 "$systemd_pid" 2>/dev/null || true
  if [[ -n $unshare_pid ]]; then
    for _ in $(seq 100); do kill -0 "$unshare_pid" 2>/dev/null || break; sleep 0.1; done
    kill -s KILL "$unshare_pid" 2>/dev/null || true
    wait "$unshare_pid" 2>/dev/null || true
  fi
  "$REPO/scripts/sandbox-boot.sh" --cleanup "$STATE" || echo "warning: sandbox cgroups left behind" >&2
  rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

first_child() { cut -d' ' -f1 "/proc/$1/task/$1/children" 2>/dev/null || true; }
in_sandbox() { nsenter -t "$systemd_pid" -m -p -C -- "$@"; }

echo "booting a sandboxed systemd in $STATE"
setpriv --pdeathsig KILL -- scripts/sandbox-boot.sh "$STATE" >"$STATE/boot.log" 2>&1 &
unshare_pid=$!
bus="unix:path=$STATE/run/dbus/system_bus_socket"
for _ in $(seq 300); do
  pid=$(first_child "$unshare_pid")
  if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == systemd ]]; then
    systemd_pid=$pid
    busctl --address="$bus" call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
      org.freedesktop.DBus.Peer Ping >/dev/null 2>&1 && break
  fi
  sleep 0.1
done
[[ -n $systemd_pid ]] || { cat "$STATE/boot.log"; echo "the sandbox did not boot" >&2; exit 1; }

# Tunnels: real cores, each with its API behind a dokodemo-door inbound and VLESS and
# Trojan inbounds without users; "broken" has an invalid config.
mkdir -p "$STATE/etc"
port=10800
for id in eu1 eu2 us1 broken; do
  if [[ $id == broken ]]; then
    echo '{"inbounds": [{"protocol": "no-such-protocol"}]}' >"$STATE/etc/xray-$id.json"
  else
    cat >"$STATE/etc/xray-$id.json" <<JSON
{"log": {"loglevel": "warning"},
 "api": {"tag": "api", "services": ["HandlerService", "StatsService"]},
 "stats": {},
 "policy": {"system": {"statsInboundUplink": true, "statsInboundDownlink": true}},
 "inbounds": [
  {"tag": "api", "listen": "127.0.0.1", "port": $((port + 1)), "protocol": "dokodemo-door", "settings": {"address": "127.0.0.1"}},
  {"tag": "vless-in", "listen": "127.0.0.1", "port": $((port + 2)), "protocol": "vless", "settings": {"clients": [], "decryption": "none"}},
  {"tag": "trojan-in", "listen": "127.0.0.1", "port": $((port + 3)), "protocol": "trojan", "settings": {"clients": []}}
 ],
 "outbounds": [{"protocol": "freedom"}],
 "routing": {"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}}
JSON
    port=$((port + 10))
  fi
  cat >"$STATE/units/xray-tunnel-$id.service" <<UNIT
[Unit]
Description=Xray tunnel $id (demo)
StartLimitIntervalSec=0

[Service]
ExecStart=$core_run -config $STATE/etc/xray-$id.json
Restart=always
RestartSec=3

[Install]
WantedBy=multi-user.target
UNIT
done
in_sandbox systemctl daemon-reload
in_sandbox systemctl enable --now --no-block xray-tunnel-{eu1,eu2,us1,broken}.service 2>/dev/null

# The desired users, and the warden's configuration.
cat >"$STATE/etc/users.json" <<'JSON'
{"users": [
  {"email": "alice@example.com", "id": "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f"},
  {"email": "bob@example.com", "id": "6d1e2f3a-4b5c-4d6e-8f70-81a2b3c4d5e6"},
  {"email": "trudy@example.com", "password": "demo-password"}
]}
JSON
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/etc/api-token")
cat >"$STATE/etc/warden.toml" <<TOML
listen = "$LISTEN"
[tunnels]
config_dir = "$STATE/etc"
log_dir = "$STATE/log"
core_binary = "$core"
user = "nobody"
group = "nogroup"
[users]
source = "file://$STATE/etc/users.json"
state_dir = "$STATE/warden-state"
[health]
interval = "2s"
[api]
token_file = "$STATE/etc/api-token"
audit_log = "$STATE/audit.log"
TOML

echo "starting xray-warden"
# Not through in_sandbox: $! must be nsenter itself, whose only child is the warden.
nsenter -t "$systemd_pid" -m -p -C -- "$REPO/target/release/xray-warden" run \
  --config "$STATE/etc/warden.toml" &
nsenter_pid=$!
for _ in $(seq 100); do
  warden_pid=$(first_child "$nsenter_pid")
  [[ -n $warden_pid ]] && break
  sleep 0.05
done
for _ in $(seq 100); do
  curl -fs "http://$LISTEN/ready" >/dev/null && break
  sleep 0.1
done
sleep 6 # let the sampler pass once (every 5 s by default)

cat <<MSG

xray-warden is watching 4 tunnels in a sandboxed systemd:
  metrics:   http://$LISTEN/metrics
  liveness:  http://$LISTEN/live     readiness: http://$LISTEN/ready
  systemctl: nsenter -t $systemd_pid -m -p -C -- systemctl status 'xray-tunnel-*'
Sample:
MSG
curl -fs "http://$LISTEN/metrics" | grep -E '^xray_tunnel_(up|restarts_total|memory_rss_bytes)\{' | sed 's/^/  /'
echo "Users synced through the gRPC API (no restart), per tunnel and inbound:"
curl -fs "http://$LISTEN/metrics" | grep -E '^xray_usersync_applied_users\{' | sed 's/^/  /'
echo "Edit $STATE/etc/users.json and the warden syncs the change within a second."
echo "Health checks (the broken tunnel fails its config test and crash-loops):"
curl -fs "http://$LISTEN/metrics" | grep -E '^xray_tunnel_health_check\{' | grep -E 'broken|eu1' | sed 's/^/  /'
echo "Management CLI: $REPO/target/release/xray-warden tunnels list --config $STATE/etc/warden.toml"
"$REPO/target/release/xray-warden" tunnels list --config "$STATE/etc/warden.toml" | sed 's/^/  /' || true
echo

if [[ -n ${DEMO_SECONDS:-} ]]; then
  sleep "$DEMO_SECONDS"
else
  echo "Ctrl-C stops the demo."
  wait "$nsenter_pid"
fi
