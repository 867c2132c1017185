#!/bin/sh
# Run a command inside a private network namespace whose only interface is loopback.
#
# Orthanc 1.10 listens on every interface and cannot be told otherwise, so the DICOMweb
# tests start it (and every client that talks to it) in a namespace of their own: nothing
# in it can reach, or be reached from, any other network.
#
# Usage: scripts/netns-run.sh COMMAND [ARG...]
#   e.g. scripts/netns-run.sh .venv/bin/pytest tests/mhub_fmcib/dicomweb
#
# Needs root or CAP_SYS_ADMIN (as in the CI container); otherwise set
# NETNS_RUN_USERNS=1 to map the current user to root in a new user namespace.
set -eu
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi
if [ "${NETNS_RUN_USERNS:-0}" = "1" ]; then
    exec unshare --user --map-root-user --net -- sh -c 'ip link set lo up && exec "$@"' netns-run "$@"
fi
exec unshare --net -- sh -c 'ip link set lo up && exec "$@"' netns-run "$@"
