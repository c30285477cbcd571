#!/usr/bin/env bash
# A real Slurm cluster on this machine, for the tests (tests/test_slurm.py): one controller and
# $SLURM_CI_NODES slurmd daemons (default 2), each a node of its own on 127.0.0.1.
#
#   tests/slurm/cluster.sh install   apt-get the Debian packages (slurmctld slurmd slurm-client munge)
#   tests/slurm/cluster.sh start     (re)configure and start munged, slurmctld, the slurmds; wait for IDLE
#   tests/slurm/cluster.sh stop      cancel every job, stop the daemons by pid file, remove the config
#   tests/slurm/cluster.sh status    sinfo + node state; exit 0 only when the node takes jobs
#   tests/slurm/cluster.sh logs      the tail of the daemons' logs (for a failed test)
#
# Root only. Every step is idempotent: `start` stops a previous instance first (fresh state), `stop`
# is a no-op when nothing runs. It only ever signals the pids written in its own pid files.
#
# The nodes: `node1`, `node2`, ... (multi-node jobs: one `srun` task per node, as on a real
# cluster), all on 127.0.0.1 with a slurmd port each. Each is declared with $SLURM_CI_CPUS CPUs (more than this machine has,
# allowed by SlurmdParameters=config_overrides, so production-shaped cpus_per_task are schedulable),
# $SLURM_CI_MEM_MB of memory and four fake a100 GPUs: character devices made with mknod (a gres
# entry without File= is dropped and the node goes INVAL; plain files log errors). A job asking
# --gres=gpu:a100:4 gets CUDA_VISIBLE_DEVICES=0,1,2,3. Two partitions over all nodes, named as in
# config/config.yaml's slurm: section (pass other names through the variables below).
#
# Slurm reads /etc/slurm/slurm.conf: the Snakemake Slurm plugin strips SLURM_* variables before its
# inner srun, so a SLURM_CONF elsewhere fails there. The file written carries a marker line; an
# /etc/slurm/slurm.conf without it (a real cluster's) is never overwritten or removed.
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
CPUS=${SLURM_CI_CPUS:-16}
MEM_MB=${SLURM_CI_MEM_MB:-20000}
NGPUS=${SLURM_CI_GPUS:-4}
NNODES=${SLURM_CI_NODES:-2}
GPU_TYPE=${SLURM_CI_GPU_TYPE:-a100}
GPU_PARTITION=${SLURM_CI_GPU_PARTITION:-gpu}
CPU_PARTITION=${SLURM_CI_CPU_PARTITION:-cpu}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
GRES=$CONF_DIR/gres.conf
MARKER="# written by alpagasus tests/slurm/cluster.sh"
MUNGE_SOCKET_DIR=/run/munge
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "[slurm-ci] $*" >&2; }

# node1 node2 ... (a node named like its host, `localhost`, makes slurmctld refuse the shared
# NodeHostname as a duplicate).
node_names() { local i; for ((i = 1; i <= NNODES; i++)); do echo "node$i"; done; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

have_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null
}

cmd_install() {
    need_root
    if have_packages; then log "packages already installed ($(slurmctld -V))"; return 0; fi
    command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} by hand"
    log "apt-get install ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    have_packages || die "packages installed but binaries missing"
    log "installed $(slurmctld -V)"
}

# Is PID alive and running the program NAME? (guards against a recycled pid)
pid_is() {
    local pid=$1 name=$2
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name"* ]] || return 1
    # A zombie (exited, not yet reaped by a PID 1 that does not reap) counts as stopped.
    local stat
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

stop_pidfile() {
    local pidfile=$1 name=$2 pid i
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if pid_is "$pid" "$name"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do pid_is "$pid" "$name" || break; sleep 0.1; done
        if pid_is "$pid" "$name"; then
            log "$name did not stop in 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
}

ctld_up() { [[ -f $DIR/run/slurmctld.pid ]] && pid_is "$(cat "$DIR/run/slurmctld.pid")" slurmctld; }

cancel_all_jobs() {
    # Every job of this throwaway cluster is ours: cancel them all and let slurmd end their steps.
    ctld_up || return 0
    local ids i
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    [[ -n $ids ]] || return 0
    log "cancelling jobs: $(echo $ids)"
    # shellcheck disable=SC2086
    timeout 10 scancel --full $ids 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        [[ -z $(timeout 5 squeue -h -t R,CG,PD,S,CF,RQ,RS,RH,SE,SO,ST -o %A 2>/dev/null || true) ]] && return 0
        sleep 0.2
    done
    log "jobs still running after 30 s"
}

ours() { [[ -f $1 ]] && head -n 1 "$1" | grep -qF "$MARKER"; }

cmd_stop() {
    need_root
    cancel_all_jobs
    local pidfile
    for pidfile in "$DIR"/run/slurmd*.pid; do [[ -e $pidfile ]] && stop_pidfile "$pidfile" slurmd; done
    stop_pidfile "$DIR/run/slurmctld.pid" slurmctld
    if [[ -f $DIR/run/munged.ours ]]; then
        stop_pidfile "$DIR/run/munged.pid" munged
        rm -f "$DIR/run/munged.ours"
    fi
    # job steps outlive slurmd by design; by now they were cancelled. Report (never kill by name).
    local left
    left=$(for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == slurmstepd ]] && echo "${p#/proc/}"; done || true)
    [[ -z $left ]] || log "WARNING: slurmstepd still running: $(echo $left)"
    for f in "$CONF" "$GRES"; do ours "$f" && rm -f "$f"; done
    log "stopped"
}

write_config() {
    mkdir -p "$DIR"/{state/ctld,state/d,run,log,dev} "$CONF_DIR"
    for f in "$CONF" "$GRES"; do
        if [[ -e $f ]] && ! ours "$f"; then
            die "$f exists and was not written by this script (a real cluster?): not touching it"
        fi
    done
    local i last=$((NGPUS - 1))
    for ((i = 0; i < NGPUS; i++)); do
        # Fake GPU i: a character device with /dev/null's numbers.
        [[ -c $DIR/dev/nvidia$i ]] || { rm -f "$DIR/dev/nvidia$i"; mknod "$DIR/dev/nvidia$i" c 1 3; }
    done
    cat >"$GRES" <<EOF
$MARKER
EOF
    local node port=17001 nodes
    nodes=$(node_names | paste -sd, -)
    for node in $(node_names); do
        echo "NodeName=$node Name=gpu Type=$GPU_TYPE File=$DIR/dev/nvidia[0-$last]" >>"$GRES"
    done
    cat >"$CONF" <<EOF
$MARKER
ClusterName=ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MailProg=/bin/true
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
DefMemPerCPU=500
# Finished jobs stay visible to squeue/scontrol for an hour: the plugin's squeue status command
# needs them, and the test reads every job of its run back with scontrol.
MinJobAge=3600
KillWait=5
# One line per finished job (id, name, state, partition, node), kept after MinJobAge too.
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
GresTypes=gpu
EOF
    # One line for all nodes (separate lines with one NodeHostname are refused as duplicates); the
    # port range gives each slurmd its own port.
    cat >>"$CONF" <<EOF
NodeName=$nodes NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$port-$((port + NNODES - 1))] CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$GPU_TYPE:$NGPUS State=UNKNOWN
PartitionName=$CPU_PARTITION Nodes=$nodes Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=$nodes MaxTime=INFINITE State=UP
EOF
}

munge_works() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        log "munged already answering (not ours): using it"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then mungekey --create --force; else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    mkdir -p "$MUNGE_SOCKET_DIR" /var/log/munge /var/lib/munge
    chown munge:munge "$MUNGE_SOCKET_DIR" /var/log/munge /var/lib/munge
    chmod 0755 "$MUNGE_SOCKET_DIR"
    # munged writes its pid and log files as user munge: give it a directory of its own.
    mkdir -p "$DIR/munge"
    chown munge:munge "$DIR/munge"
    rm -f "$MUNGE_SOCKET_DIR/munge.socket.2" "$MUNGE_SOCKET_DIR/munge.socket.2.lock"
    runuser -u munge -- munged --force --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" || die "munged did not start: $(tail -5 "$DIR/munge/munged.log" 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do [[ -s $DIR/munge/munged.pid ]] && break; sleep 0.1; done
    cp "$DIR/munge/munged.pid" "$DIR/run/munged.pid"
    touch "$DIR/run/munged.ours"
    for ((i = 0; i < 50; i++)); do munge_works && return 0; sleep 0.1; done
    die "munged started but munge/unmunge fail"
}

node_state() { timeout 3 scontrol show node "${1:-node1}" 2>/dev/null | grep -o 'State=[A-Z_+*]*' | head -n 1 | cut -d= -f2; }

all_idle() { local n; for n in $(node_names); do [[ $(node_state "$n" || true) == IDLE* ]] || return 1; done; }

cmd_start() {
    need_root
    have_packages || die "Slurm packages missing: run '$0 install'"
    cmd_stop
    rm -rf "$DIR/state" "$DIR/log" "$DIR/munge"
    write_config
    start_munge
    log "starting slurmctld, slurmd"
    slurmctld -c || die "slurmctld did not start: $(tail -20 "$DIR/log/slurmctld.log" 2>/dev/null)"
    local state="" t0=$SECONDS deadline=$((SECONDS + 30))
    until timeout 2 scontrol ping >/dev/null 2>&1; do
        if ((SECONDS > deadline)) || { ((SECONDS > t0 + 3)) && ! ctld_up; }; then
            log "slurmctld is not answering"; cmd_logs; cmd_stop; exit 1
        fi
        sleep 0.2
    done
    local node
    for node in $(node_names); do
        mkdir -p "$DIR/state/d-$node"
        slurmd -N "$node" || { log "slurmd for $node did not start"; cmd_logs; cmd_stop; exit 1; }
    done
    deadline=$((SECONDS + 30))
    while ((SECONDS <= deadline)) && ctld_up; do
        all_idle && break
        sleep 0.2
    done
    if ! all_idle; then
        log "nodes not IDLE after 30 s: $(for n in $(node_names); do echo -n "$n=$(node_state "$n") "; done)"
        cmd_logs
        cmd_stop
        exit 1
    fi
    log "cluster up: nodes $(node_names | paste -sd' ' -) IDLE, partitions $CPU_PARTITION (default) and $GPU_PARTITION, $NGPUS x gpu:$GPU_TYPE each"
}

cmd_status() {
    ctld_up || { log "slurmctld not running"; return 1; }
    timeout 5 sinfo -o '%P %a %D %T %c %m %G' || return 1
    local state n ok=0
    for n in $(node_names); do
        state=$(node_state "$n" || true)
        echo "node $n: $state"
        [[ $state == IDLE* || $state == MIXED* || $state == ALLOCATED* ]] || ok=1
    done
    return $ok
}

cmd_logs() {
    local f
    for f in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd*.log "$DIR"/munge/munged.log; do
        [[ -f $f ]] || continue
        echo "==== $f (tail)"
        tail -n 40 "$f"
    done
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
logs) cmd_logs ;;
*) echo "usage: $0 {install|start|stop|status|logs}" >&2; exit 2 ;;
esac
