#!/usr/bin/env bash
# Stop exactly the daemons tests/slurm/start_local_slurm.sh started, by the PIDs it
# recorded in $OPNP_SLURM_DIR/pids (default /tmp/opnp-slurm/pids); nothing is killed by
# name. Jobs still queued are cancelled first; the /etc/slurm/slurm.conf symlink the
# start script made is removed. Packages stay installed; with
# --purge-state the state directory (config, database, logs) is removed as well.
set -uo pipefail

BASE=${OPNP_SLURM_DIR:-/tmp/opnp-slurm}
PIDS=$BASE/pids
export SLURM_CONF=$BASE/etc/slurm.conf

log() { echo "[stop_local_slurm] $*" >&2; }

if [ ! -d "$PIDS" ]; then
    log "nothing to stop: $PIDS does not exist"
    exit 0
fi

if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null; then
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi

# Stop one recorded daemon: SIGTERM, wait up to 15 s, then SIGKILL.
stop() { # stop NAME
    local pidfile=$PIDS/$1.pid pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $1 (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$1 (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}

# Reverse order of start. A SIGTERM is a clean shutdown for mysqld, after which its
# mysqld_safe wrapper exits by itself instead of restarting it.
stop slurmd
stop slurmctld
stop slurmdbd
stop mysqld
stop mysqld_safe
stop munged

# The symlink the start script made, only if it still points at this cluster's config.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then
    rm -f "$SYSTEM_CONF"
fi

if [ "${1:-}" = "--purge-state" ]; then
    log "removing $BASE"
    rm -rf "$BASE"
fi
log "stopped"
