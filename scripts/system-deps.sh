#!/usr/bin/env bash
# Debian tools the tests use, installed when running as root and missing: Orthanc + its
# DICOMweb plugin, dcmtk (dsrdump), chromium (the QC page in a browser), node + npm (dcmjs).
# Only the missing ones are asked for: a machine whose Node.js comes from another package
# (which bundles npm and conflicts with Debian's npm) keeps it.
set -euo pipefail
need=()
command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v dsrdump >/dev/null 2>&1 || need+=(dcmtk)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ! command -v npm >/dev/null 2>&1; then
    if command -v node >/dev/null 2>&1; then need+=(npm); else need+=(nodejs npm); fi
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
    echo "note: ${need[*]} missing and not root: their tests will skip"
fi
