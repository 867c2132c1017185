#!/usr/bin/env bash
# make container-test: build the CPU image for real, offline, and run it as users do.
#
# As root on a fresh Debian 12 machine (run after `make test`, so the project's venv exists):
#   1. installs Debian's docker.io and mmdebstrap if they are missing;
#   2. starts a private dockerd inside a network namespace of its own with only loopback up
#      (no bridge, no iptables), its data, exec root, socket and pidfile in one temporary
#      folder; it is stopped by its PID when the script ends, however it ends;
#   3. makes a Debian base image (mmdebstrap from this host's own apt sources) and imports it;
#   4. downloads the locked wheels with the host's pip, writes random-initialised weights in
#      the published format, serves both on 127.0.0.1 inside the daemon's namespace;
#   5. builds dockerfiles/Dockerfile.cpu from them (classic builder, --network host, which
#      there is loopback only) and dockerfiles/Dockerfile up to its CUDA wheels (--target base);
#   6. runs the image with --network none as its own non-root user: the default workflow on
#      sample_data/dicom, from_seeds with --read-only, an unwritable output (exit 4), --help;
#   7. compares features, SR and SEG with a native run of the same weights, checks run.json,
#      the output files' owner and modes, and the `docker save` archive's config;
#   8. prints the image sizes and each step's seconds.
# Nothing is kept between runs: every run starts from an empty daemon and an empty folder.
#
# Environment: VENV (default .venv) the project's venv for the native run and the checks;
# TMPDIR for the work folder (about 9 GB); APT_SOURCES to pass another apt sources file.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=$VENV/bin/python
PORT=8765
URL=http://127.0.0.1:$PORT
IMAGE=mhub-fmcib:container-test-cpu
GPU_BASE_IMAGE=mhub-fmcib:container-test-gpu-base
BASE_IMAGE=mhub-fmcib-test/debian-bookworm-python3:local
PREFIX=mhub-fmcib-container
TMP=${TMPDIR:-/tmp}

say() { printf '\n=== %s\n' "$*"; }
die() { printf 'container-test: FAILED: %s\n' "$*" >&2; exit 1; }
# A check that does not hold is recorded and the run goes on, so one run shows every problem;
# the script then exits 1 listing them. A step that later steps need (build, run) dies.
FAILED_CHECKS=()
fail() { printf 'container-test: CHECK FAILED: %s\n' "$*" >&2; FAILED_CHECKS+=("$*"); }

[ "$(id -u)" = 0 ] || { echo "container-test: needs root (dockerd, mmdebstrap, network namespaces)" >&2; exit 2; }
[ -x "$PY" ] || { echo "container-test: no venv at $VENV (run 'make install' or 'make test' first)" >&2; exit 2; }

# One run at a time: a second one would otherwise take the first one's folder for a leftover.
LOCK=/run/lock/$PREFIX-test.lock
[ -d /run/lock ] || LOCK=$TMP/$PREFIX-test.lock
exec 9>"$LOCK"
flock -n 9 || { echo "container-test: another run holds $LOCK" >&2; exit 2; }

# ------------------------------------------------------------------------- clean-up

# stop_pid PID DIR: TERM (then KILL after 60 s) a process, only if its command line names DIR
# (so a reused PID of someone else's process is never touched).
stop_pid() {
    local pid=$1 dir=$2 cmd i
    [ -r "/proc/$pid/cmdline" ] || return 0
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 0
    [[ $cmd == *"$dir"* ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 60); do [ -d "/proc/$pid" ] || return 0; sleep 1; done
    echo "container-test: PID $pid did not stop in 60 s, killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

# cleanup_dir DIR: stop the server, dockerd, its containerd and any shim still running from
# DIR, unmount everything below DIR (netns/default, overlays, shm), remove DIR.
cleanup_dir() {
    local dir=$1 f p mnt
    [ -d "$dir" ] || return 0
    for f in "$dir/http.pid" "$dir/docker.pid" "$dir/exec/containerd/containerd.pid"; do
        [ -f "$f" ] && stop_pid "$(cat "$f")" "$dir"
    done
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        stop_pid "${p#/proc/}" "$dir"
    done
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo \
        | sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    rm -rf "$dir"
}

# Leftovers of a run that was killed before its trap could run (we hold the lock, so no
# other run is using them).
for stale in "$TMP/$PREFIX".*; do
    [ -d "$stale" ] || continue
    echo "container-test: removing leftovers of an earlier run: $stale"
    cleanup_dir "$stale"
done

WORK=$(mktemp -d "$TMP/$PREFIX.XXXXXX")
STEPS=()
KEY_JSON_EXISTED=$([ -e /etc/docker/key.json ] && echo yes || echo no)
# dockerd and containerd make these (empty) whatever their roots; a fresh machine has none.
RUN_DIRS_EXISTED=$([ -e /run/docker ] || [ -e /run/containerd ] && echo yes || echo no)
POLICY_CREATED=no

on_exit() {
    local code=$?
    set +e
    if [ ${#STEPS[@]} -gt 0 ]; then
        say "step timings (seconds)"
        printf '%s\n' "${STEPS[@]}"
    fi
    local start=$SECONDS
    cleanup_dir "$WORK"
    # dockerd 20.10 writes its trust key into /etc/docker; a fresh machine has none.
    [ "$KEY_JSON_EXISTED" = no ] && rm -f /etc/docker/key.json
    if [ "$RUN_DIRS_EXISTED" = no ]; then
        for f in /run/docker /run/containerd; do
            [ -d "$f" ] && find "$f" -depth -type d -empty -delete
        done
    fi
    printf '%6d  clean-up (daemon stopped, mounts and work folder removed)\n' $((SECONDS - start))
    if [ -e "$WORK" ] || grep -qF "$WORK" /proc/self/mountinfo; then
        echo "container-test: leftovers in $WORK could not be removed" >&2
        code=1
    fi
    [ "$POLICY_CREATED" = yes ] && rm -f /usr/sbin/policy-rc.d
    if [ "$code" = 0 ]; then echo "container-test: PASSED"; else echo "container-test: FAILED (exit $code)" >&2; fi
    exit "$code"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# step NAME COMMAND...: run one step, record its wall time.
step() {
    local name=$1 start end
    shift
    say "$name"
    start=$(date +%s)
    "$@"
    end=$(date +%s)
    STEPS+=("$(printf '%6d  %s' $((end - start)) "$name")")
}

# ------------------------------------------------------------------------- steps

install_tools() {
    if command -v dockerd >/dev/null && command -v mmdebstrap >/dev/null && [ -x /usr/bin/docker ]; then
        echo "docker.io and mmdebstrap already installed"
        return
    fi
    # Debian's docker.io would start its own daemon on the host's network: keep services off.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        POLICY_CREATED=yes
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io mmdebstrap ca-certificates > /dev/null
    command -v dockerd >/dev/null || die "docker.io installed but no dockerd on PATH"
}

start_dockerd() {
    mkdir -p "$WORK/data" "$WORK/exec"
    unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh \
        dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/docker.pid" \
        -H "unix://$WORK/docker.sock" > "$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for i in $(seq 1 60); do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            tail -n 30 "$WORK/dockerd.log" >&2
            die "dockerd exited while starting (log above)"
        fi
        docker version --format '{{.Server.Version}}' > /dev/null 2>&1 && break
        sleep 1
    done
    docker version --format 'dockerd {{.Server.Version}}, API {{.Server.APIVersion}}' \
        || { tail -n 30 "$WORK/dockerd.log" >&2; die "dockerd did not answer in 60 s"; }
    echo "dockerd PID $DOCKERD_PID in network namespace $(readlink "/proc/$DOCKERD_PID/ns/net")"
    echo "its interfaces: $(nsenter --net="/proc/$DOCKERD_PID/ns/net" ip -o link show | awk -F': ' '{ print $2 }' | tr '\n' ' ')"
}

# The docker CLI of the docker.io package, talking only to our daemon.
docker() { /usr/bin/docker -H "unix://$WORK/docker.sock" "$@"; }

make_base_image() {
    local sources=${APT_SOURCES:-}
    if [ -z "$sources" ]; then
        for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
            if [ -s "$f" ] && grep -Eq '^[[:space:]]*(deb|URIs:)' "$f"; then sources=$f; break; fi
        done
    fi
    [ -n "$sources" ] || die "no apt sources file found (set APT_SOURCES)"
    echo "mirror: this host's apt sources, $sources"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$WORK/rootfs.tar" "$sources"
    docker import "$WORK/rootfs.tar" "$BASE_IMAGE"
    rm -f "$WORK/rootfs.tar"
}

download_wheels() {
    local plats=() v
    # CPython 3.11 on Debian 12 (glibc 2.36), x86_64, whatever the host's own Python is.
    for v in $(seq 17 36); do plats+=(--platform "manylinux_2_${v}_x86_64"); done
    plats+=(--platform manylinux2014_x86_64 --platform linux_x86_64)
    mkdir -p "$WORK/serve/wheels"
    grep -Ev '^[[:space:]]*--(extra-)?index-url' requirements/lock-cpu.txt > "$WORK/lock-cpu-noindex.txt"
    local pip=("$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11
        --implementation cp --abi cp311 "${plats[@]}" -d "$WORK/serve/wheels")
    if ! "${pip[@]}" -r "$WORK/lock-cpu-noindex.txt"; then
        echo "the host's pip lacks a pin without the lock's index line; trying the lock as it is"
        "${pip[@]}" -r requirements/lock-cpu.txt
    fi
    echo "$(find "$WORK/serve/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$WORK/serve/wheels" | cut -f1)"
}

write_weights() {
    PYTHONPATH=$ROOT "$PY" -c '
import sys
from pathlib import Path
from mhub_fmcib.model.weights import write_random_weights
write_random_weights(Path(sys.argv[1]), seed=0)
' "$WORK/serve/model_weights.torch"
    WEIGHTS_SHA256=$(sha256sum "$WORK/serve/model_weights.torch" | cut -d' ' -f1)
    echo "random-initialised weights, sha256 $WEIGHTS_SHA256"
}

start_server() {
    nsenter --net="/proc/$DOCKERD_PID/ns/net" -- python3 -m http.server --bind 127.0.0.1 \
        --directory "$WORK/serve" "$PORT" > "$WORK/http.log" 2>&1 &
    echo $! > "$WORK/http.pid"
    local i
    for i in $(seq 1 30); do
        if nsenter --net="/proc/$DOCKERD_PID/ns/net" -- python3 -c \
            "import urllib.request; urllib.request.urlopen('$URL/wheels/', timeout=2)" 2>/dev/null; then
            echo "serving $WORK/serve on $URL inside the daemon's namespace"
            return
        fi
        sleep 1
    done
    die "the wheel server did not start ($(cat "$WORK/http.log"))"
}

offline_build_args=()
set_build_args() {
    offline_build_args=(
        --build-arg "BASE_IMAGE=$BASE_IMAGE"
        --build-arg PIP_NO_INDEX=1
        --build-arg "PIP_FIND_LINKS=$URL/wheels/"
        --build-arg "FMCIB_WEIGHTS_URL=$URL/model_weights.torch"
        --build-arg "FMCIB_WEIGHTS_SHA256=$WEIGHTS_SHA256"
    )
}

build_cpu() {
    DOCKER_BUILDKIT=0 docker build --network host -f dockerfiles/Dockerfile.cpu \
        "${offline_build_args[@]}" -t "$IMAGE" .
}

build_gpu_base() {
    DOCKER_BUILDKIT=0 docker build --network host -f dockerfiles/Dockerfile --target base \
        "${offline_build_args[@]}" -t "$GPU_BASE_IMAGE" .
    docker run --rm --network none --entrypoint sh "$GPU_BASE_IMAGE" -c '
        set -e
        /opt/venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"
        echo "$0  /opt/fmcib/model_weights.torch" | sha256sum -c -
        test -s /opt/mhub-fmcib/src/requirements/lock-gpu.txt
        echo "GPU stage base: venv $(/opt/venv/bin/python --version), weights checked, lock copied"
    ' "$WEIGHTS_SHA256"
}

image_facts() {
    IMAGE_UID=$(docker run --rm --network none --entrypoint id "$IMAGE" -u)
    IMAGE_GID=$(docker run --rm --network none --entrypoint id "$IMAGE" -g)
    IMAGE_TORCH=$(docker run --rm --network none --entrypoint python "$IMAGE" -c 'import torch; print(torch.__version__)')
    [ "$IMAGE_UID" != 0 ] || die "the image runs as root"
    echo "image user: uid $IMAGE_UID gid $IMAGE_GID (no --user given); image torch $IMAGE_TORCH"
}

# new_output NAME: an empty output folder the image's own user can write.
new_output() {
    mkdir -p "$WORK/$1"
    chown "$IMAGE_UID:$IMAGE_GID" "$WORK/$1"
    echo "$WORK/$1"
}

run_default() {
    local out
    out=$(new_output out-default)
    docker run --rm --network none \
        -v "$ROOT/sample_data/dicom:/app/data/input_data:ro" \
        -v "$out:/app/data/output_data" \
        "$IMAGE" || die "default workflow in the container: exit $?, expected 0"
}

run_seeds() {
    local out
    out=$(new_output out-seeds)
    docker run --rm --network none --read-only --tmpfs /tmp \
        -v "$ROOT/sample_data:/app/data/input_data:ro" \
        -v "$out:/app/data/output_data" \
        "$IMAGE" --workflow from_seeds --input /app/data/input_data --output /app/data/output_data \
        || die "from_seeds in the container: exit $?, expected 0"
}

run_native() {
    local common=(--weights "$WORK/serve/model_weights.torch" --progress none)
    PYTHONPATH=$ROOT unshare --net -- "$PY" -m mhub_fmcib.cli run \
        "$ROOT/sample_data/dicom" "$WORK/native-default" --workflow default "${common[@]}"
    PYTHONPATH=$ROOT unshare --net -- "$PY" -m mhub_fmcib.cli run \
        "$ROOT/sample_data/seeds.csv" "$WORK/native-seeds" --seeds --workflow from_seeds "${common[@]}"
}

compare_with_native() {
    local check=("$PY" scripts/container_check.py) out
    "${check[@]}" compare "$WORK/native-default" "$WORK/out-default" \
        --input-root "$ROOT/sample_data/dicom=/app/data/input_data" \
        || fail "default workflow: container output differs from the native run"
    "${check[@]}" compare "$WORK/native-seeds" "$WORK/out-seeds" \
        --input-root "$ROOT/sample_data=/app/data/input_data" \
        || fail "from_seeds: container output differs from the native run"
    for out in out-default out-seeds; do
        "${check[@]}" run-json "$WORK/$out" --torch "$IMAGE_TORCH" --weights-sha256 "$WEIGHTS_SHA256" \
            || fail "$out/run.json"
        "${check[@]}" permissions "$WORK/$out" --uid "$IMAGE_UID" --gid "$IMAGE_GID" \
            || fail "$out: owners or modes"
    done
}

run_unwritable() {
    local out=$WORK/out-unwritable rc=0
    mkdir -p "$out"
    chmod 0755 "$out"  # root's, so not the image user's
    docker run --rm --network none \
        -v "$ROOT/sample_data/dicom:/app/data/input_data:ro" -v "$out:/app/data/output_data" \
        "$IMAGE" > "$WORK/unwritable.out" 2> "$WORK/unwritable.err" || rc=$?
    cat "$WORK/unwritable.err"
    [ "$rc" = 4 ] || fail "unwritable output: exit $rc, expected 4"
    grep -qF -- '--user "$(id -u):$(id -g)"' "$WORK/unwritable.err" || fail "unwritable output: no --user hint"
    [ -z "$(ls -A "$out")" ] || fail "unwritable output: something was written"
    echo "unwritable output: exit $rc"
}

run_help() {
    local flag
    docker run --rm --network none "$IMAGE" --help > "$WORK/help.txt" || fail "--help: exit $?, expected 0"
    cat "$WORK/help.txt"
    for flag in --workflow --input --output --no-sr --no-seg --no-qc --seeds --segments --head \
        --shard --progress --batch-size --device; do
        grep -qE -- "(^|[ ,\[])$flag([ ,=]|$)" "$WORK/help.txt" || fail "--help does not show $flag"
    done
}

save_and_check_archive() {
    docker save -o "$WORK/image.tar" "$IMAGE"
    echo "docker save archive: $(du -h "$WORK/image.tar" | cut -f1)"
    "$PY" scripts/container_check.py archive "$WORK/image.tar" --image "$IMAGE" \
        --user fmcib --base-image "$BASE_IMAGE" --weights-sha256 "$WEIGHTS_SHA256" \
        || fail "docker save archive config"
    rm -f "$WORK/image.tar"
}

report_sizes() {
    local name size
    for name in "$BASE_IMAGE" "$IMAGE" "$GPU_BASE_IMAGE"; do
        size=$(docker image inspect -f '{{.Size}}' "$name")
        printf 'image size %-48s %6d MB\n' "$name" $((size / 1000000))
    done
    echo "largest layers of $IMAGE:"
    docker history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | sort -rh | sed -n '1,5p' | cut -c1-110
}

# ------------------------------------------------------------------------- main

echo "container-test: work folder $WORK"
step "install docker.io and mmdebstrap if missing" install_tools
step "start a private dockerd (own network namespace, loopback only)" start_dockerd
step "base image: mmdebstrap bookworm minbase + python3, docker import" make_base_image
step "wheels of requirements/lock-cpu.txt (host pip)" download_wheels
step "random-initialised weights" write_weights
step "serve wheels and weights on 127.0.0.1 in the daemon's namespace" start_server
set_build_args
step "build dockerfiles/Dockerfile.cpu (classic builder, offline)" build_cpu
step "image user and torch" image_facts
step "run: default workflow on sample_data/dicom (--network none)" run_default
step "run: from_seeds, --read-only --tmpfs /tmp" run_seeds
step "native runs with the same weights" run_native
step "compare with the native runs; run.json; owners and modes" compare_with_native
step "run: output folder the image user cannot write" run_unwritable
step "run: --help" run_help
step "docker save and the archive's config" save_and_check_archive
step "build dockerfiles/Dockerfile --target base (up to the CUDA wheels)" build_gpu_base
step "image sizes" report_sizes

if [ ${#FAILED_CHECKS[@]} -gt 0 ]; then
    say "checks that failed"
    printf '  %s\n' "${FAILED_CHECKS[@]}"
    exit 1
fi
