#!/bin/bash
# The image's entrypoint: `accelerate launch --config_file <accelerate config> -m trainer ARGS...`.
# ARGS (those of `docker compose run trainer ARGS...`) reach the trainer untouched: which mode and which
# run config is the trainer's own rule (--mode, else TRAINER_MODE, else local; --config, else
# config/<mode>.yaml, which is /config/<mode>.yaml here since WORKDIR is /).
#   TRAINER_ACCELERATE_CONFIG  accelerate config (default /config/accelerate/single_gpu.yaml;
#                              the CPU override selects /config/accelerate/cpu.yaml)
#   TRAINER_NUM_PROCESSES      total processes (e.g. the GPU count with multi_gpu.yaml)
#   TRAINER_NUM_MACHINES, TRAINER_MACHINE_RANK, TRAINER_MAIN_PROCESS_IP   several VMs (multi_node.yaml)
set -euo pipefail

die() { echo "trainer-entrypoint: $*" >&2; exit 2; }

config=${TRAINER_ACCELERATE_CONFIG:-/config/accelerate/single_gpu.yaml}
[[ -r "$config" ]] || die "accelerate config '$config' is not readable (TRAINER_ACCELERATE_CONFIG names a file under /config/accelerate/)"
[[ -w /runs ]] || die "/runs is not writable by uid $(id -u): give the host folder mounted there (TRAINER_RUNS_DIR, default ./runs) to uid $(id -u), or build the image with TRAINER_UID=<its owner>"

# --quiet: a failing trainer shows its own one-line error, not accelerate's traceback (exit 1).
launch=(--quiet --config_file "$config")
[[ -z "${TRAINER_NUM_PROCESSES:-}" ]] || launch+=(--num_processes "$TRAINER_NUM_PROCESSES")
[[ -z "${TRAINER_NUM_MACHINES:-}" ]] || launch+=(--num_machines "$TRAINER_NUM_MACHINES")
[[ -z "${TRAINER_MACHINE_RANK:-}" ]] || launch+=(--machine_rank "$TRAINER_MACHINE_RANK")
[[ -z "${TRAINER_MAIN_PROCESS_IP:-}" ]] || launch+=(--main_process_ip "$TRAINER_MAIN_PROCESS_IP")

# SIGTERM (docker stop, a spot VM's soft-off) must reach the trainer, which checkpoints and exits: accelerate's
# launcher neither forwards it nor survives it (its death would end the container, the trainer with it). So
# it is ignored here, which accelerate inherits, and compose's init (tini, TINI_KILL_PROCESS_GROUP=1) sends
# it to the whole process group; the trainer installs its own handler.
trap '' TERM
exec accelerate launch "${launch[@]}" -m trainer "$@"
