# Cloud verbs: Terraform (infra/), the Ansible hand-off, training on the VM, fetching results.
# The work is done by scripts/tf_cloud.sh; every user mistake ends in one "error: ..." line.
# Credentials: one login, `gcloud auth application-default login` (Terraform and the bucket both use it).

INFRA_DIR ?= infra
TFVARS ?= $(INFRA_DIR)/terraform.tfvars
SSH_KEY ?= $(HOME)/.ssh/id_ed25519
INVENTORY ?= ansible/inventory/hosts.yml
RUN ?=
DATA ?=
MODEL ?=
SOURCE ?= bucket
KEEP_DATA_DISK ?=
AUTO_APPROVE ?=

# Settings reach scripts/tf_cloud.sh through its environment (never spliced into a shell line, so a
# value with quotes or spaces arrives as typed, and the script's own checks answer it). Only the cloud
# verbs' recipes get them: `make test` and `make train` (local) run in the caller's own environment.
CLOUD_VERBS := infra-init infra-plan infra-apply infra-up infra-down ssh train-cloud logs runs stop fetch \
	watch infra-price inventory provision
$(CLOUD_VERBS): export INFRA_DIR := $(INFRA_DIR)
$(CLOUD_VERBS): export TFVARS := $(TFVARS)
$(CLOUD_VERBS): export SSH_KEY := $(SSH_KEY)
$(CLOUD_VERBS): export INVENTORY := $(INVENTORY)
$(CLOUD_VERBS): export PY := $(PY)
$(CLOUD_VERBS): export DATA := $(DATA)
$(CLOUD_VERBS): export MODEL := $(MODEL)
$(CLOUD_VERBS): export SOURCE := $(SOURCE)
$(CLOUD_VERBS): export KEEP_DATA_DISK := $(KEEP_DATA_DISK)
$(CLOUD_VERBS): export AUTO_APPROVE := $(AUTO_APPROVE)
TF_CLOUD = scripts/tf_cloud.sh
# Sub-makes named through a variable: `make -n infra-apply` stays a dry run.
INFRA_SUBMAKE = $(MAKE) --no-print-directory
# What provisions a VM that an apply made anew (a first create, or a replacement: spot, the maximum run
# duration, the GPUs, the boot image, the zone leave a new boot disk with no driver or Docker), in
# infra-apply (so infra-up) and watch: the playbook. The command reaches scripts/cloud_watch.py
# through its environment, never spliced into a shell line.
PROVISION_COMMAND ?= $(INFRA_SUBMAKE) provision
infra-apply watch: export PROVISION_COMMAND := $(PROVISION_COMMAND)
infra-apply watch: export INVENTORY_COMMAND := $(INFRA_SUBMAKE) inventory
# infra-up provisions the VM whatever the apply did (the playbook also syncs the project and the image).
infra-up: export PROVISION_ALWAYS := 1

.PHONY: infra-init infra-plan infra-apply infra-up infra-down ssh train-cloud fetch logs runs stop

infra-init: ## Terraform init in infra/ (local state; GCS state when infra/backend.hcl exists)
	@$(TF_CLOUD) preflight
	@$(TF_CLOUD) init

infra-plan: ## Show what infra-up would change (needs infra/terraform.tfvars and application-default credentials)
	@$(TF_CLOUD) preflight tfvars creds
	@$(TF_CLOUD) init
	@$(TF_CLOUD) plan

infra-apply: ## Terraform half of infra-up: create or converge the VM, disk and bucket, write the inventory; provision a new VM
	@$(TF_CLOUD) preflight tfvars ssh-key creds
	@$(TF_CLOUD) init
	@$(PY) scripts/cloud_watch.py converge --inventory "$$INVENTORY_COMMAND" --provision "$$PROVISION_COMMAND"

infra-up: infra-apply ## Create the T4 VM, data disk, bucket (Terraform), write the inventory, provision (Ansible)

infra-down: ## Destroy the VM side; keeps the bucket unless force_destroy (KEEP_DATA_DISK=1 keeps the disk)
	@$(TF_CLOUD) preflight tfvars creds
	@$(TF_CLOUD) init >/dev/null
	@$(TF_CLOUD) down
	@rm -f "$$INVENTORY"

ssh: ## Open a shell on the training VM (node 0) as ssh_user (SSH_PORT overrides the inventory's port)
	@$(TF_CLOUD) ssh

train-cloud fetch logs stop: export TRAINER_RUN = $(if $(filter train-cloud,$@),$(or $(RUN),cloud-$(shell date +%Y%m%d-%H%M%S)),$(RUN))

train-cloud: ## Train on the VM: ship code, config/ and DATA= (MODEL= folder), start the run detached, follow its log
	@$(TF_CLOUD) preflight-local ssh-key creds
	@$(TF_CLOUD) train "$$TRAINER_RUN" $(ARGS)

logs: ## Reattach to run RUN=<name> on the VM: its whole log from the start, followed until the run ends
	@$(TF_CLOUD) logs "$$TRAINER_RUN" --follow

runs: ## List the runs on the VM and in the bucket: state (running, finished, failed, interrupted) and cost
	@$(TF_CLOUD) preflight-local creds
	@$(TF_CLOUD) runs

stop: ## Stop run RUN=<name> cleanly: it saves a checkpoint to the bucket first; make train MODE=cloud RUN=<name> resumes
	@$(TF_CLOUD) stop "$$TRAINER_RUN"

fetch: ## Copy a run's artifacts home: RUN=<name> from gs://<bucket>/runs/ (SOURCE=vm: from the VM)
	@$(TF_CLOUD) fetch "$$TRAINER_RUN"
