# `scripts/demo.sh --scenario` (sourced by it): runs the four things to try, the same commands the
# interactive demo prints, and reports each event it waits for with the seconds since the step
# started. Every event has a bound; one that is not seen in time fails the scenario.

SCENARIO_FAILED=0

# expect STEP BOUND WHAT CMD...: polls CMD until it succeeds, for at most BOUND seconds after the
# step started; prints "STEP: WHAT after N s", or a FAIL line.
expect() {
  local step=$1 bound=$2 what=$3
  shift 3
  until "$@"; do
    if awk -v a="$(since "$STEP_T0")" -v b="$bound" 'BEGIN { exit !(a > b) }'; then
      echo "$step: FAIL: $what: not seen within $bound s"
      SCENARIO_FAILED=1
      return 1
    fi
    sleep 0.25
  done
  echo "$step: $what after $(since "$STEP_T0") s"
}

begin_step() {
  STEP_T0=$EPOCHREALTIME
  echo
  echo "$1: \$ $2"
}

# Whether background job $1 has finished with status 0 (reaped here; call once it stopped).
job_ok() {
  local pid=$1
  ! kill -0 "$pid" 2>/dev/null || return 1
  wait "$pid"
}

restarted_enough() { prom_has "xray_tunnel_observed_restarts_total{tunnel=\"$KILL_TUNNEL\",reason=\"auto\"} >= 5"; }
check_failing() { prom_has "xray_tunnel_health_check{tunnel=\"$1\",check=\"$2\"} == 0"; }
applied_users() { prom_has "xray_usersync_applied_users{tunnel=\"$USER_TUNNEL\",inbound=\"vless-in\"} == $1"; }
orphan_reported() { prom_has "xray_tunnel_orphaned{tunnel=\"$ORPHAN_TUNNEL\",kind=\"unit_without_config\"} == 1"; }
unit_gone() {
  [[ ! -e $DIR/units/xray-tunnel-$ORPHAN_TUNNEL.service && $(unit_prop "$ORPHAN_TUNNEL" LoadState) == not-found ]]
}
audited_done() {
  grep -Eq "\"action\":\"alert\.cleanup_orphan\".*\"target\":\"$ORPHAN_TUNNEL\".*\"result\":\"done\"" \
    "$DIR/audit.log" 2>/dev/null
}
same_main_pid() { [[ $(unit_prop "$1" MainPID) == "$2" && $2 != 0 ]]; }

run_scenario() {
  local started=$EPOCHREALTIME bg pid
  # A step that fails is reported and the next one still runs.
  set +e

  begin_step kill "$TRY_KILL"
  bash -c "$TRY_KILL" >"$DIR/try/kill.out" 2>&1 &
  bg=$!
  expect kill 30 "restart count (warden-observed auto restarts) at 5" restarted_enough
  expect kill 40 "health check not_crash_looping failing" check_failing "$KILL_TUNNEL" not_crash_looping
  expect kill 60 "XrayTunnelCrashLooping alert firing" alert_firing XrayTunnelCrashLooping "$KILL_TUNNEL"
  wait "$bg" || true

  begin_step user "$TRY_USER"
  pid=$(unit_prop "$USER_TUNNEL" MainPID)
  if "$DIR/try/connect-as-carol" 0 >"$DIR/try/refused.out" 2>&1; then
    echo "user: FAIL: carol could connect before she was added"
    SCENARIO_FAILED=1
  else
    echo "user: connecting as carol before she is in the users file is refused (as it must be)"
  fi
  bash -c "$TRY_USER" >"$DIR/try/user.out" 2>&1 &
  bg=$!
  expect user 20 "carol applied to $USER_TUNNEL's VLESS inbound (3 users)" applied_users 3
  expect user 30 "connected through $USER_TUNNEL as carol" job_ok "$bg" || sed 's/^/  /' "$DIR/try/user.out"
  expect user 1 "the core was not restarted (MainPID $pid unchanged)" same_main_pid "$USER_TUNNEL" "$pid"

  begin_step orphan "$TRY_ORPHAN"
  bash -c "$TRY_ORPHAN"
  expect orphan 15 "warden reports $ORPHAN_TUNNEL as an orphan (unit_without_config)" orphan_reported
  expect orphan 45 "XrayTunnelOrphaned alert firing" alert_firing XrayTunnelOrphaned "$ORPHAN_TUNNEL"
  expect orphan 60 "the warden cleaned $ORPHAN_TUNNEL up by itself (unit gone)" unit_gone
  if expect orphan 62 "audit log: alert.cleanup_orphan done" audited_done; then
    grep '"action":"alert.cleanup_orphan"' "$DIR/audit.log" | sed 's/^/  /'
  fi

  begin_step config "$TRY_BREAK"
  pid=$(unit_prop "$BREAK_TUNNEL" MainPID)
  bash -c "$TRY_BREAK"
  expect config 15 "health check config_valid failing" check_failing "$BREAK_TUNNEL" config_valid
  expect config 60 "XrayTunnelConfigInvalid alert firing" alert_firing XrayTunnelConfigInvalid "$BREAK_TUNNEL"
  expect config 1 "the running core kept running (MainPID $pid unchanged)" same_main_pid "$BREAK_TUNNEL" "$pid"

  if [[ -n ${DEMO_CHECK:-} ]]; then
    STEP_T0=$EPOCHREALTIME
    echo
    echo "check: \$ $DEMO_CHECK"
    if XW_DEMO_PROMETHEUS=$PROMETHEUS_URL XW_DEMO_WARDEN=$WARDEN_URL \
      XW_DEMO_ALERTMANAGER=$ALERTMANAGER_URL bash -c "$DEMO_CHECK"; then
      echo "check: DEMO_CHECK passed after $(since "$STEP_T0") s"
    else
      echo "check: FAIL: DEMO_CHECK failed"
      SCENARIO_FAILED=1
    fi
  fi

  echo
  if ((SCENARIO_FAILED)); then
    echo "scenario: FAILED after $(since "$started") s (work folder kept: $DIR)"
    return 1
  fi
  echo "scenario: every step passed in $(since "$started") s"
}
