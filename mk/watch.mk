# Cloud runs that survive preemptions and GPU stock-outs (scripts/cloud_watch.py), and what the VM
# costs per hour (trainer/prices.py: a dated price table, an estimate; the bill is in Cloud Billing).
# Values reach the script through its arguments and environment, never spliced into a shell line.

WATCH_ATTEMPTS ?= 10
WATCH_SLEEP ?= 60
# What (re)starts the run on the VM in each round of `make watch`: tf_cloud.sh train restarts an
# unfinished run (resuming from its checkpoints) or follows a running one, and returns when it ends.
WATCH_START ?= env $(TF_CLOUD) train "$$TRAINER_RUN" $(ARGS)
# INVENTORY_COMMAND and PROVISION_COMMAND (what provisions a VM the apply made anew): mk/infra.mk.
CLOUD_WATCH = $(PY) scripts/cloud_watch.py --infra-dir "$$INFRA_DIR" --tfvars "$$TFVARS"

.PHONY: watch infra-price

watch infra-price: export INFRA_DIR := $(INFRA_DIR)
watch infra-price: export TFVARS := $(TFVARS)
watch: export TRAINER_RUN = $(RUN)
watch: export WATCH_ATTEMPTS := $(WATCH_ATTEMPTS)
watch: export WATCH_SLEEP := $(WATCH_SLEEP)

watch: ## Keep RUN=<name> going (converge the VM, other zones on a GPU stock-out) until its manifest is in the bucket
	@$(TF_CLOUD) preflight tfvars ssh-key creds
	@$(TF_CLOUD) init >/dev/null
	@$(CLOUD_WATCH) watch "$$TRAINER_RUN" --attempts "$$WATCH_ATTEMPTS" --sleep "$$WATCH_SLEEP" \
		--inventory "$$INVENTORY_COMMAND" --provision "$$PROVISION_COMMAND" -- $(WATCH_START)

infra-price: ## Print the hourly price of what infra-up would leave running (an estimate from trainer/prices.py)
	@$(TF_CLOUD) preflight tfvars creds
	@$(TF_CLOUD) init >/dev/null
	@$(CLOUD_WATCH) price
