#!/usr/bin/env bash
# The Slurm part of CI (issue #5). Self-contained and idempotent; called by .ci/run.
#
#   bash .ci/slurm.sh install   the Debian packages (slurmctld slurmd slurm-client munge), once
#   bash .ci/slurm.sh test      install, then the Slurm tests (pytest -m slurm) under `timeout`,
#                               with the test cluster always stopped afterwards (trap EXIT)
#   bash .ci/slurm.sh stop      stop a leftover test cluster (safe when none runs)
#
# The tests start and stop the two-node cluster themselves (tests/slurm/cluster.sh, from a
# pytest fixture); the EXIT trap here also stops it when pytest is killed by the timeout.
# SLURM_TEST_TIMEOUT (seconds, default 2700) bounds the whole test step.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=tests/slurm/cluster.sh

if [[ $(id -u) != 0 ]]; then
    echo "[.ci/slurm.sh] not root: no Slurm cluster here (the Slurm tests will skip)" >&2
    exit 0
fi

case ${1:-test} in
install)
    bash "$CLUSTER" install
    ;;
stop)
    bash "$CLUSTER" stop
    ;;
test)
    bash "$CLUSTER" install
    trap 'bash "$CLUSTER" stop || true' EXIT
    bash "$CLUSTER" stop  # a cluster left over by a killed run would break the next start
    # ALPAGASUS_REQUIRE_SLURM=1: a cluster that cannot start fails the step instead of skipping.
    ALPAGASUS_REQUIRE_SLURM=1 timeout -k 30 "${SLURM_TEST_TIMEOUT:-2700}" \
        python3 -m pytest -q -m slurm tests/test_slurm.py
    ;;
*)
    echo "usage: $0 {install|test|stop}" >&2
    exit 2
    ;;
esac
