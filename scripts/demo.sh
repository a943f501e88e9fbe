#!/usr/bin/env bash
# The demo of the whole loop, on loopback: a REAL systemd booted in new namespaces
# (scripts/sandbox-boot.sh); xray-warden in it, with users from a file; three tunnels created
# through the warden's own API (PUT /api/v1/tunnels/{id}), each running the real core (Xray-core
# built pinned by scripts/install-xray.sh, or Debian's V2Ray 4.34 where Go is missing);
# Debian's Prometheus with the shipped rules (alerts/) and Alertmanager routing the action
# alerts to the warden's webhook, both configured from deploy/*.example.yml. Everything runs 30
# times faster than shipped (rule durations, restart delay, crash window), derived mechanically by
# examples/demo_stack.rs. It prints the URLs and four things to try.
#
# Usage (as root):
#   scripts/demo.sh              runs until Ctrl-C (or SIGTERM)
#   scripts/demo.sh --scenario   runs the four things to try by itself, reports what happened with
#                                timings, exits 0 only if every expected event was seen in time
# Environment:
#   DEMO_DIR=PATH        the work folder (created; default target/demo/run-XXXX); everything the
#                        demo writes stays in it, and it is kept at the end
#   DEMO_LISTEN, DEMO_PROMETHEUS, DEMO_ALERTMANAGER=127.0.0.1:PORT   where they listen (default:
#                        the first free port from 9550, 9590 and 9593)
#   DEMO_TUNNEL_PORTS_FROM=PORT   the tunnels' ports: the first free ones from PORT (10800)
#   WARDEN_BIN, DEMO_STACK_BIN   prebuilt binaries of xray-warden and of the demo_stack example:
#                        nothing is built when both are given
#   DEMO_CHECK=COMMAND   (--scenario) run with bash -c after the steps, with XW_DEMO_PROMETHEUS,
#                        XW_DEMO_WARDEN and XW_DEMO_ALERTMANAGER (base URLs); its failure fails
#   DEMO_SECONDS=N       (interactive) stop by itself after N seconds
# Ctrl-C or SIGTERM stops everything it started, by PID; the sandbox's cgroups are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly REPO=$PWD
DEMO_T0=$EPOCHREALTIME
# shellcheck source=scripts/demo/lib.sh
source scripts/demo/lib.sh
# shellcheck source=scripts/demo/scenario.sh
source scripts/demo/scenario.sh

MODE=interactive
case ${1:-} in
  '') ;;
  --scenario) MODE=scenario ;;
  *) die "usage: scripts/demo.sh [--scenario]" ;;
esac
[[ $EUID -eq 0 ]] || die "needs root: it boots systemd in new namespaces"

stage "installing what is missing (scripts/install-deps.sh)"
scripts/install-deps.sh
# The tunnels' core: Xray-core (XRAY_BIN, or the pinned build), V2Ray 4.34 when Go is missing.
stage "the tunnels' core (scripts/install-xray.sh)"
if core=$(scripts/install-xray.sh); then
  core_run=("$core" run)
else
  [[ $? -eq 3 ]] || exit 1
  echo "no Xray-core here: the demo's tunnels run V2Ray 4.34"
  core=/usr/bin/v2ray core_run=("$core")
fi
stage "tunnels run $core"

if [[ -n ${WARDEN_BIN:-} && -n ${DEMO_STACK_BIN:-} ]]; then
  stage "using WARDEN_BIN=$WARDEN_BIN and DEMO_STACK_BIN=$DEMO_STACK_BIN"
else
  stage "building xray-warden and the demo_stack example (release; the first build takes minutes)"
  cargo build --release --locked --bin xray-warden --example demo_stack
  stage "built"
fi
warden_bin=${WARDEN_BIN:-$REPO/target/release/xray-warden}
stack_bin=${DEMO_STACK_BIN:-$REPO/target/release/examples/demo_stack}

# The work folder. The bus socket lands at $DIR/run/dbus/system_bus_socket and a unix socket path
# holds 107 bytes, hence the length limit. The warden tests configs as the tunnel user with
# ProtectHome=yes and tunnel units have PrivateTmp=yes, so it may lie neither under /home, /root
# nor /tmp, and the tunnel user must reach it (0711: enter, not list).
if [[ -n ${DEMO_DIR:-} ]]; then
  mkdir -p "$DEMO_DIR"
  DIR=$(readlink -f "$DEMO_DIR")
  [[ -z $(ls -A "$DIR") ]] || die "DEMO_DIR=$DIR is not empty"
else
  root="$REPO/target/demo"
  case "$root" in /home/* | /root/* | /tmp/* | /var/tmp/*) root=/var/lib/xray-warden-demo ;; esac
  ((${#root} <= 45)) || root=/var/lib/xray-warden-demo
  mkdir -p "$root"
  DIR=$(mktemp -d "$root/run-XXXX")
fi
case "$DIR" in /home/* | /root/* | /tmp/* | /var/tmp/*) die "$DIR: not under /home, /root, /tmp or /var/tmp" ;; esac
((${#DIR} <= 60)) || die "$DIR: too long for the bus socket's path; a shorter DEMO_DIR"
chmod 0711 "$DIR"
readonly DIR
mkdir -p "$DIR"/{etc,tunnels,log,state,stack,try,prometheus,alertmanager}

pick_addr "${DEMO_LISTEN:-}" 9550 && WARDEN_ADDR=$ADDR
pick_addr "${DEMO_PROMETHEUS:-}" 9590 && PROMETHEUS_ADDR=$ADDR
pick_addr "${DEMO_ALERTMANAGER:-}" 9593 && ALERTMANAGER_ADDR=$ADDR
WARDEN_URL=http://$WARDEN_ADDR PROMETHEUS_URL=http://$PROMETHEUS_ADDR
ALERTMANAGER_URL=http://$ALERTMANAGER_ADDR
stage "work folder $DIR (kept at the end)"

unshare_pid="" systemd_pid="" nsenter_pid="" warden_pid="" prometheus_pid="" alertmanager_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  trap '' INT TERM
  stage "stopping the demo"
  stop_pid "$prometheus_pid"
  stop_pid "$alertmanager_pid"
  # The warden first (nsenter exits with it); what is left in the sandbox dies with its halt.
  [[ -n $warden_pid ]] && kill -s TERM "$warden_pid" 2>/dev/null || true
  for _ in $(seq 150); do [[ -n $nsenter_pid ]] && kill -0 "$nsenter_pid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$nsenter_pid" 1
  [[ -n $systemd_pid ]] && kill -s RTMIN+3 "$systemd_pid" 2>/dev/null || true
  if [[ -n $unshare_pid ]]; then
    for _ in $(seq 100); do kill -0 "$unshare_pid" 2>/dev/null || break; sleep 0.1; done
    kill -s KILL "$unshare_pid" 2>/dev/null || true
    wait "$unshare_pid" 2>/dev/null || true
  fi
  "$REPO/scripts/sandbox-boot.sh" --cleanup "$DIR" || echo "warning: sandbox cgroups left behind" >&2
  stage "stopped; the work folder stays: $DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

first_child() { cut -d' ' -f1 "/proc/$1/task/$1/children" 2>/dev/null || true; }
in_sandbox() { nsenter -t "$systemd_pid" -m -p -C -- "$@"; }

stage "booting a sandboxed systemd"
spawn scripts/sandbox-boot.sh "$DIR" >"$DIR/boot.log" 2>&1
unshare_pid=$SPAWNED
bus="unix:path=$DIR/run/dbus/system_bus_socket"
for _ in $(seq 300); do
  pid=$(first_child "$unshare_pid")
  if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == systemd ]]; then
    systemd_pid=$pid
    busctl --address="$bus" call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
      org.freedesktop.DBus.Peer Ping >/dev/null 2>&1 && break
  fi
  sleep 0.1
done
[[ -n $systemd_pid ]] || die "the sandbox did not boot (see $DIR/boot.log)"

stage "deriving the monitoring stack from alerts/ and deploy/*.example.yml (demo_stack)"
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/etc/api-token")
TOKEN=$(cat "$DIR/etc/api-token")
node="" crash_window=""
while IFS='=' read -r key value; do
  case $key in node) node=$value ;; crash_window) crash_window=$value ;; esac
done < <("$stack_bin" "$DIR/stack" "$WARDEN_ADDR" "$ALERTMANAGER_ADDR" "$DIR/etc/api-token")
[[ -n $node && -n $crash_window ]] || die "demo_stack printed no node or crash_window"

# The desired users, one a line (the "add a user" command inserts before the last line).
cat >"$DIR/etc/users.json" <<'JSON'
{"users": [
 {"email": "alice@example.com", "id": "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f"}
,{"email": "bob@example.com", "id": "6d1e2f3a-4b5c-4d6e-8f70-81a2b3c4d5e6"}
,{"email": "trudy@example.com", "password": "demo-password"}
]}
JSON
# The warden: the loop proof's settings (tests/loop_proof/node.rs), with the restart delay and
# crash window of the fast stack (demo_stack).
cat >"$DIR/etc/warden.toml" <<TOML
listen = "$WARDEN_ADDR"
[tunnels]
config_dir = "$DIR/tunnels"
log_dir = "$DIR/log"
core_binary = "$core"
user = "nobody"
group = "nogroup"
unit_template = "$DIR/stack/tunnel.service.template"
[users]
source = "file://$DIR/etc/users.json"
state_dir = "$DIR/state"
[health]
interval = "1s"
crash_window = "$crash_window"
[sampler]
interval = "1s"
[api]
token_file = "$DIR/etc/api-token"
audit_log = "$DIR/audit.log"
[remediation]
node = "$node"
# Shorter than the fast rule's for: (the shipped 5m is as long as the shipped rule's for:).
min_orphan_age = "3s"
TOML

stage "starting xray-warden on $WARDEN_URL"
# nsenter forks into the PID namespace: the warden is its only child.
spawn nsenter -t "$systemd_pid" -m -p -C -- env RUST_LOG=info NO_COLOR=1 "$warden_bin" run \
  --config "$DIR/etc/warden.toml" >"$DIR/warden.log" 2>&1
nsenter_pid=$SPAWNED
for _ in $(seq 100); do
  warden_pid=$(first_child "$nsenter_pid")
  [[ -n $warden_pid ]] && break
  sleep 0.05
done
wait_http "$WARDEN_URL/ready" "xray-warden (see $DIR/warden.log)" 30

# Three tunnels through the warden's own API: the API behind a dokodemo-door inbound, VLESS and
# Trojan inbounds without users (the warden syncs them in from users.json).
port=${DEMO_TUNNEL_PORTS_FROM:-10800}
declare -A VLESS_PORT=()
for id in eu1 eu2 us1; do
  pick_port "$port" && api=$PORT
  pick_port "$port" && vless=$PORT
  pick_port "$port" && trojan=$PORT
  port=$((trojan + 1))
  VLESS_PORT[$id]=$vless
  cat >"$DIR/try/tunnel-$id.json" <<JSON
{"log": {"loglevel": "warning"},
 "api": {"tag": "api", "services": ["HandlerService", "StatsService"]},
 "stats": {},
 "policy": {"system": {"statsInboundUplink": true, "statsInboundDownlink": true}},
 "inbounds": [
  {"tag": "api", "listen": "127.0.0.1", "port": $api, "protocol": "dokodemo-door", "settings": {"address": "127.0.0.1"}},
  {"tag": "vless-in", "listen": "127.0.0.1", "port": $vless, "protocol": "vless", "settings": {"clients": [], "decryption": "none"}},
  {"tag": "trojan-in", "listen": "127.0.0.1", "port": $trojan, "protocol": "trojan", "settings": {"clients": []}}
 ],
 "outbounds": [{"protocol": "freedom"}],
 "routing": {"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}}
JSON
  stage "PUT $WARDEN_URL/api/v1/tunnels/$id"
  curl -fsS -X PUT -H "Authorization: Bearer $TOKEN" --data-binary "@$DIR/try/tunnel-$id.json" \
    "$WARDEN_URL/api/v1/tunnels/$id" >"$DIR/try/put-$id.out" ||
    die "creating tunnel $id failed: $(cat "$DIR/try/put-$id.out")"
done

stage "starting Alertmanager on $ALERTMANAGER_URL and Prometheus on $PROMETHEUS_URL"
cd "$DIR/stack"
spawn /usr/bin/prometheus-alertmanager --config.file="$DIR/stack/alertmanager.yml" \
  --storage.path="$DIR/alertmanager" --web.listen-address="$ALERTMANAGER_ADDR" \
  --cluster.listen-address= >"$DIR/alertmanager.log" 2>&1
alertmanager_pid=$SPAWNED
spawn /usr/bin/prometheus --config.file="$DIR/stack/prometheus.yml" \
  --storage.tsdb.path="$DIR/prometheus" --web.listen-address="$PROMETHEUS_ADDR" \
  >"$DIR/prometheus.log" 2>&1
prometheus_pid=$SPAWNED
cd "$REPO"
wait_http "$ALERTMANAGER_URL/-/ready" Alertmanager 30
wait_http "$PROMETHEUS_URL/-/ready" Prometheus 60
for _ in $(seq 100); do
  prom_has 'up{job="xray-warden"} == 1' && break
  sleep 0.2
done
prom_has 'up{job="xray-warden"} == 1' || die "Prometheus does not scrape the warden (see $DIR/prometheus.log)"
stage "Prometheus scrapes the warden"

# The four things to try, as the commands printed below (and run by --scenario).
KILL_TUNNEL=eu1 USER_TUNNEL=us1 ORPHAN_TUNNEL=eu2 BREAK_TUNNEL=us1
SYSTEMCTL="nsenter -t $systemd_pid -m -p -C -- systemctl"
carol_id=9b2e4c1d-7a3f-4e5b-8c6d-0e1f2a3b4c5d
pick_port "$port" && socks_port=$PORT
cat >"$DIR/try/carol-client.json" <<JSON
{"log": {"loglevel": "warning"},
 "inbounds": [{"listen": "127.0.0.1", "port": $socks_port, "protocol": "socks", "settings": {"udp": false}}],
 "outbounds": [{"protocol": "vless", "settings": {"vnext": [{"address": "127.0.0.1", "port": ${VLESS_PORT[$USER_TUNNEL]},
   "users": [{"id": "$carol_id", "encryption": "none"}]}]}}]}
JSON
cat >"$DIR/try/connect-as-carol" <<SH
#!/usr/bin/env bash
# Runs the core as a VLESS client of tunnel $USER_TUNNEL with carol's id (SOCKS on 127.0.0.1:$socks_port),
# and fetches the warden's /live through it: the tunnel's freedom outbound makes the connection.
# Argument: seconds to keep trying (default 10; 0 = once).
set -u
${core_run[*]} -config $DIR/try/carol-client.json >$DIR/try/carol-client.log 2>&1 &
client=\$!
trap 'kill \$client 2>/dev/null; wait \$client 2>/dev/null' EXIT
for _ in \$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$socks_port) 2>/dev/null && break; sleep 0.1; done
deadline=\$((SECONDS + \${1:-10}))
while true; do
  if body=\$(curl -fsS --max-time 3 --socks5-hostname 127.0.0.1:$socks_port $WARDEN_URL/live 2>&1); then
    echo "connected as carol through tunnel $USER_TUNNEL: the warden's /live answered: \$body"
    exit 0
  fi
  ((SECONDS < deadline)) || break
  sleep 0.5
done
echo "carol could not connect through tunnel $USER_TUNNEL: \$body" >&2
exit 1
SH
chmod 0755 "$DIR/try/connect-as-carol"
TRY_KILL="for i in 1 2 3 4 5 6; do $SYSTEMCTL kill -s KILL xray-tunnel-$KILL_TUNNEL.service; sleep 1; done"
TRY_USER="sed -i '\$i ,{\"email\": \"carol@example.com\", \"id\": \"$carol_id\"}' $DIR/etc/users.json && $DIR/try/connect-as-carol"
TRY_ORPHAN="rm $DIR/tunnels/xray-$ORPHAN_TUNNEL.json"
TRY_BREAK="echo '{\"inbounds\": [{\"protocol\": \"no-such-protocol\"}]}' > $DIR/tunnels/xray-$BREAK_TUNNEL.json"

if [[ $MODE == scenario ]]; then
  stage "the scenario: the four things to try, one after the other"
  run_scenario
  exit $?
fi

cat <<MSG

The demo runs (work folder $DIR):
  Prometheus:     $PROMETHEUS_URL/graph   alerts: $PROMETHEUS_URL/alerts
  Alertmanager:   $ALERTMANAGER_URL
  warden metrics: $WARDEN_URL/metrics
  warden API:     curl -H "Authorization: Bearer $TOKEN" $WARDEN_URL/api/v1/tunnels
  CLI:            $warden_bin tunnels list --config $DIR/etc/warden.toml
  systemctl:      $SYSTEMCTL status 'xray-tunnel-*'
Node "$node", tunnels eu1 eu2 us1 ($core), users from $DIR/etc/users.json.
Every duration of the shipped rules is divided by 30 (for: 5m is 10 s).

Things to try, one command each:
1. Kill tunnel $KILL_TUNNEL's core six times: watch its restarts and the XrayTunnelCrashLooping alert
     $TRY_KILL
   then: curl -s $WARDEN_URL/metrics | grep 'restarts_total{tunnel="$KILL_TUNNEL"'   and $PROMETHEUS_URL/alerts
2. Add user carol to the users file: applied within a second, no restart; then connect as her
     $TRY_USER
3. Create an orphan (delete a running tunnel's config): the alert fires, the warden cleans it up by itself
     $TRY_ORPHAN
   then: grep cleanup_orphan $DIR/audit.log
4. Break tunnel $BREAK_TUNNEL's config: its config_valid health check fails, then XrayTunnelConfigInvalid
     $TRY_BREAK
   then: curl -s $WARDEN_URL/metrics | grep 'health_check{tunnel="$BREAK_TUNNEL"'
(scripts/demo.sh --scenario runs these four by itself.)

MSG
if [[ -n ${DEMO_SECONDS:-} ]]; then
  sleep "$DEMO_SECONDS"
else
  echo "Ctrl-C stops the demo."
  wait "$nsenter_pid"
fi
