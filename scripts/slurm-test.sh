#!/usr/bin/env bash
# The README's Slurm array, for real: a one-node Slurm cluster on loopback runs
# scripts/slurm/fmcib-shard.sbatch as an array over `--shard i/3` and
# scripts/slurm/fmcib-merge.sbatch after it, and checks the merged output equals a single
# run's. Then the fault: one array task is cancelled mid-run, a merge submitted while that
# shard is incomplete must fail (exit 2, a clear message), the task is resubmitted alone,
# resumes, and the merge equals the single run again. See docs/hpc.md.
#
# Usage (as root; `make slurm-test`, also run by .ci/run):
#   scripts/slurm-test.sh            VENV=.venv by default: a venv with mhub-fmcib installed
#
# Installs Debian's slurm-wlm and munge when missing. munged, slurmctld, slurmd and every
# client command run inside a private network, PID and mount namespace whose only
# interface is loopback; the daemons are stopped by PID at the end whatever happens (and
# anything left dies with the namespace). KEEP=1 keeps the temporary folder.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "$ROOT" && cd "${VENV:-.venv}" 2>/dev/null && pwd) || {
    echo "slurm-test: no venv at ${VENV:-.venv} (run 'make install' first)" >&2
    exit 2
}

if [ "${SLURM_TEST_INSIDE:-}" != 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "slurm-test: needs root (daemons in a private network namespace)" >&2
        exit 2
    fi
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
        echo "slurm-test: installing Debian's slurm-wlm and munge"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    # Network: loopback only. PID namespace: nothing started here outlives the test.
    exec unshare --net --pid --fork --mount-proc -- \
        env SLURM_TEST_INSIDE=1 VENV="$VENV" bash "$0" "$@"
fi

# ---------------------------------------------------------------------------------------
# Inside the namespace.
ip link set lo up
# With 127.0.0.1 alone on lo, slurmctld and slurmd die "Unable to bind listen port".
ip addr add 127.0.0.2/8 dev lo

T=$(mktemp -d /tmp/slurm-test.XXXXXX)
chmod 755 "$T"  # munged (user munge) must reach its socket folder below
export PATH="$VENV/bin:$PATH" SLURM_CONF="$T/slurm.conf"
PY="$VENV/bin/python"
MUNGED_PID="" SLURMCTLD_PID="" SLURMD_PID="" OK=0

log() { printf 'slurm-test: %s\n' "$*"; }

stop_pid() {  # stop_pid NAME PID: SIGTERM, up to 20 s, then SIGKILL
    local name=$1 pid=$2 i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "$name (PID $pid) ignored SIGTERM for 20 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$SLURMCTLD_PID" ] && kill -0 "$SLURMCTLD_PID" 2>/dev/null; then
        timeout 15 scancel --quiet --full "--user=$(id -un)" 2>/dev/null || true
    fi
    stop_pid slurmd "$SLURMD_PID"
    stop_pid slurmctld "$SLURMCTLD_PID"
    stop_pid munged "$MUNGED_PID"
    if [ "$OK" != 1 ]; then
        log "FAILED (exit $rc); last lines of the logs:"
        for f in "$T"/log/*.log "$T"/jobs/*.out; do
            [ -f "$f" ] && { echo "==> $f"; tail -n 25 "$f"; }
        done
        [ "$rc" = 0 ] && rc=1
    fi
    if [ "${KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { log "$*"; exit 1; }

# ----- munge: its own key and socket under $T, run as the munge user ------------------
mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/run" "$T/jobs"
chown munge:munge "$T/munge"
chmod 755 "$T/munge"  # the socket folder must be searchable by every client
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$T/munge/munge.key"
chmod 400 "$T/munge/munge.key"
# setpriv execs munged, so $! is munged's own PID
setpriv --reuid=munge --regid=munge --clear-groups \
    munged --foreground --socket="$T/munge/munge.socket" --key-file="$T/munge/munge.key" \
    --pid-file="$T/munge/munged.pid" --log-file="$T/log/munged.log" \
    --seed-file="$T/munge/munged.seed" >/dev/null 2>&1 &
MUNGED_PID=$!
for _ in $(seq 100); do [ -S "$T/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.socket" ] || die "munged did not create its socket in 10 s"

# ----- a one-node cluster on localhost -------------------------------------------------
cat >"$SLURM_CONF" <<EOF
# one-node test cluster written by scripts/slurm-test.sh
ClusterName=fmcibtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.socket
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# finished jobs stay visible to scontrol (no accounting daemon) for 30 minutes
MinJobAge=1800
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
SLURMCTLD_PID=$!
slurmd -D -N localhost -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &  # host name is not localhost
SLURMD_PID=$!

# Client commands block ~10 s while the controller is unreachable: every call has a deadline.
q() { timeout 20 "$@"; }

deadline_wait() {  # deadline_wait SECONDS WHAT COMMAND...: until COMMAND succeeds
    local secs=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        kill -0 "$SLURMCTLD_PID" 2>/dev/null || die "slurmctld died (waiting for $what)"
        kill -0 "$SLURMD_PID" 2>/dev/null || die "slurmd died (waiting for $what)"
        [ $((SECONDS - t0)) -lt "$secs" ] || die "timed out after ${secs}s waiting for $what"
        sleep 0.5
    done
}

node_idle() { [ "$(q sinfo -h -n localhost -o %T 2>/dev/null)" = idle ]; }
left_queue() {  # all of the given jobs (or array tasks) have left the queue
    local out
    out=$(q squeue -h -j "$1" -o %i 2>/dev/null) || return 1
    [ -z "$out" ]
}
wait_jobs() { deadline_wait "${2:-900}" "job(s) $1" left_queue "$1"; }

task_states() {  # "<job id>_<task> STATE exit E" per line, from the controller (no sacct)
    q scontrol -o show job "$1" | tr ' ' '\n' \
        | awk -F= '$1=="ArrayJobId"{a=$2} $1=="ArrayTaskId"{t=$2} $1=="JobId"{j=$2; a=""; t=""}
                   $1=="JobState"{s=$2} $1=="ExitCode"{print (a!="" ? a"_"t : j), s, "exit", $2}' \
        | sort -V
}
state_of() { task_states "$1" | awk '{print $2}' | sort -u | paste -sd, -; }
expect_state() {  # expect_state JOB STATE [EXIT]
    local got
    got=$(task_states "$1")
    echo "$got" | sed 's/^/  /'
    echo "$got" | awk -v s="$2" -v e="${3:-}" '$2!=s || (e!="" && $4!=e){bad=1} END{exit bad}' \
        || die "job $1: expected every task $2${3:+ with exit $3}"
}

deadline_wait 60 "the node to be idle" node_idle
log "cluster up: slurmctld PID $SLURMCTLD_PID, slurmd PID $SLURMD_PID, munged PID $MUNGED_PID ($(sinfo -V))"

# ----- data: a small multi-study export and random weights in the published format -----
"$PY" "$ROOT/scripts/slurm_check.py" make-data "$T/data" --shards 3
export FMCIB_INPUT="$T/data/export" FMCIB_WEIGHTS="$T/data/weights.torch" FMCIB_SHARDS=3
SHARD="$ROOT/scripts/slurm/fmcib-shard.sbatch"
MERGE="$ROOT/scripts/slurm/fmcib-merge.sbatch"
cd "$T/jobs"  # the job logs' folder

# ----- 1. the README's job: the array, then the merge after it --------------------------
export FMCIB_RESULTS="$T/round1"
# the same thread count as the shards' (fmcib-shard.sbatch: OMP_NUM_THREADS = CPUs per task):
# float32 sums in another order differ in the last digits
S=$(q sbatch --parsable --job-name=fmcib-single --cpus-per-task=1 --output=single-%j.out \
    --wrap "OMP_NUM_THREADS=1 exec mhub-fmcib run '$FMCIB_INPUT' '$T/single'")
A=$(q sbatch --parsable --array=0-2 "$SHARD")
M=$(q sbatch --parsable --dependency="afterok:$A" "$MERGE")
log "round 1: single run job $S, array job $A (shards 0-2), merge job $M (afterok:$A)"
wait_jobs "$S,$A,$M"
# the export holds one failed case: the plain single run exits 1 (FAILED); the shard
# script and the merge script count "finished, some cases failed" as COMPLETED
expect_state "$S" FAILED 1:0
expect_state "$A" COMPLETED 0:0
expect_state "$M" COMPLETED 0:0
"$PY" "$ROOT/scripts/slurm_check.py" same "$T/single" "$FMCIB_RESULTS/merged"

# ----- 2. the fault: cancel task 1 mid-run, a merge without it, resubmit, merge ---------
export FMCIB_RESULTS="$T/round2"
A=$(q sbatch --parsable --array=0-2 "$SHARD")
log "round 2: array job $A; cancelling task ${A}_1 once it has finished one case"
one_case_done() { compgen -G "$FMCIB_RESULTS/shard_1/cases/*/case.json" >/dev/null; }
deadline_wait 600 "a finished case in shard 1" one_case_done
q scancel "${A}_1"
wait_jobs "$A"
task_states "$A" | sed 's/^/  /'
[ "$(state_of "${A}_1")" = CANCELLED ] || die "task ${A}_1 was not cancelled mid-run (it finished first?)"
done_cases=$(compgen -G "$FMCIB_RESULTS/shard_1/cases/*/case.json" | wc -l)
log "task ${A}_1 cancelled with $done_cases of its cases finished"

M=$(q sbatch --parsable --dependency="afterok:${A}_0:${A}_2" "$MERGE")
log "merge job $M submitted while shard 1 is incomplete: must fail with exit 2"
wait_jobs "$M"
expect_state "$M" FAILED 2:0
grep -i "shard" "$T/jobs/fmcib-merge-$M.out" | sed 's/^/  merge says: /' | sed -n '1,3p'
grep -qi "shard 1/3" "$T/jobs/fmcib-merge-$M.out" || die "the merge's message does not name shard 1/3"
[ ! -e "$FMCIB_RESULTS/merged/features.csv" ] || die "a refused merge left $FMCIB_RESULTS/merged/features.csv"

R=$(q sbatch --parsable --array=1 "$SHARD")
M=$(q sbatch --parsable --dependency="afterok:$R" "$MERGE")
log "resubmitted task 1 as job $R (sbatch --array=1), merge job $M (afterok:$R)"
wait_jobs "$R,$M"
expect_state "$R" COMPLETED 0:0
"$PY" "$ROOT/scripts/slurm_check.py" resumed "$FMCIB_RESULTS/shard_1"
expect_state "$M" COMPLETED 0:0
"$PY" "$ROOT/scripts/slurm_check.py" same "$T/single" "$FMCIB_RESULTS/merged"

OK=1
log "passed: Slurm array + afterok merge = single run; cancelled task resumed; merge without it refused"
