# Cloud verbs: Terraform (infra/), the Ansible hand-off, training on the VM, fetching results. Each recipe
# is one line, `python -m ops VERB` (the package ops/: every user mistake ends in one "error: ..." line,
# exit 2). Credentials: one login, `gcloud auth application-default login` (Terraform and the bucket both).

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
WATCH_ATTEMPTS ?= 10
WATCH_SLEEP ?= 60
QUOTA_CHECK ?=
SORT ?= date
NODE ?=
FORMAT ?= table
OPS = $(PY) -m ops

# Settings reach ops through its environment (never spliced into a shell line, so a value with quotes or
# spaces arrives as typed, and ops' own checks answer it). Only the cloud verbs' recipes get them: `make
# test` and `make train` (local) run in the caller's own environment. ARGS is the one exception: flags for
# the trainer (train, watch) or ansible-playbook (provision, infra-apply, infra-up), split as a shell does.
CLOUD_VERBS := infra-init infra-plan infra-apply infra-up infra-down infra-price offers ssh train-cloud tune-cloud logs \
	runs stop fetch watch inventory provision driver-upgrade
$(CLOUD_VERBS): export INFRA_DIR := $(INFRA_DIR)
$(CLOUD_VERBS): export TFVARS := $(TFVARS)
$(CLOUD_VERBS): export SSH_KEY := $(SSH_KEY)
$(CLOUD_VERBS): export INVENTORY := $(INVENTORY)
$(CLOUD_VERBS): export RUN := $(RUN)
$(CLOUD_VERBS): export DATA := $(DATA)
$(CLOUD_VERBS): export MODEL := $(MODEL)
$(CLOUD_VERBS): export SOURCE := $(SOURCE)
$(CLOUD_VERBS): export KEEP_DATA_DISK := $(KEEP_DATA_DISK)
$(CLOUD_VERBS): export AUTO_APPROVE := $(AUTO_APPROVE)
$(CLOUD_VERBS): export WATCH_ATTEMPTS := $(WATCH_ATTEMPTS)
$(CLOUD_VERBS): export WATCH_SLEEP := $(WATCH_SLEEP)
$(CLOUD_VERBS): export QUOTA_CHECK := $(QUOTA_CHECK)
# make runs: the order (date, f1, cost) and the output (table, csv) of its comparison table.
runs: export SORT := $(SORT)
logs ssh: export NODE := $(NODE)
# make tune MODE=cloud: the study's name, its tune file (in config/) and its number of trials.
tune-cloud: export STUDY := $(STUDY)
tune-cloud: export TUNE := $(TUNE)
tune-cloud: export TRIALS := $(TRIALS)
runs: export FORMAT := $(FORMAT)
# The run config whose cost the offers estimate (offers, infra-plan, and infra-up / watch when cheapest).
$(CLOUD_VERBS): export CONFIG := $(if $(CONFIG),$(CONFIG),config/cloud.yaml)

.PHONY: infra-init infra-plan infra-apply infra-up infra-down infra-price offers ssh train-cloud tune-cloud fetch logs runs \
	stop watch

infra-init: setup ## Terraform init in infra/ (local state; GCS state when infra/backend.hcl exists)
	@$(OPS) init

infra-plan: setup ## Show what infra-up would change, its hourly price, and every offer's quota, price and run cost
	@$(OPS) plan

offers: setup ## List the offers in the tfvars: GPU quota, hourly price (Billing Catalog or table), estimated run cost
	@$(OPS) offers

infra-price: setup ## Print the hourly price of what infra-up would leave running (an estimate from ops/prices.py)
	@$(OPS) price

infra-apply: setup setup-tools ## Terraform half of infra-up: create or converge the VM, disk and bucket, write the inventory; provision a new VM
	@$(OPS) apply $(ARGS)

infra-up: setup setup-tools ## Create the GPU VM (the first offer with quota and capacity), disk, bucket; inventory; provision (Ansible)
	@$(OPS) up $(ARGS)

infra-down: setup ## Destroy the VM side; keeps the bucket unless force_destroy (KEEP_DATA_DISK=1 keeps the disk)
	@$(OPS) down

ssh: setup ## Open a shell on the training VM (node 0; NODE=k another) as ssh_user (SSH_PORT overrides the inventory's port)
	@$(OPS) ssh

train-cloud: setup ## Train on the VM: ship code, config/ and DATA= (MODEL= folder), start the run detached, follow its log
	@$(OPS) train "$$RUN" $(ARGS)

tune-cloud: setup ## Search hyperparameters on the VM (make tune MODE=cloud): a detached study in /runs/STUDY, copied to the bucket
	@$(OPS) tune "$$STUDY" $(ARGS)

logs: setup ## Reattach to run RUN=<name> on the VM: its whole log from the start, followed until the run ends (NODE=k: node k's)
	@$(OPS) logs "$$RUN" --follow

runs: setup ## Compare the runs on the VM and in the bucket: state, test F1, best val metric, epochs, GPU, spot, wall time, cost, commit (SORT=f1/cost, FORMAT=csv)
	@$(OPS) runs

stop: setup ## Stop run RUN=<name> cleanly (on every node): it saves a checkpoint to the bucket first; make train MODE=cloud RUN=<name> resumes
	@$(OPS) stop "$$RUN"

fetch: setup ## Copy a run's artifacts home: RUN=<name> from gs://<bucket>/runs/ (SOURCE=vm: from the VM)
	@$(OPS) fetch "$$RUN"

# Keep a run going through preemptions and GPU stock-outs (ops/watch.py): converge the VM (the next offer or
# zone on a stock-out or quota error), provision a VM the apply made anew, (re)start the run, until its
# manifest is in the bucket.
watch: setup setup-tools ## Keep RUN=<name> going (converge the VM, the next offer on a stock-out) until its manifest is in the bucket
	@$(OPS) watch "$$RUN" $(ARGS)
