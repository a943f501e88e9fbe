#!/usr/bin/env bash
# Boots a REAL systemd as PID 1 of new PID, mount, cgroup and UTS namespaces, for integration
# tests, benchmarks and demos that need a real systemd on a real D-Bus system bus.
#
# Usage (as root):
#   sandbox-boot.sh STATE_DIR [--cgroup-v2]   boot; runs in the foreground until the sandbox halts
#   sandbox-boot.sh STATE_DIR --root ROOT     boot the systemd of another root (see below)
#   sandbox-boot.sh --cleanup STATE_DIR       after the halt: remove the sandbox's emptied cgroups
#
# STATE_DIR (created if missing) holds everything the host needs to reach the sandbox:
#   STATE_DIR/run      bound over the sandbox's /run; the bus is run/dbus/system_bus_socket
#   STATE_DIR/units    bound over the sandbox's /etc/systemd/system; write unit files here,
#                      then run `systemctl daemon-reload` inside
#   STATE_DIR/console  bound over the sandbox's /dev/console
#
# The process running this script becomes `unshare`; the sandbox's systemd is its only child
# (read its host PID from /proc/<unshare pid>/task/<unshare pid>/children). Halt the sandbox with
# `kill -s SIGRTMIN+3 <that PID>` (SIGTERM is ignored); `unshare` then exits. `--kill-child=SIGKILL`
# makes the whole namespace die if `unshare` is killed.
#
# --cgroup-v2 mounts only cgroup2 at the sandbox's /sys/fs/cgroup, so its systemd runs in "unified"
# mode. On this hybrid host every controller is bound to a v1 hierarchy, so that systemd gets no
# controllers: CPUUsageNSec is filled (cpu.stat exists in every cgroup2 group) but MemoryCurrent
# and TasksCurrent are not.
#
# --root ROOT boots ROOT's own systemd on ROOT's files (a debootstrapped Debian, for installing a
# package into), in a network namespace of its own (just loopback), so that whatever it starts
# binds no port of the host's. ROOT is never written to: it is the read-only lower layer of an
# overlay whose upper layer is STATE_DIR/upper (everything the sandbox changed, whiteouts for what
# it deleted); the merged root is mounted in the sandbox's mount namespace only, at its "/". Its
# /run is STATE_DIR/run as above; the masks and the target go to its /run/systemd/system, so ROOT's
# own /etc/systemd/system stays its own (a package's enablement links land there). Run commands in
# it with `nsenter -t <systemd pid> -m -p -C -n -r -w`.
#
# Host safety (see the team notes, systemd-sandbox.md): the root filesystem is SHARED with the host,
# so everything systemd would write at boot is redirected (/tmp, /run, /etc/systemd/system,
# /dev/console) or masked. This script never kills anything; --cleanup only rmdir()s cgroups named
# after this sandbox, and rmdir refuses any cgroup that still has processes or children.
set -euo pipefail

readonly CGROUP_ROOT=/sys/fs/cgroup
# Hierarchies in which the booting shell MOVES INTO its sub-cgroup before `unshare --cgroup`, so
# that the namespace's root (what /proc/PID/cgroup is relative to, and what systemd builds its
# tree under) is that sub-cgroup. In every other hierarchy (cpu, memory, devices, ...) the caller's
# processes stay where they are (the memory cgroup we start in is left alone) and the sandbox sees
# its sub-cgroup through a bind mount instead; see mount_hybrid_cgroups.
readonly OWN_HIERARCHIES=(systemd pids unified)
# Every cgroup this script creates is named with this prefix; harnesses recognise stale ones by it.
readonly CGROUP_PREFIX=xray-warden-
readonly TARGET=warden-sandbox.target
# Units that would write to the shared root filesystem or to host-wide kernel state, or that are
# pointless here. The first group is the verified list of systemd-sandbox.md (among them
# systemd-tmpfiles-setup, which would EMPTY THE HOST'S /tmp without the private tmpfs below).
readonly MASKED_UNITS=(
  systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service systemd-tmpfiles-clean.timer
  systemd-sysctl.service systemd-binfmt.service
  proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
  systemd-modules-load.service systemd-remount-fs.service systemd-sysusers.service
  systemd-update-utmp.service systemd-journal-flush.service systemd-random-seed.service
  systemd-timesyncd.service
  # They write /etc, /var or the machine-id whenever their conditions hold.
  systemd-machine-id-commit.service systemd-firstboot.service systemd-update-done.service
  systemd-journal-catalog-update.service systemd-hwdb-update.service ldconfig.service
  systemd-pstore.service systemd-repart.service
  systemd-pcrphase.service systemd-pcrphase-sysinit.service
  # Kernel API mounts: they would create mount points in the host's devtmpfs; nothing needs them.
  dev-hugepages.mount dev-mqueue.mount sys-fs-fuse-connections.mount
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
)

SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF

die() {
  echo "sandbox-boot: $*" >&2
  exit 1
}

usage() {
  die "usage: $0 STATE_DIR [--cgroup-v2 | --root ROOT] | $0 --cleanup STATE_DIR"
}

# The cgroup name of a sandbox: the prefix plus STATE_DIR's basename, so that sandboxes with
# different state dirs never share a cgroup.
cgroup_name() {
  local base
  base=$(basename "$1")
  case $base in
    '' | . | .. | */* | *[[:space:]]*) die "unusable state dir name: '$1'" ;;
  esac
  echo "${CGROUP_PREFIX}${base}"
}

# ---------------------------------------------------------------------------------------------
# cgroup helpers
# ---------------------------------------------------------------------------------------------

# Prints "MOUNTPOINT OPTIONS" for each cgroup hierarchy mounted under /sys/fs/cgroup, the cgroup2
# one first. OPTIONS names the hierarchy for `mount -o` ("cpu", "none,name=systemd"); "-" stands
# for cgroup2.
cgroup_hierarchies() {
  local mountpoint fstype superopts
  awk '{ i = 7; while ($i != "-") i++; print $5, $(i + 1), $(i + 3) }' /proc/self/mountinfo |
    while read -r mountpoint fstype superopts; do
      case $mountpoint in "$CGROUP_ROOT"/*) ;; *) continue ;; esac
      case $fstype in
        cgroup2) echo "$mountpoint -" ;;
        cgroup) echo "$mountpoint $(hierarchy_options "$superopts")" ;;
      esac
    done | awk '$2 == "-" { print; next } { rest = rest $0 "\n" } END { printf "%s", rest }'
}

# Keeps only what names a v1 hierarchy (its controllers, or none,name=X): mounting an existing
# hierarchy again with other flags would be refused.
hierarchy_options() {
  local opt out=""
  local -a fields
  IFS=, read -ra fields <<<"$1"
  for opt in "${fields[@]}"; do
    case $opt in
      name=*) out+=",none,$opt" ;;
      *) if grep -q "^${opt}[[:space:]]" /proc/cgroups; then out+=",$opt"; fi ;;
    esac
  done
  echo "${out#,}"
}

# The host directory of the sandbox's sub-cgroup NAME in the hierarchy at MOUNTPOINT: a child of
# the cgroup this process is in (per /proc/self/cgroup), so the boot and a --cleanup started from
# the same place agree on it.
sub_cgroup_dir() {
  local mountpoint=$1 opts=$2 name=$3 key own
  key=${opts#none,}
  [ "$key" != - ] || key=""
  own=$(awk -F: -v key="$key" '$2 == key { sub(/^[^:]*:[^:]*:/, ""); print; exit }' \
    /proc/self/cgroup)
  [ -n "$own" ] || die "this process is in no cgroup of $mountpoint"
  echo "$mountpoint${own%/}/$name"
}

is_own_hierarchy() {
  local h
  for h in "${OWN_HIERARCHIES[@]}"; do
    [ "$(basename "$1")" != "$h" ] || return 0
  done
  return 1
}

# Mounts the hierarchy that OPTIONS names (see cgroup_hierarchies) at WHERE.
mount_hierarchy() {
  local opts=$1 where=$2
  if [ "$opts" = - ]; then
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$where"
  else
    mount -t cgroup -o "nosuid,nodev,noexec,$opts" cgroup "$where"
  fi
}

# ---------------------------------------------------------------------------------------------
# Outer part, in the host's namespaces.
# ---------------------------------------------------------------------------------------------
outer() {
  local state=$1 v2=$2 name mountpoint opts dir
  # With --root, $3 is ROOT.
  mkdir -p "$state/run" "$state/units"
  : >"$state/console"
  state=$(readlink -f "$state")
  name=$(cgroup_name "$state")
  mountpoint -q "$CGROUP_ROOT/unified" || die "expected a hybrid cgroup host ($CGROUP_ROOT/unified)"

  # A sub-cgroup in every hierarchy; in ours this shell (and so everything it execs) moves in, and
  # `unshare --cgroup` makes that the namespace's root. The cgroup2 one comes first: while any of
  # a sandbox's cgroups exists, that one does, so stale sweeps need to look for it alone.
  while read -r mountpoint opts; do
    dir=$(sub_cgroup_dir "$mountpoint" "$opts" "$name")
    mkdir "$dir" || die "cannot create $dir (left by an earlier run? try --cleanup $state)"
    if is_own_hierarchy "$mountpoint"; then
      echo $$ >"$dir/cgroup.procs"
    fi
  done < <(cgroup_hierarchies)

  # --uts: systemd sets the hostname at boot; it must not rename the host.
  if [ "$v2" = --root ]; then
    exec unshare --pid --fork --mount --mount-proc --cgroup --uts --net --kill-child=SIGKILL \
      -- "$SELF" --inner-root "$state" "$3"
  fi
  exec unshare --pid --fork --mount --mount-proc --cgroup --uts --kill-child=SIGKILL \
    -- "$SELF" --inner "$state" "$v2"
}

# ---------------------------------------------------------------------------------------------
# Inner part: PID 1 of the new PID namespace, in a private copy of the host's mounts.
# ---------------------------------------------------------------------------------------------
inner() {
  local state=$1 v2=$2
  # Nothing mounted from here on may propagate back to the host (unshare already defaults to
  # private propagation; this makes it explicit).
  mount --make-rprivate /
  # FIRST the private /tmp: a later mistake then cannot reach the host's /tmp.
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
  mount --bind "$state/run" /run
  mount --bind "$state/units" /etc/systemd/system
  # systemd as PID 1 reopens /dev/console, which is the host's real console.
  mount --bind "$state/console" /dev/console
  # Read-only kernel tunables and sysfs, as container managers do: systemd would otherwise raise
  # host-wide limits in /proc/sys. "bind,remount" changes only this namespace's mount, never the
  # superblock the host shares.
  mount --bind /proc/sys /proc/sys
  mount -o bind,remount,ro /proc/sys
  mount -o bind,remount,ro /sys

  if [ "$v2" = --cgroup-v2 ]; then
    # Inside the cgroup namespace the cgroup2 root is our sub-cgroup of the unified hierarchy.
    mount_hierarchy - "$CGROUP_ROOT"
  else
    mount_hybrid_cgroups "$(cgroup_name "$state")"
  fi

  write_units "$state/units"
  # The journal lives in STATE_DIR/run: keep it small, and keep the host's kernel log out of it.
  mkdir -p /run/systemd/journald.conf.d
  printf '[Journal]\nRuntimeMaxUse=32M\nReadKMsg=no\n' >/run/systemd/journald.conf.d/sandbox.conf
  cd /
  # A clean environment: nothing of the caller's (NOTIFY_SOCKET, LISTEN_FDS, ...) reaches systemd.
  exec env -i container=xray-warden-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit="$TARGET"
}

# Inner part of --root: the same redirections and masks as inner, then ROOT's systemd on an overlay
# of ROOT, moved to "/" (as switch_root does) so that systemd and everything it runs see only ROOT.
inner_root() {
  local state=$1 lower=$2 new=$1/rootfs
  mount --make-rprivate /
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
  mount --bind /proc/sys /proc/sys
  mount -o bind,remount,ro /proc/sys
  mount -o bind,remount,ro /sys
  mount_hybrid_cgroups "$(cgroup_name "$state")"

  mkdir -p "$state/upper" "$state/work" "$new"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$state/upper,workdir=$state/work" "$new"
  # The API file systems prepared above (this PID namespace's /proc, the read-only /sys with the
  # sandbox's own cgroups), the host's /dev as in the default mode, and the sandbox's own /run,
  # /tmp and console.
  mount --rbind /proc "$new/proc"
  mount --rbind /sys "$new/sys"
  mount --rbind /dev "$new/dev"
  mount --bind "$state/console" "$new/dev/console"
  mount --bind "$state/run" "$new/run"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$new/tmp"

  mkdir -p "$new/run/systemd/system" "$new/run/systemd/journald.conf.d"
  write_units "$new/run/systemd/system"
  # Volatile: ROOT's /var/log/journal exists, and the journal must not reach the overlay.
  printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\nReadKMsg=no\n' \
    >"$new/run/systemd/journald.conf.d/sandbox.conf"
  cd "$new"
  mount --move . /
  exec chroot . env -i container=xray-warden-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit="$TARGET"
}

# Mounts every host cgroup hierarchy again on a fresh tmpfs, each showing the sandbox's sub-cgroup
# NAME as its root.
mount_hybrid_cgroups() {
  local name=$1 hierarchies mountpoint opts scratch=/tmp/hierarchy
  # Read before the tmpfs hides the host's mounts.
  hierarchies=$(cgroup_hierarchies)
  mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs "$CGROUP_ROOT"
  mkdir -p "$scratch"
  while read -r mountpoint opts; do
    mkdir -p "$mountpoint"
    if is_own_hierarchy "$mountpoint"; then
      # We moved in before unsharing, so the namespace's root already is the sub-cgroup.
      mount_hierarchy "$opts" "$mountpoint"
    else
      # Here the namespace's root is the caller's cgroup, which the sandbox must not manage:
      # systemd would create init.scope and system.slice there, shared by all sandboxes, and
      # would try to migrate the caller's processes. It gets only its own sub-cgroup.
      mount_hierarchy "$opts" "$scratch"
      mount --bind "$scratch/$name" "$mountpoint"
      umount "$scratch"
    fi
  done <<<"$hierarchies"
  rmdir "$scratch"
}

write_units() {
  local dir=$1 unit
  for unit in "${MASKED_UNITS[@]}"; do
    ln -sfn /dev/null "$dir/$unit"
  done
  # dbus.socket pulls in sysinit.target (default dependencies) and nothing else of a normal boot.
  cat >"$dir/$TARGET" <<'UNIT'
[Unit]
Description=xray-warden test sandbox
Requires=dbus.socket
After=dbus.socket
UNIT
}

# ---------------------------------------------------------------------------------------------
# Cleanup, in the host's namespaces, after the sandbox halted. Must run from the cgroups the boot
# was started from (the same test process or shell, or a child of it).
# ---------------------------------------------------------------------------------------------
cleanup() {
  local name mountpoint opts dir failed=0
  name=$(cgroup_name "$1")
  dir=$(sub_cgroup_dir "$CGROUP_ROOT/unified" - "$name")
  # Every process of the sandbox is in this cgroup2 subtree. Removing the emptied cgroups of a
  # live systemd would confuse it, so refuse while anything runs there (after a short grace for
  # processes that are still exiting).
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    grep -qx 'populated 1' "$dir/cgroup.events" 2>/dev/null || break
    sleep 0.2
  done
  if grep -qx 'populated 1' "$dir/cgroup.events" 2>/dev/null; then
    die "sandbox $name still has processes; halt it first"
  fi
  # Reversed, so that the cgroup2 one goes last (see outer).
  while read -r mountpoint opts; do
    dir=$(sub_cgroup_dir "$mountpoint" "$opts" "$name")
    [ -d "$dir" ] || continue
    remove_cgroup_tree "$dir" || failed=1
  done < <(cgroup_hierarchies | tac)
  [ "$failed" = 0 ] || die "some cgroups of $name could not be removed"
}

# rmdir()s a cgroup and its children, deepest first. rmdir refuses a cgroup that has processes or
# children, so nothing populated is touched. The kernel may need a moment after the last process
# exited before it lets go of a cgroup, hence the retries.
remove_cgroup_tree() {
  local dir=$1 _
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$dir" ] || return 0
    sleep 0.2
  done
  find "$dir" -depth -type d -exec rmdir {} +
}

main() {
  [ $# -ge 1 ] || usage
  case $1 in
    --cleanup)
      [ $# -eq 2 ] || usage
      cleanup "$2"
      ;;
    --inner)
      [ $# -eq 3 ] || usage
      inner "$2" "$3"
      ;;
    --inner-root)
      [ $# -eq 3 ] || usage
      inner_root "$2" "$3"
      ;;
    -*) usage ;;
    *)
      case ${2-} in
        --root)
          [ $# -eq 3 ] && [ -d "$3" ] || usage
          outer "$1" --root "$(readlink -f "$3")"
          ;;
        '' | --cgroup-v2)
          [ $# -le 2 ] || usage
          outer "$1" "${2-}"
          ;;
        *) usage ;;
      esac
      ;;
  esac
}

main "$@"
