#!/usr/bin/env bash
# Install and start a real single-node SLURM cluster on this machine, with accounting.
#
# What it starts (each daemon directly: service scripts are often blocked in containers):
#   munged      authentication between the SLURM daemons and commands
#   mysqld      MariaDB, the accounting database behind slurmdbd
#   slurmdbd    accounting daemon; snakemake-executor-plugin-slurm reads job states
#               with `sacct`, and without accounting it never sees a job finish
#   slurmctld   controller
#   slurmd      the compute node (this host, all its CPUs, most of its memory)
#
# Idempotent: packages already installed are not reinstalled, and when the cluster in
# the state directory already answers, the script only prints its environment.
# Everything it writes lives under $OPNP_SLURM_DIR (default /tmp/opnp-slurm): config
# files in etc/, daemon state and logs in var/, the PIDs of what it started in pids/.
# Commands find the config through SLURM_CONF; the only thing written outside is a
# symlink /etc/slurm/slurm.conf -> etc/slurm.conf (see below why), and only if that
# path is free.
#
# Needs root and apt-get (Debian/Ubuntu; Debian 12 ships Slurm 22.05).
# On success the last lines of stdout are `export VAR=value` lines (SLURM_CONF and the
# partition) that a caller can eval. Stop everything with tests/slurm/stop_local_slurm.sh.
set -euo pipefail

BASE=${OPNP_SLURM_DIR:-/tmp/opnp-slurm}
CLUSTER=${OPNP_SLURM_CLUSTER:-opnptest}
PARTITION=${OPNP_SLURM_PARTITION:-debug}
DB_NAME=opnp_slurm_acct
DB_USER=opnp_slurm
DB_PASS=opnp_slurm_local_only
# Seconds to wait for each daemon to answer.
WAIT_S=${OPNP_SLURM_WAIT_S:-60}

ETC=$BASE/etc
VAR=$BASE/var
PIDS=$BASE/pids
LOGS=$BASE/log
export SLURM_CONF=$ETC/slurm.conf

log() { echo "[start_local_slurm] $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

print_env() {
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export SLURM_PARTITION=$PARTITION"
    echo "export OPNP_SLURM_DIR=$BASE"
}

# Already running (a previous call of this script)? Then only say how to reach it.
if [ -f "$SLURM_CONF" ] && [ -f "$PIDS/slurmd.pid" ] &&
    [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ] &&
    timeout 10 sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)' &&
    timeout 10 sacct -n -X -S now-1minutes >/dev/null 2>&1; then
    log "cluster in $BASE already running"
    print_env
    exit 0
fi

# ---------------------------------------------------------------- packages
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "apt-get not found; cannot install ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # --no-install-recommends keeps out e.g. a mail server; policy-rc.d in containers
    # stops the packages' own service starts, which is why the daemons are started below.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
for cmd in munged mysqld_safe mysql slurmdbd slurmctld slurmd sacctmgr sinfo sacct sbatch; do
    command -v "$cmd" >/dev/null || die "$cmd not found after installing ${PACKAGES[*]}"
done

mkdir -p "$ETC" "$VAR/slurmctld" "$VAR/slurmd" "$VAR/mysql" "$PIDS" "$LOGS"

# A PID file names a live process of the expected program?
alive() { # alive NAME
    local pidfile=$PIDS/$1.pid
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT_S))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up within ${WAIT_S}s (logs: $LOGS)"
        sleep 0.5
    done
}

# ---------------------------------------------------------------- munge
# Debian's package creates /etc/munge/munge.key; create one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
fi
MUNGE_SOCKET_DIR=/run/munge
mkdir -p "$MUNGE_SOCKET_DIR"
chown munge:munge "$MUNGE_SOCKET_DIR" 2>/dev/null || true
# A munged that already answers on the default socket (the host's own) is used as is.
if ! alive munged && ! (munge -n | unmunge) >/dev/null 2>&1; then
    log "starting munged"
    # --force: start even if a stale socket from an earlier, killed munged exists.
    # The PID file goes where the munge user may write; it is copied to $PIDS after.
    MUNGE_PIDFILE=$MUNGE_SOCKET_DIR/opnp-munged.pid
    rm -f "$MUNGE_PIDFILE"
    if id munge >/dev/null 2>&1; then
        mkdir -p /var/log/munge /var/lib/munge
        chown munge:munge /var/log/munge /var/lib/munge 2>/dev/null || true
        runuser -u munge -- munged --force --pid-file="$MUNGE_PIDFILE" ||
            die "munged failed to start"
    else
        munged --force --pid-file="$MUNGE_PIDFILE" || die "munged failed to start"
    fi
    wait_for "munged" test -s "$MUNGE_PIDFILE"
    cp "$MUNGE_PIDFILE" "$PIDS/munged.pid"
fi
wait_for "munge" sh -c 'munge -n | unmunge'

# ---------------------------------------------------------------- MariaDB
MYSQL_SOCKET=$VAR/mysql/mysqld.sock
if ! alive mysqld; then
    if [ ! -d "$VAR/mysql/data/mysql" ]; then
        log "initialising MariaDB data directory"
        mariadb-install-db --user=root --datadir="$VAR/mysql/data" \
            --auth-root-authentication-method=socket >"$LOGS/mariadb-install-db.log" 2>&1 ||
            die "mariadb-install-db failed (see $LOGS/mariadb-install-db.log)"
    fi
    log "starting MariaDB"
    # A private server: own data dir, socket and port, no networking beyond localhost.
    setsid mysqld_safe --no-defaults --user=root --datadir="$VAR/mysql/data" \
        --socket="$MYSQL_SOCKET" --pid-file="$VAR/mysql/mysqld.pid" \
        --port="${OPNP_SLURM_DB_PORT:-33061}" --bind-address=127.0.0.1 \
        --log-error="$LOGS/mysqld.log" >/dev/null 2>&1 </dev/null &
    echo $! >"$PIDS/mysqld_safe.pid"
    wait_for "MariaDB" mysql --socket="$MYSQL_SOCKET" -e "SELECT 1"
    cp "$VAR/mysql/mysqld.pid" "$PIDS/mysqld.pid"
fi
mysql --socket="$MYSQL_SOCKET" -e "
    CREATE DATABASE IF NOT EXISTS $DB_NAME;
    CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
    GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
    FLUSH PRIVILEGES;"

# ---------------------------------------------------------------- config files
HOST=$(hostname -s)
NCPU=$(nproc)
# Leave 10 % (at least 512 MB) of the memory to the OS and the daemons.
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
RESERVE_MB=$((MEM_MB / 10 > 512 ? MEM_MB / 10 : 512))
REAL_MEM_MB=$((MEM_MB - RESERVE_MB))

cat >"$ETC/slurmdbd.conf" <<EOF
# Written by tests/slurm/start_local_slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=${OPNP_SLURM_DBD_PORT:-16819}
SlurmUser=root
PidFile=$VAR/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${OPNP_SLURM_DB_PORT:-33061}
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
chmod 600 "$ETC/slurmdbd.conf"

cat >"$SLURM_CONF" <<EOF
# Written by tests/slurm/start_local_slurm.sh: one node ($HOST), one partition.
ClusterName=$CLUSTER
# Addresses pinned to loopback: the host name need not resolve.
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=${OPNP_SLURM_CTLD_PORT:-16817}
SlurmdPort=${OPNP_SLURM_SLURMD_PORT:-16818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$VAR/slurmctld
SlurmdSpoolDir=$VAR/slurmd
SlurmctldPidFile=$VAR/slurmctld.pid
SlurmdPidFile=$VAR/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Fast scheduling: this cluster exists for a test.
SchedulerParameters=defer_batch=0,sched_interval=2
SchedulerType=sched/backfill
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=${OPNP_SLURM_DBD_PORT:-16819}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$REAL_MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# The compiled-in config path must lead to this cluster too: the job-step executor of
# snakemake-executor-plugin-slurm removes every SLURM_* variable (SLURM_CONF included)
# from the environment of the `srun` it starts inside a job, so that srun only finds
# /etc/slurm/slurm.conf. A symlink there is created only if the path is free, and
# removed by the stop script; a real cluster's config is never replaced.
SYSTEM_CONF=/etc/slurm/slurm.conf
if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then
    :
elif [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    die "$SYSTEM_CONF exists and is not this script's; refusing to replace it"
else
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$SLURM_CONF" "$SYSTEM_CONF"
fi

# ---------------------------------------------------------------- SLURM daemons
if ! alive slurmdbd; then
    log "starting slurmdbd"
    SLURM_CONF=$SLURM_CONF slurmdbd || die "slurmdbd failed (see $LOGS/slurmdbd.log)"
    wait_for "slurmdbd pid file" test -s "$VAR/slurmdbd.pid"
    cp "$VAR/slurmdbd.pid" "$PIDS/slurmdbd.pid"
fi
wait_for "slurmdbd" sacctmgr -n list cluster
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >&2
fi

if ! alive slurmctld; then
    log "starting slurmctld"
    slurmctld || die "slurmctld failed (see $LOGS/slurmctld.log)"
    wait_for "slurmctld pid file" test -s "$VAR/slurmctld.pid"
    cp "$VAR/slurmctld.pid" "$PIDS/slurmctld.pid"
fi
wait_for "slurmctld" scontrol ping

if ! alive slurmd; then
    log "starting slurmd"
    slurmd || die "slurmd failed (see $LOGS/slurmd.log)"
    wait_for "slurmd pid file" test -s "$VAR/slurmd.pid"
    cp "$VAR/slurmd.pid" "$PIDS/slurmd.pid"
fi

# A node from an earlier run may come back DOWN; bring it into service.
scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
node_ready() { sinfo -h -n "$HOST" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
wait_for "node $HOST to become idle" node_ready
wait_for "sacct" sacct -n -X -S now-1minutes
log "cluster $CLUSTER up: node $HOST, $NCPU CPUs, ${REAL_MEM_MB} MB, partition $PARTITION"
print_env
