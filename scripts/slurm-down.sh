#!/usr/bin/env bash
# Stop the one-node cluster of scripts/slurm-up.sh (its jobs are cancelled first).
set -uo pipefail
scancel --user="$(id -un)" 2>/dev/null
pkill -x slurmd; pkill -x slurmctld; pkill -x munged
exit 0
