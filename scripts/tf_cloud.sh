#!/usr/bin/env bash
# The cloud verbs behind mk/infra.mk: pre-flight checks, terraform init/apply/destroy, ssh, training
# on the VM and fetching a run's artifacts. Every user mistake ends in one line starting "error:".
#
#   tf_cloud.sh preflight [tfvars] [creds] [ssh-key]   check what the next step needs
#   tf_cloud.sh init | plan | apply                     terraform in $INFRA_DIR with $TFVARS
#   tf_cloud.sh down-targets                            print what `down` destroys, one address a line
#   tf_cloud.sh down                                    destroy the VM side, keep the bucket (see below)
#   tf_cloud.sh ssh [command...]                        ssh to node 0
#   tf_cloud.sh train RUN [ARGS...]                     run the trainer container on the VM
#   tf_cloud.sh fetch RUN                               copy gs://<bucket>/runs/RUN to runs/RUN
#
# Environment: INFRA_DIR (infra), TFVARS (infra/terraform.tfvars), SSH_KEY (~/.ssh/id_ed25519),
# KEEP_DATA_DISK (1: `down` keeps the data disk), AUTO_APPROVE (1: no prompt), DATA (file or gs://
# URL for `train`), SOURCE (vm: `fetch` copies from the VM's data disk instead of the bucket).
set -euo pipefail
shopt -s inherit_errexit  # a failing $(...) stops the script too

INFRA_DIR=${INFRA_DIR:-infra}
TFVARS=${TFVARS:-$INFRA_DIR/terraform.tfvars}
SSH_KEY=${SSH_KEY:-$HOME/.ssh/id_ed25519}
TERRAFORM=${TERRAFORM:-terraform}
REMOTE_PROJECT_DIR=/opt/trainer
REMOTE_DATA_MOUNT=/mnt/trainer-data

die() { echo "error: $*" >&2; exit 1; }
tf() { "$TERRAFORM" -chdir="$INFRA_DIR" "$@"; }

tfvars_abs() { (cd "$(dirname "$TFVARS")" && echo "$PWD/$(basename "$TFVARS")"); }

check_terraform() {
  command -v "$TERRAFORM" >/dev/null 2>&1 ||
    die "terraform is not installed (>= 1.5 needed): see https://developer.hashicorp.com/terraform/install"
}

check_tfvars() {
  [[ -f "$TFVARS" ]] ||
    die "$TFVARS not found: cp $INFRA_DIR/terraform.tfvars.example $TFVARS and set project_id and ssh_source_ranges"
}

check_creds() {
  if [[ -n "${GOOGLE_APPLICATION_CREDENTIALS:-}" ]]; then
    [[ -f "$GOOGLE_APPLICATION_CREDENTIALS" ]] ||
      die "GOOGLE_APPLICATION_CREDENTIALS=$GOOGLE_APPLICATION_CREDENTIALS does not exist: point it to a key file or unset it and run 'gcloud auth application-default login'"
    return 0
  fi
  command -v gcloud >/dev/null 2>&1 ||
    die "no Google Cloud credentials: install the gcloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth application-default login', or set GOOGLE_APPLICATION_CREDENTIALS to a key file"
  gcloud auth application-default print-access-token >/dev/null 2>&1 ||
    die "gcloud has no application-default credentials: run 'gcloud auth application-default login'"
}

check_ssh_key() {
  [[ -f "$SSH_KEY" ]] || die "SSH key $SSH_KEY not found: set SSH_KEY=<private key> (its .pub is ssh_public_key_path) or run ssh-keygen -t ed25519"
}

preflight() {
  check_terraform
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

output() {  # output NAME: the value, or an error when there is no deployment
  local value=""
  # -json NAME fails when the output is absent; -raw alone prints a warning on stdout then.
  if tf output -json "$1" >/dev/null 2>&1; then
    value=$(tf output -raw "$1" 2>/dev/null) || value=""
  fi
  [[ -n "$value" ]] || die "no '$1' in the Terraform outputs of $INFRA_DIR: run 'make infra-up' first"
  printf '%s\n' "$value"
}

approve=()
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
  tf destroy -input=false -var-file="$(tfvars_abs)" "${approve[@]}" "${args[@]}"
}

ssh_opts() { echo "-i $SSH_KEY -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"; }

remote() {  # remote: user@ip of node 0
  local user ip
  user=$(output ssh_user)
  ip=$(output external_ip)
  echo "$user@$ip"
}

do_ssh() {
  local host
  host=$(remote)
  # shellcheck disable=SC2046
  exec ssh $(ssh_opts) "$host" "$@"
}

# Copies go over ssh as tar streams: nothing beyond ssh and tar is needed on either side.
push() {  # push HOST LOCAL_DIR NAME REMOTE_DIR: LOCAL_DIR/NAME -> REMOTE_DIR/NAME (replaced)
  local host=$1 dir=$2 name=$3 dest=$4
  # shellcheck disable=SC2046,SC2029  # the remote command is built here on purpose
  tar -C "$dir" -cf - "$name" | ssh $(ssh_opts) "$host" \
    "sudo mkdir -p '$dest' && sudo rm -rf '$dest/$name' && sudo tar -C '$dest' -xf - --no-same-owner"
}

train() {
  local run=${1:?run name}
  shift
  local host bucket extra=""
  host=$(remote)
  bucket=$(output bucket_url)
  echo "train-cloud: copying config/ to $host:$REMOTE_PROJECT_DIR/config/"
  push "$host" . config "$REMOTE_PROJECT_DIR"
  if [[ -z "${DATA:-}" ]]; then
    # config/cloud.yaml reads /data/demo/tweets.csv: the demo corpus, shipped from here.
    [[ -f data/demo/tweets.csv ]] ||
      die "no data for the run: pass DATA=path/to.csv or DATA=gs://bucket/file.csv, or run make data for the demo tweets"
    echo "train-cloud: copying data/demo/ to $host:$REMOTE_DATA_MOUNT/data/"
    push "$host" data demo "$REMOTE_DATA_MOUNT/data"
  else
    if [[ "$DATA" == gs://* ]]; then
      extra="--set data.path=$DATA"
    elif [[ -f "$DATA" ]]; then
      echo "train-cloud: copying $DATA to $host:$REMOTE_DATA_MOUNT/data/"
      push "$host" "$(dirname "$DATA")" "$(basename "$DATA")" "$REMOTE_DATA_MOUNT/data"
      extra="--set data.path=/data/$(basename "$DATA")"
    else
      die "DATA=$DATA is neither a local file nor a gs:// URL"
    fi
  fi
  echo "train-cloud: run $run on $host; artifacts in /runs/$run on the data disk and under $bucket"
  # shellcheck disable=SC2046
  ssh -t $(ssh_opts) "$host" \
    "cd $REMOTE_PROJECT_DIR && sudo docker compose run --rm trainer --mode cloud --output-dir /runs/$run $extra $*"
  echo "train-cloud: done; bring it home with: make fetch RUN=$run"
}

fetch() {
  local run=${1:-}
  [[ -n "$run" ]] || die "which run? make fetch RUN=<run name> (the name train-cloud printed)"
  [[ "$run" =~ ^[A-Za-z0-9._-]+$ ]] || die "RUN=$run: a run name has letters, digits, '.', '_' and '-' only"
  mkdir -p runs
  if [[ "${SOURCE:-bucket}" == vm ]]; then
    check_ssh_key
    local host
    host=$(remote)
    # shellcheck disable=SC2046,SC2029
    ssh $(ssh_opts) "$host" "sudo tar -C '$REMOTE_DATA_MOUNT/runs' -cf - '$run'" | tar -C runs -xf -
  else
    command -v gcloud >/dev/null 2>&1 ||
      die "gcloud is not installed: install the gcloud CLI, or fetch from the VM with make fetch RUN=$run SOURCE=vm"
    local bucket
    bucket=$(output bucket_url)
    gcloud storage cp -r "$bucket/runs/$run" runs/
  fi
  echo "fetch: runs/$run"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  preflight) preflight "$@" ;;
  init) check_terraform; init ;;
  plan) tf plan -input=false -var-file="$(tfvars_abs)" ;;
  apply) tf apply -input=false -var-file="$(tfvars_abs)" "${approve[@]}" ;;
  down-targets) check_terraform; down_targets ;;
  down) down ;;
  ssh) check_ssh_key; do_ssh "$@" ;;
  train) check_ssh_key; train "$@" ;;
  fetch) fetch "$@" ;;
  *) die "usage: $0 preflight|init|plan|apply|down-targets|down|ssh|train|fetch ..." ;;
esac
