#!/bin/bash
# The image's entrypoint: `accelerate launch --config_file <accelerate config> -m trainer ARGS...`.
# ARGS (those of `docker compose run trainer ARGS...`) reach the trainer untouched: which mode and which
# run config is the trainer's own rule (--mode, else TRAINER_MODE, else local; --config, else
# config/<mode>.yaml, which is /config/<mode>.yaml here since WORKDIR is /).
#
# How many processes, on how many machines, with which accelerate config is derived here, once, from
# counts the VM's .env holds (Ansible writes them from Terraform's outputs):
#   TRAINER_GPU_COUNT          processes on this machine, one per GPU (compose passes GPU_COUNT; default 1)
#   TRAINER_NUM_MACHINES       machines in the run (Terraform's node_count; default 1)
#   TRAINER_MACHINE_RANK       this machine's rank, 0 on the main node (default 0)
#   TRAINER_MAIN_PROCESS_IP    the main node's internal address (needed with several machines)
#   TRAINER_MAIN_PROCESS_PORT  the rendezvous port on it (default 29500; the firewall opens it between nodes)
#   TRAINER_NUM_PROCESSES      total processes, when not GPU count x machines (rarely needed)
#   TRAINER_ACCELERATE_CONFIG  the one-process config (default /config/accelerate/single_gpu.yaml; the
#                              CPU override selects /config/accelerate/cpu.yaml)
# One process: TRAINER_ACCELERATE_CONFIG. Several on one machine: multi_gpu.yaml. Several machines:
# multi_node.yaml. (On a machine without a GPU the trainer runs each process on the CPU, over gloo.)
#
# `tune ARGS...` runs a hyperparameter search instead (python -m trainer.tune ARGS, make tune MODE=cloud): its
# trials are single-process runs, one at a time in that process or one worker process per GPU, so no
# launcher; tini (compose's init) hands SIGTERM to it and it stops its trials at a checkpoint.
set -euo pipefail

die() { echo "trainer-entrypoint: $*" >&2; exit 2; }
if [[ "${1:-}" == tune ]]; then
  shift
  [[ -w /runs ]] || die "/runs is not writable by uid $(id -u): give the host folder mounted there (TRAINER_RUNS_DIR, default ./runs) to uid $(id -u)"
  exec python -m trainer.tune "$@"
fi
count() { # NAME VALUE: a whole number from 1
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a whole number from 1, got '$2'"
}

per_machine=${TRAINER_GPU_COUNT:-1}
machines=${TRAINER_NUM_MACHINES:-1}
rank=${TRAINER_MACHINE_RANK:-0}
port=${TRAINER_MAIN_PROCESS_PORT:-29500}
count TRAINER_GPU_COUNT "$per_machine"
count TRAINER_NUM_MACHINES "$machines"
count TRAINER_MAIN_PROCESS_PORT "$port"
((port < 65536)) || die "TRAINER_MAIN_PROCESS_PORT must be a port number (1-65535), got '$port'"
if ! [[ "$rank" =~ ^[0-9]+$ ]] || ((rank >= machines)); then
  die "TRAINER_MACHINE_RANK must be a whole number from 0 to $((machines - 1)) (TRAINER_NUM_MACHINES - 1), got '$rank'"
fi
processes=${TRAINER_NUM_PROCESSES:-$((per_machine * machines))}
count TRAINER_NUM_PROCESSES "$processes"

launch=(--quiet)
if ((machines > 1)); then
  ip=${TRAINER_MAIN_PROCESS_IP:-}
  [[ "$ip" =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] \
    || die "TRAINER_MAIN_PROCESS_IP must be the main node's IPv4 address with TRAINER_NUM_MACHINES=$machines, got '$ip'"
  config=/config/accelerate/multi_node.yaml
  launch+=(--num_machines "$machines" --machine_rank "$rank" --main_process_ip "$ip" --main_process_port "$port")
elif ((processes > 1)); then
  config=/config/accelerate/multi_gpu.yaml
  launch+=(--main_process_port "$port")
else
  config=${TRAINER_ACCELERATE_CONFIG:-/config/accelerate/single_gpu.yaml}
fi
[[ -r "$config" ]] || die "accelerate config '$config' is not readable (TRAINER_ACCELERATE_CONFIG names a file under /config/accelerate/)"
[[ -w /runs ]] || die "/runs is not writable by uid $(id -u): give the host folder mounted there (TRAINER_RUNS_DIR, default ./runs) to uid $(id -u), or build the image with TRAINER_UID=<its owner>"
launch+=(--config_file "$config" --num_processes "$processes")

# SIGTERM (docker stop, a spot VM's soft-off) must reach the trainer processes, which checkpoint and exit
# (with several they agree on the step to stop at). accelerate's launcher neither forwards it nor survives it
# (its death would end the container, the trainer with it), and a signal to the whole process group would
# also reach the DataLoader workers, whose SIGTERM handler (torch's) kills them and fails the run. So the
# launcher runs as a job of its own (set -m: it keeps SIGINT), this script hands SIGTERM and SIGINT to the
# launcher's children, the trainer processes, then exits with the launcher's status.
# torchrun's agent (several processes) would catch SIGTERM and kill the workers after 30 s: it is left
# SIGINT, SIGHUP and SIGQUIT only.
export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT
set -m
accelerate launch "${launch[@]}" -m trainer "$@" &
launcher=$!
children=/proc/$launcher/task/$launcher/children  # the launcher's own processes, one line of PIDs
pids=
trap 'pids=$(cat "$children" 2>/dev/null || true); kill -TERM ${pids:-$launcher} 2>/dev/null || true' TERM
trap 'pids=$(cat "$children" 2>/dev/null || true); kill -INT ${pids:-$launcher} 2>/dev/null || true' INT
status=0
while :; do
  wait "$launcher" && status=0 || status=$?
  kill -0 "$launcher" 2>/dev/null || break  # still there: the wait was cut short by a signal
done
exit "$status"
