#!/usr/bin/env bash
# The cloud verbs behind mk/infra.mk: pre-flight checks, terraform init/apply/destroy, ssh, training
# on the VM and fetching a run's artifacts. Every user mistake ends in one line starting "error:".
#
#   tf_cloud.sh preflight [tfvars] [ssh-key] [creds]    check what the next step needs (and terraform)
#   tf_cloud.sh preflight-local [ssh-key] [creds]       the same, for verbs that need no terraform
#   tf_cloud.sh init | plan | apply                     terraform in $INFRA_DIR with $TFVARS
#   tf_cloud.sh down-targets                            print what `down` destroys, one address a line
#   tf_cloud.sh down                                    destroy the VM side, keep the bucket (see below)
#   tf_cloud.sh ssh [command...]                        ssh to node 0
#   tf_cloud.sh train RUN [ARGS...]                     ship code, config and data, start run RUN detached on
#                                                       the VM, follow its log (a running RUN: just follow)
#   tf_cloud.sh start RUN [ARGS...]                     the same, without following: returns once started
#   tf_cloud.sh logs RUN [--follow]                     the run's console output so far (every attempt);
#                                                       --follow until it ends (exit 0: finished, 1: not)
#   tf_cloud.sh state RUN                               one word: running|finished|failed|interrupted|unknown
#   tf_cloud.sh runs                                    every run on the VM and in the bucket: state, cost
#   tf_cloud.sh stop RUN                                stop it cleanly (SIGTERM: checkpoint to the bucket)
#   tf_cloud.sh fetch RUN                               copy gs://<bucket>/runs/RUN to runs/RUN
#
# Detached runs: on the VM a run is the systemd unit trainer-run@RUN (the trainer_host role installs it
# with /usr/local/sbin/trainer-run, whose header says why a unit rather than a detached container): it
# does not depend on this SSH session, resumes by itself at boot after a preemption, and keeps its
# console output on the data disk. Ctrl-C or a dropped connection while following only stops following.
# A run whose VM disk has no checkpoint resumes from the newest complete one in the bucket (the trainer
# does it). For `make watch` (scripts/cloud_watch.py): `train RUN ARGS...` restarts an unfinished run and
# returns when it ends (0: finished), `start` returns at once, `state` says where a run is.
#
# The VM's address, SSH port, login user, bucket and folders come from the Ansible inventory that
# `make inventory` writes from Terraform's outputs (scripts/make_inventory.py --show), so the
# playbook and these verbs never disagree. Bucket access from here uses the project's own
# google-cloud-storage code (python -m trainer.bucket) with application-default credentials.
#
# Environment: INFRA_DIR (infra), TFVARS (infra/terraform.tfvars), SSH_KEY (~/.ssh/id_ed25519),
# SSH_PORT (overrides the inventory's port), SSH_KNOWN_HOSTS (a known_hosts file of its own),
# INVENTORY (ansible/inventory/hosts.yml), PY (.venv/bin/python), KEEP_DATA_DISK (1: `down` keeps the
# data disk), AUTO_APPROVE (1: no prompt), DATA (file, folder or gs:// URL for `train`), MODEL (a
# local model folder for `train`), SOURCE (vm: `fetch` copies from the VM's data disk).
set -euo pipefail
shopt -s inherit_errexit  # a failing $(...) stops the script too

INFRA_DIR=${INFRA_DIR:-infra}
TFVARS=${TFVARS:-$INFRA_DIR/terraform.tfvars}
SSH_KEY=${SSH_KEY:-$HOME/.ssh/id_ed25519}
TERRAFORM=${TERRAFORM:-terraform}
INVENTORY=${INVENTORY:-ansible/inventory/hosts.yml}
PY=${PY:-.venv/bin/python}
# What a value must look like before it goes into a command line run on the VM.
NAME_RE='^[A-Za-z0-9][A-Za-z0-9._-]*$'
HOST_RE='^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$'
USER_RE='^[a-z_][a-z0-9_-]*$'
PATH_RE='^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$'
BUCKET_RE='^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$'
# The run manager that the trainer_host role installs on the VM (ansible/roles/trainer_host/files).
RUN_MANAGER=/usr/local/sbin/trainer-run
GS_DATA_RE='^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[A-Za-z0-9._=-]+)+/?$'

die() { echo "error: $*" >&2; exit 1; }
tf() { "$TERRAFORM" -chdir="$INFRA_DIR" "$@"; }
quoted() { local out; printf -v out '%q ' "$@"; printf '%s' "${out% }"; }

tfvars_abs() { (cd "$(dirname "$TFVARS")" && echo "$PWD/$(basename "$TFVARS")"); }

check_terraform() {
  command -v "$TERRAFORM" >/dev/null 2>&1 ||
    die "terraform is not installed (>= 1.5 needed): see https://developer.hashicorp.com/terraform/install"
}

check_tfvars() {
  [[ -f "$TFVARS" ]] ||
    die "$TFVARS not found: cp $INFRA_DIR/terraform.tfvars.example $TFVARS and set project_id and ssh_source_ranges"
}

check_python() {
  [[ -x "$PY" ]] || die "$PY not found: run make setup (the cloud verbs use the project's Google client)"
}

# Really loads the application-default credentials (google.auth) and names their project.
check_creds() {
  if [[ -n "${GOOGLE_APPLICATION_CREDENTIALS:-}" && ! -f "$GOOGLE_APPLICATION_CREDENTIALS" ]]; then
    die "GOOGLE_APPLICATION_CREDENTIALS=$GOOGLE_APPLICATION_CREDENTIALS does not exist: point it to a key file or unset it and run 'gcloud auth application-default login'"
  fi
  check_python
  "$PY" -m trainer.bucket creds || exit 1
}

check_ssh_key() {
  [[ -f "$SSH_KEY" ]] || die "SSH key $SSH_KEY not found: set SSH_KEY=<private key> (its .pub is ssh_public_key_path) or run ssh-keygen -t ed25519"
}

preflight() {  # preflight-local: the same without terraform (the verbs that only use the VM)
  [[ "$1" == local ]] || check_terraform
  shift
  local what
  for what in "$@"; do
    case $what in
      tfvars) check_tfvars ;;
      creds) check_creds ;;
      ssh-key) check_ssh_key ;;
      *) die "unknown pre-flight check: $what" ;;
    esac
  done
}

# Local state by default; GCS when the user wrote $INFRA_DIR/backend.hcl.
init() {
  local override=$INFRA_DIR/backend_override.tf
  if [[ -f "$INFRA_DIR/backend.hcl" ]]; then
    printf '%s\n' '# Written by make infra-init because backend.hcl exists: the state lives in GCS.' \
      'terraform {' '  backend "gcs" {}' '}' >"$override"
    tf init -input=false -backend-config=backend.hcl
  else
    rm -f "$override"
    tf init -input=false
  fi
}

approve=()
# The zone `make watch` / infra-apply moved the VM to after a stock-out (scripts/cloud_watch.py writes
# it): named after the user's tfvars so it wins over their `zone` until infra-down.
zone_file=()
if [[ -f "$INFRA_DIR/zone.auto.tfvars.json" ]]; then zone_file=(-var-file=zone.auto.tfvars.json); fi
if [[ "${AUTO_APPROVE:-}" == 1 ]]; then approve=(-auto-approve); fi

# infra-down destroys everything except the bucket (unless force_destroy), the enabled APIs (never
# disabled anyway) and, with KEEP_DATA_DISK=1, the data disk. Destroying a resource by -target
# also destroys what depends on it, so nothing kept may depend on a destroyed resource: the bucket
# depends only on the APIs, the data disk only on the APIs.
down_targets() {
  local force keep='^google_project_service\.'
  force=$(tf output -json bucket_force_destroy 2>/dev/null || true)
  [[ "$force" == true ]] || keep+='|^google_storage_bucket\.artifacts$'
  [[ "${KEEP_DATA_DISK:-}" == 1 ]] && keep+='|^google_compute_disk\.data$'
  { tf state list 2>/dev/null || true; } | sed 's/\[.*$//' | sort -u | grep -Ev "$keep" || true
}

down() {
  local targets=() t
  mapfile -t targets < <(down_targets)
  if [[ ${#targets[@]} -eq 0 ]]; then
    echo "infra-down: nothing to destroy in $INFRA_DIR's state"
    return 0
  fi
  echo "infra-down destroys: ${targets[*]}"
  echo "infra-down keeps: $({ tf state list 2>/dev/null || true; } | sed 's/\[.*$//' | sort -u |
    grep -Fvx -f <(printf '%s\n' "${targets[@]}") | tr '\n' ' ')"
  local args=()
  for t in "${targets[@]}"; do args+=("-target=$t"); done
  tf destroy -input=false -var-file="$(tfvars_abs)" "${zone_file[@]}" "${approve[@]}" "${args[@]}"
  rm -f "$INFRA_DIR/zone.auto.tfvars.json"  # the next infra-up starts from the configured zone again
}

# ---------------------------------------------------------------- the VM, from the inventory

declare -A vm=()
ssh_opts=()

# Fills vm[host port user bucket_url project_dir data_mount] and ssh_opts; every value checked.
read_connection() {
  local shown line
  # (the variables that only `make inventory` reads are left out: SSH_PORT is checked here)
  shown=$(env -u SSH_PORT -u TRAINER_VM_PROJECT_DIR -u TRAINER_VM_DATA_MOUNT \
    python3 scripts/make_inventory.py --show --out "$INVENTORY" 2>&1) || die "${shown#make_inventory: }"
  while IFS= read -r line; do vm[${line%%=*}]=${line#*=}; done <<<"$shown"
  [[ -n "${SSH_PORT:-}" ]] && vm[port]=$SSH_PORT
  [[ "${vm[host]:-}" =~ $HOST_RE ]] || die "inventory $INVENTORY: VM address '${vm[host]:-}' is not an IP address or host name: run make inventory again"
  if ! [[ "${vm[port]:-}" =~ ^[1-9][0-9]{0,4}$ ]] || ((vm[port] > 65535)); then
    die "SSH port '${vm[port]:-}' is not a number from 1 to 65535 (SSH_PORT or the inventory's ansible_port)"
  fi
  [[ "${vm[user]:-}" =~ $USER_RE ]] || die "inventory $INVENTORY: login user '${vm[user]:-}' is not a valid user name"
  [[ "${vm[bucket_url]:-}" =~ $BUCKET_RE ]] || die "inventory $INVENTORY: bucket '${vm[bucket_url]:-}' is not a gs://bucket URL: run make inventory after make infra-up"
  local key
  for key in project_dir data_mount; do
    [[ "${vm[$key]:-}" =~ $PATH_RE && "${vm[$key]}" != *..* ]] ||
      die "inventory $INVENTORY: $key '${vm[$key]:-}' is not a plain absolute path"
  done
  ssh_opts=(-i "$SSH_KEY" -p "${vm[port]}" -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new
    -o ConnectTimeout=10)
  if [[ -n "${SSH_KNOWN_HOSTS:-}" ]]; then ssh_opts+=(-o "UserKnownHostsFile=$SSH_KNOWN_HOSTS"); fi
}

# The one place a command line goes to the VM; every value in it was checked and %q-quoted first.
# shellcheck disable=SC2029  # expanded here, on the client side, on purpose
on_vm() { ssh "${ssh_opts[@]}" "${vm[user]}@${vm[host]}" "$@"; }

# Before anything is copied or started: the VM answers over SSH, sudo and Docker work there, and
# provisioning has run (the compose settings it writes exist).
probe_vm() {
  local where="${vm[user]}@${vm[host]} port ${vm[port]}" out rc=0
  out=$(on_vm "sudo -n docker info --format ok >/dev/null && test -f $(quoted "${vm[project_dir]}/.env") \
&& test -x $RUN_MANAGER" 2>&1 </dev/null) || rc=$?
  if ((rc == 255)); then
    die "cannot reach the VM over SSH at $where ($(tail -n1 <<<"$out" | tr -d '\r')): is it running? (make infra-apply starts a stopped VM and writes its new address)"
  elif ((rc != 0)); then
    die "the VM at $where is not ready (no sudo, Docker, ${vm[project_dir]}/.env or $RUN_MANAGER): run make provision"
  fi
}

do_ssh() {
  read_connection
  exec ssh "${ssh_opts[@]}" "${vm[user]}@${vm[host]}" "$@"
}

# ---------------------------------------------------------------- train

check_run_name() {
  [[ "$1" =~ $NAME_RE ]] ||
    die "RUN='$1': a run name has letters, digits, '.', '_' and '-' only, and starts with a letter or digit"
}

check_args() {
  local arg
  for arg in "$@"; do
    [[ "$arg" != *[[:cntrl:]]* ]] || die "ARGS holds a control character (a newline?): pass each flag on one line"
  done
}

# The commit that the VM will run: HEAD, with -dirty when the shipped tree differs from it.
shipped_commit() {
  local commit
  commit=$(git rev-parse HEAD 2>/dev/null) ||
    die "$PWD is not a git work tree with a commit: train-cloud ships the git-tracked files (git init && git commit)"
  if [[ -n "$(git status --porcelain --untracked-files=normal 2>/dev/null)" ]]; then commit+=-dirty; fi
  printf '%s\n' "$commit"
}

# Copies go over ssh as tar streams: nothing beyond ssh and tar is needed on either side.
# What lands on the data disk belongs to the login user, whose ids the image's user has (the .env that
# provisioning writes), so the trainer can read files whatever their mode here (safetensors: 0600).
push() {  # push LOCAL_DIR NAME REMOTE_DIR: LOCAL_DIR/NAME -> REMOTE_DIR/NAME (replaced)
  local dir=$1 name=$2 dest=$3
  tar -C "$dir" -cf - "$name" | on_vm "sudo mkdir -p $(quoted "$dest") && sudo rm -rf $(quoted "$dest/$name") \
&& sudo tar -C $(quoted "$dest") -xf - --no-same-owner && sudo chown -R $(quoted "${vm[user]}:") $(quoted "$dest/$name")"
}

# The project as the trainer_host role ships it (git-tracked plus untracked files git does not
# ignore), replacing the VM's copy whole so deleted files go too; provisioning's .env stays.
push_code() {
  local dir=${vm[project_dir]} new="${vm[project_dir]}.incoming" old="${vm[project_dir]}.previous"
  local q_dir q_new q_old
  q_dir=$(quoted "$dir") q_new=$(quoted "$new") q_old=$(quoted "$old")
  git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --ignore-failed-read -czf - |
    on_vm "set -e; sudo rm -rf $q_new $q_old; sudo mkdir -p $q_new; sudo tar -C $q_new -xzf - --no-same-owner; \
sudo cp -p $q_dir/.env $q_new/.env; sudo chown -R $(quoted "${vm[user]}:") $q_new; \
sudo mv $q_dir $q_old; sudo mv $q_new $q_dir; sudo rm -rf $q_old"
}

# train RUN ARGS... (FOLLOW=0: start only). A run already running on the VM is followed, never shipped
# over or started twice.
train() {
  local run=${1:-} follow=${FOLLOW:-1}
  [[ $# -gt 0 ]] && shift
  check_run_name "$run"
  local args=("$@") extra=() commit
  check_args "${args[@]}"
  commit=$(shipped_commit)
  if [[ -n "${DATA:-}" ]]; then
    if [[ "$DATA" == gs://* ]]; then
      [[ "$DATA" =~ $GS_DATA_RE ]] || die "DATA=$DATA: a gs:// URL of letters, digits and . _ - = / only"
    else
      [[ -e "$DATA" ]] || die "DATA=$DATA does not exist: pass a CSV/JSONL/Parquet file, a saved dataset folder or a gs:// URL"
      [[ "$(basename "$DATA")" =~ $NAME_RE ]] || die "DATA=$DATA: name the file with letters, digits, '.', '_' and '-' only"
    fi
  elif [[ ! -f data/demo/tweets.csv ]]; then
    die "no data for the run: pass DATA=path/to.csv or DATA=gs://bucket/file.csv, or run make data for the demo tweets"
  fi
  if [[ -n "${MODEL:-}" ]]; then
    [[ -d "$MODEL" ]] || die "MODEL=$MODEL is not a folder: pass a saved model folder (hub models: ARGS='--set model.name=<id>')"
    [[ "$(basename "$MODEL")" =~ $NAME_RE ]] || die "MODEL=$MODEL: name the folder with letters, digits, '.', '_' and '-' only"
  fi
  read_connection
  # Several VMs: each runs the container with its rank (.env), but starting and following all of them is
  # not built yet; refuse rather than train on node 0 while the others idle on the bill.
  [[ "${vm[nodes]}" == 1 ]] ||
    die "the infrastructure has ${vm[nodes]} nodes (node_count): make train MODE=cloud runs on one VM only; set node_count = 1 in $TFVARS and make infra-up, or start the trainer on every node by hand (README: Scaling out)"
  check_python
  "$PY" -m trainer.bucket check "${vm[bucket_url]}" || exit 1
  probe_vm

  if [[ "$(run_state "$run")" == running ]]; then
    echo "train-cloud: run $run is already running on the VM: nothing shipped"
  else
    local target="${vm[user]}@${vm[host]}:${vm[port]}" data_dir="${vm[data_mount]}/data"
    echo "train-cloud: shipping the project ($commit) to $target:${vm[project_dir]}"
    push_code
    if [[ -z "${DATA:-}" ]]; then
      echo "train-cloud: copying data/demo/ to $target:$data_dir/"  # config/cloud.yaml reads /data/demo/tweets.csv
      push data demo "$data_dir"
    elif [[ "$DATA" == gs://* ]]; then
      extra+=(--set "data.path=$DATA")
    else
      echo "train-cloud: copying $DATA to $target:$data_dir/"
      push "$(dirname "$DATA")" "$(basename "$DATA")" "$data_dir"
      extra+=(--set "data.path=/data/$(basename "$DATA")")
    fi
    if [[ -n "${MODEL:-}" ]]; then
      echo "train-cloud: copying $MODEL to $target:${vm[data_mount]}/models/"
      push "$(dirname "$MODEL")" "$(basename "$MODEL")" "${vm[data_mount]}/models"
      extra+=(--set "model.name=/models/$(basename "$MODEL")")
    fi
    echo "train-cloud: building the image on the VM (only what changed is rebuilt)"
    on_vm "cd $(quoted "${vm[project_dir]}") && sudo env DOCKER_BUILDKIT=0 COMPOSE_BAKE=false docker compose build --quiet trainer" </dev/null
    echo "train-cloud: run $run; artifacts in /runs/$run on the data disk and under ${vm[bucket_url]}/runs/$run"
    on_vm "sudo $RUN_MANAGER start $(quoted "$run" --env "TRAINER_GIT_COMMIT=$commit" -- --mode cloud "${extra[@]}" "${args[@]}")" </dev/null
  fi
  if [[ "$follow" == 0 ]]; then
    echo "train-cloud: follow it with: make logs RUN=$run"
    return 0
  fi
  follow "$run"
  echo "train-cloud: done; bring it home with: make fetch RUN=$run"
}

run_state() {
  on_vm "sudo $RUN_MANAGER state $(quoted "$1")" </dev/null
}

# Follows the run's log until it ends. Ctrl-C or a lost connection ends only the following.
follow() {
  local run=$1 rc=0
  trap 'echo; echo "train-cloud: stopped following; run $run goes on on the VM (make logs RUN=$run)"; exit 130' INT
  echo "train-cloud: following run $run (Ctrl-C stops following, not the run)"
  on_vm "sudo $RUN_MANAGER logs $(quoted "$run") --follow" </dev/null || rc=$?
  trap - INT
  ((rc != 0)) || return 0
  local now
  now=$(run_state "$run" 2>/dev/null) || now=unreachable
  case $now in
    running) die "stopped following (the connection ended); run $run goes on there: make logs RUN=$run reattaches" ;;
    unreachable) die "lost the connection to the VM; if it is up, run $run goes on there: make logs RUN=$run reattaches" ;;
    *) die "run $run is $now: make logs RUN=$run shows why; make train MODE=cloud RUN=$run resumes it" ;;
  esac
}

vm_verb() {  # logs | state | stop, on run RUN
  local verb=$1 run=${2:-}
  shift 2 || true
  [[ -n "$run" ]] || die "which run? make $verb RUN=<run name> (make runs lists them)"
  check_run_name "$run"
  read_connection
  case $verb in
    logs)
      if [[ "${1:-}" == --follow ]]; then follow "$run"; else on_vm "sudo $RUN_MANAGER logs $(quoted "$run")" </dev/null; fi ;;
    state) run_state "$run" ;;
    stop)
      echo "stop: stopping run $run (the trainer saves a checkpoint to the bucket first)"
      on_vm "sudo $RUN_MANAGER stop $(quoted "$run")" </dev/null ;;
  esac
}

# Every run the VM knows (its data disk) and the bucket knows (finished ones and checkpoints), merged:
# the VM's state wins (it knows what is running), the bucket fills in the rest.
runs() {
  read_connection
  local -A state=() cost=() where=()
  local name st co vm_out bucket_out
  if vm_out=$(on_vm "sudo $RUN_MANAGER list" 2>/dev/null </dev/null); then
    while IFS=$'\t' read -r name st co; do
      [[ -n "$name" ]] || continue
      state[$name]=$st cost[$name]=$co where[$name]=vm
    done <<<"$vm_out"
  else
    echo "runs: the VM does not answer over SSH (stopped?): runs from the bucket only" >&2
  fi
  check_python
  bucket_out=$("$PY" -m trainer.bucket runs "${vm[bucket_url]}") || exit 1
  while IFS=$'\t' read -r name st co; do
    [[ -n "$name" ]] || continue
    if [[ -n "${where[$name]:-}" ]]; then
      where[$name]+=",bucket"
      [[ "${cost[$name]}" != - ]] || cost[$name]=$co
      [[ "${state[$name]}" != unknown ]] || state[$name]=$st
    else
      state[$name]=$st cost[$name]=$co where[$name]=bucket
    fi
  done <<<"$bucket_out"
  printf '%-32s %-12s %-10s %s\n' RUN STATE COST_USD WHERE
  local names=()
  mapfile -t names < <(printf '%s\n' "${!state[@]}" | sort)
  for name in "${names[@]}"; do
    printf '%-32s %-12s %-10s %s\n' "$name" "${state[$name]}" "${cost[$name]}" "${where[$name]}"
  done
  echo "(cost: the manifest's estimate of finished runs; the bill is in Cloud Billing)"
}

fetch() {
  local run=${1:-}
  [[ -n "$run" ]] || die "which run? make fetch RUN=<run name> (the name train-cloud printed)"
  check_run_name "$run"
  [[ ! -e "runs/$run" ]] || [[ -d "runs/$run" && -z "$(ls -A "runs/$run")" ]] ||
    die "runs/$run already exists: move it away first (nothing was fetched)"
  read_connection
  if [[ "${SOURCE:-bucket}" == vm ]]; then
    check_ssh_key
    mkdir -p "runs/$run"
    on_vm "sudo tar -C $(quoted "${vm[data_mount]}/runs/$run") -cf - ." </dev/null | tar -C "runs/$run" -xf - ||
      { rmdir "runs/$run" 2>/dev/null; die "no run $run on the VM's data disk (${vm[data_mount]}/runs)"; }
    echo "fetch: runs/$run (from the VM's data disk)"
  else
    check_creds >/dev/null
    "$PY" -m trainer.bucket fetch "${vm[bucket_url]}/runs/$run" "runs/$run" || exit 1
  fi
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  preflight) preflight terraform "$@" ;;
  preflight-local) preflight local "$@" ;;
  init) check_terraform; init ;;
  plan)
    tf plan -input=false -var-file="$(tfvars_abs)" "${zone_file[@]}" -out=tfplan
    tf show -json tfplan | "$PY" -m trainer.prices plan - ;;
  apply) tf apply -input=false -var-file="$(tfvars_abs)" "${zone_file[@]}" "${approve[@]}" ;;
  down-targets) check_terraform; down_targets ;;
  down) down ;;
  ssh) check_ssh_key; do_ssh "$@" ;;
  train) check_ssh_key; train "$@" ;;
  start) check_ssh_key; FOLLOW=0 train "$@" ;;
  logs | state | stop) check_ssh_key; vm_verb "$cmd" "$@" ;;
  runs) check_ssh_key; runs ;;
  fetch) fetch "$@" ;;
  *) die "usage: $0 preflight|init|plan|apply|down-targets|down|ssh|train|start|logs|state|runs|stop|fetch ..." ;;
esac
