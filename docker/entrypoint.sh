#!/bin/sh
# The image's entrypoint: `accelerate launch --config_file <accelerate config> -m trainer ARGS...`,
# so the arguments of `docker compose run trainer ARGS...` reach the trainer.
#   TRAINER_ACCELERATE_CONFIG  accelerate config (default /config/accelerate/single_gpu.yaml;
#                              the CPU override selects /config/accelerate/cpu.yaml)
#   TRAINER_NUM_PROCESSES      total processes (e.g. the GPU count with multi_gpu.yaml)
#   TRAINER_NUM_MACHINES, TRAINER_MACHINE_RANK, TRAINER_MAIN_PROCESS_IP   several VMs (multi_node.yaml)
#   TRAINER_MODE               local|cloud when ARGS has no --mode; without --config in ARGS the
#                              run config is config/<mode>.yaml (WORKDIR is /, so /config/<mode>.yaml)
set -eu

die() { echo "trainer-entrypoint: $*" >&2; exit 2; }

config=${TRAINER_ACCELERATE_CONFIG:-/config/accelerate/single_gpu.yaml}
[ -r "$config" ] || die "accelerate config '$config' is not readable (TRAINER_ACCELERATE_CONFIG names a file under /config/accelerate/)"
[ -w /runs ] || die "/runs is not writable by uid $(id -u): give the host folder mounted there (TRAINER_RUNS_DIR, default ./runs) to uid $(id -u), or build the image with TRAINER_UID=<its owner>"

launch="--quiet --config_file $config"
[ -z "${TRAINER_NUM_PROCESSES:-}" ] || launch="$launch --num_processes $TRAINER_NUM_PROCESSES"
[ -z "${TRAINER_NUM_MACHINES:-}" ] || launch="$launch --num_machines $TRAINER_NUM_MACHINES"
[ -z "${TRAINER_MACHINE_RANK:-}" ] || launch="$launch --machine_rank $TRAINER_MACHINE_RANK"
[ -z "${TRAINER_MAIN_PROCESS_IP:-}" ] || launch="$launch --main_process_ip $TRAINER_MAIN_PROCESS_IP"

# The mode and config the user gave win; otherwise TRAINER_MODE picks both.
mode=${TRAINER_MODE:-}
has_mode=false
has_config=false
prev=
for arg in "$@"; do
  if [ "$prev" = --mode ]; then mode=$arg; has_mode=true; fi
  case $arg in
    --mode=*) mode=${arg#--mode=}; has_mode=true ;;
    --config | --config=*) has_config=true ;;
  esac
  prev=$arg
done
if [ -n "$mode" ]; then
  if [ "$has_config" = false ]; then set -- --config "config/$mode.yaml" "$@"; fi
  if [ "$has_mode" = false ]; then set -- --mode "$mode" "$@"; fi
fi

# --quiet: a failing trainer shows its own one-line error, not accelerate's traceback (exit 1).
# $launch holds flags and values without spaces: the word splitting is intended.
# shellcheck disable=SC2086
exec accelerate launch $launch -m trainer "$@"
