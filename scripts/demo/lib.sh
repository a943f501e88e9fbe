# Helpers of scripts/demo.sh (sourced by it; not run alone).

# Seconds since $1 (an $EPOCHREALTIME), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# A line per stage, with the seconds since the demo started.
stage() { printf '[%6s s] %s\n' "$(since "$DEMO_T0")" "$*"; }

die() {
  echo "demo: $*" >&2
  exit 1
}

# Whether something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets PORT to the first port from $1 up on which nothing listens and that this run has not
# taken yet (a variable, not output: $(...) would lose TAKEN_PORTS).
declare -A TAKEN_PORTS=()
pick_port() {
  PORT=$1
  while [[ -n ${TAKEN_PORTS[$PORT]:-} ]] || listening "$PORT"; do
    PORT=$((PORT + 1))
    ((PORT < 65536)) || die "no free port from $1 up"
  done
  TAKEN_PORTS[$PORT]=1
}

# Sets ADDR to "127.0.0.1:PORT": $1 (an env value) as it is, else the first free port from $2.
pick_addr() {
  if [[ -n $1 ]]; then
    [[ $1 == 127.0.0.1:* ]] || die "$1: the demo listens on 127.0.0.1 only"
    TAKEN_PORTS[${1#127.0.0.1:}]=1
    ADDR=$1
  else
    pick_port "$2"
    ADDR=127.0.0.1:$PORT
  fi
}

# Starts "$@" in the background in a session of its own (a Ctrl-C at the terminal reaches only
# this script, which then stops everything in order), killed by the kernel if this shell dies.
# Sets SPAWNED to its PID.
spawn() {
  setpriv --pdeathsig KILL -- setsid -- "$@" &
  SPAWNED=$!
}

# Stops a PID this script started: SIGTERM, then SIGKILL after $2 seconds (default 10).
stop_pid() {
  local pid=$1 grace=${2:-10} _
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -s TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -s KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Waits until GET $1 answers 2xx; $2 names it; $3 the timeout in seconds.
wait_http() {
  local _
  for _ in $(seq $((${3:-30} * 10))); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  die "$2 did not answer $1 within ${3:-30} s"
}

# Whether the Prometheus query $1 returns at least one series.
prom_has() {
  local out
  out=$(curl -fsG --max-time 5 --data-urlencode "query=$1" "$PROMETHEUS_URL/api/v1/query" 2>/dev/null) &&
    [[ $out == *'"result":[{'* ]]
}

# Whether Prometheus shows alert $1 firing for tunnel $2.
alert_firing() { prom_has "ALERTS{alertname=\"$1\",alertstate=\"firing\",tunnel=\"$2\"}"; }

# A property of a tunnel's unit, as the sandbox's systemd tells it.
unit_prop() { in_sandbox systemctl show -P "$2" "xray-tunnel-$1.service" 2>/dev/null; }
