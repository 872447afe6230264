#!/usr/bin/env bash
# Start a real single-node SLURM on this machine, for tests/test_engine.py (CI: best effort, like Chromium).
# Debian's slurmctld/slurmd/munge, no systemd: munged, slurmctld and slurmd are started by hand, as root,
# with a minimal slurm.conf for this machine (the node line from `slurmd -C`), no accounting database.
# Usage: sudo scripts/start_slurm.sh   (then `sinfo` shows the node idle; `scripts/start_slurm.sh stop` ends it)
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
  pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "start_slurm.sh: needs root (it installs packages and starts daemons)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  (apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null 2>&1) \
    || (apt-get update -qq && apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null)
fi
host=$(hostname -s)
mkdir -p /etc/slurm /etc/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force
# the node exactly as slurmd sees it (CPUs, sockets, cores, threads, memory), so it is not drained
node=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=${host}/")
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=izfbook
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
${node} State=UNKNOWN
PartitionName=main Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    sinfo
    exit 0
  fi
  sleep 1
done
echo "start_slurm.sh: the node did not come up; see /var/log/slurm/" >&2
sinfo || true
exit 1
