#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `slurm` tests and for trying the SLURM commands of
# docs/clusters.md: installs Debian's slurmctld, slurmd and munge when missing (root), writes a
# slurm.conf naming this host, starts munged, slurmctld and slurmd, and waits until the node is idle.
# Stop it with scripts/slurm-down.sh. Needs root (CI runs as root).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "slurm-up.sh: needs root (it installs and starts system daemons)" >&2; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/log/munge /var/lib/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=localhost
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120): 10 on this test cluster
AuthInfo=cred_expire=10
# the scheduling passes (which start a requeued job once its wait is over) every 5 s, not 60 and 30
SchedulerParameters=sched_interval=5,bf_interval=5
ProctrackType=proctrack/linuxproc
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmUser=root
TaskPlugin=task/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MinJobAge=600
NodeName=localhost CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
[ -s /etc/munge/munge.key ] || mungekey -c >/dev/null 2>&1 || mungekey --create
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- munged
if pgrep -x slurmctld >/dev/null; then scontrol reconfigure; fi  # already up: this slurm.conf
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then echo "slurm-up.sh: node localhost idle ($CPUS CPUs)"; exit 0; fi
  sleep 1
done
echo "slurm-up.sh: the node did not become idle in 60 s; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
