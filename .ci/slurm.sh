#!/usr/bin/env bash
# One-node SLURM cluster on this machine, for tests only.
#
# Brings up munged + slurmctld + slurmd (Debian bookworm's Slurm 22.05) with a
# single partition "debug" holding this host, so that `-p executor slurm` sweeps
# (tests/test_slurm.py, submitit: sbatch + srun inside the job) run against a real
# scheduler. Needs root (apt install, munge key, daemons run as root). There is no
# systemd here, so the daemons are started directly; no cgroup plugins are used.
#
# Usage: .ci/slurm.sh up       install if needed, configure, start, wait for the node to be idle
#        .ci/slurm.sh down     stop slurmd, slurmctld and munged
#        .ci/slurm.sh status   daemons + sinfo; exit 0 if the node is usable
#        .ci/slurm.sh jobcomp  print the job-completion log (one line per finished job)
# Exit status: 0 done, 1 the cluster did not come up, 2 usage, 3 not root, 4 the packages could not be installed.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by .ci/slurm.sh (one-node test cluster)"
LOGDIR=/var/log/slurm
STATEDIR=/var/lib/slurm
JOBCOMP=$LOGDIR/jobcomp.log
NODE=$(hostname -s)
DAEMONS=(munged slurmctld slurmd)

need_root() { [ "$(id -u)" = 0 ] || { echo "slurm.sh: SLURM needs root (apt, munge key, daemons)" >&2; exit 3; }; }
running() { pgrep -x "$1" >/dev/null 2>&1; }
node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 | tr -d '*~#' || true; }

install_pkgs() {
  local missing=0 d
  for d in slurmctld slurmd munged; do command -v "$d" >/dev/null 2>&1 || [ -x "/usr/sbin/$d" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  local pkgs=(slurm-wlm munge)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${pkgs[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${pkgs[@]}"; } \
    || { echo "slurm.sh: could not install ${pkgs[*]} from Debian's packages (apt-get failed: no package source reachable?)" >&2; exit 4; }
}

start_munge() {
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  running munged || runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "slurm.sh: munge does not work (munge -n | unmunge failed)" >&2; exit 1
}

write_conf() {  # prints "changed" when the file was (re)written
  [ -f "$CONF" ] && ! grep -qxF "$MARK" "$CONF" && { echo "slurm.sh: $CONF not ours; moved to $CONF.orig" >&2; mv "$CONF" "$CONF.orig"; }
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p /etc/slurm "$LOGDIR" "$STATEDIR/slurmctld" "$STATEDIR/slurmd"
  cat >/tmp/slurm.conf.$$ <<EOF
$MARK
ClusterName=eib
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
StateSaveLocation=$STATEDIR/slurmctld
SlurmdSpoolDir=$STATEDIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if cmp -s /tmp/slurm.conf.$$ "$CONF"; then rm -f /tmp/slurm.conf.$$
  else mv /tmp/slurm.conf.$$ "$CONF" && chmod 0644 "$CONF" && echo changed; fi
}

stop() {  # stop the given daemons (pid file first, then by exact name), wait until gone
  local d pf
  for d in "$@"; do
    pf=/run/$d.pid; [ "$d" = munged ] && pf=/run/munge/munged.pid
    [ -s "$pf" ] && kill "$(cat "$pf")" 2>/dev/null || true
    pkill -x "$d" 2>/dev/null || true
  done
  for _ in $(seq 30); do
    local alive=0; for d in "$@"; do running "$d" && alive=1; done
    [ "$alive" = 0 ] && return 0; sleep 0.5
  done
  for d in "$@"; do pkill -9 -x "$d" 2>/dev/null || true; done
}

up() {
  need_root; install_pkgs; start_munge
  [ "$(write_conf)" = changed ] && stop slurmd slurmctld
  running slurmctld || slurmctld
  running slurmd || slurmd
  local st
  for _ in $(seq 60); do
    st=$(node_state)
    case "$st" in
      idle|mixed|allocated|completing) sinfo; return 0 ;;
      down|drain*|drained) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  echo "slurm.sh: node $NODE not idle after 60 s (state: ${st:-none})" >&2
  tail -n 20 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" /var/log/munge/munged.log >&2 2>/dev/null || true
  exit 1
}

down() {  # cancel leftover jobs first, so that no job processes outlive slurmd
  if running slurmctld && [ -n "$(squeue -h -o %A 2>/dev/null)" ]; then
    squeue -h -o %A | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 20); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  stop slurmd slurmctld munged
}

status() {
  local d st
  for d in "${DAEMONS[@]}"; do
    if running "$d"; then echo "$d: running (pid $(pgrep -x "$d" | tr '\n' ' '))"; else echo "$d: not running"; fi
  done
  sinfo 2>&1 || true
  st=$(node_state)
  case "$st" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  jobcomp) cat "$JOBCOMP" 2>/dev/null || echo "slurm.sh: no job-completion log at $JOBCOMP" >&2 ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
