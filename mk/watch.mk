# Cloud runs that survive preemptions and GPU stock-outs (scripts/cloud_watch.py), and what the VM
# costs per hour (trainer/prices.py: a dated price table, an estimate; the bill is in Cloud Billing).

WATCH_ATTEMPTS ?= 10
WATCH_SLEEP ?= 60
# What (re)starts the run on the VM in each round of `make watch`; it should resume the run.
# (The detached-run verb of scripts/tf_cloud.sh replaces `train` here once it exists.)
WATCH_START ?= env $(TF_CLOUD) train '$(RUN)' $(ARGS)

CLOUD_WATCH = $(PY) scripts/cloud_watch.py --infra-dir '$(INFRA_DIR)' --tfvars '$(TFVARS)'

.PHONY: watch infra-price

watch: ## Keep RUN=<name> going (converge the VM, other zones on a GPU stock-out) until its manifest is in the bucket
	@$(TF_CLOUD) preflight tfvars ssh-key creds
	@$(TF_CLOUD) init >/dev/null
	@$(CLOUD_WATCH) watch '$(RUN)' --attempts '$(WATCH_ATTEMPTS)' --sleep '$(WATCH_SLEEP)' \
		--inventory "$(MAKE) --no-print-directory inventory SSH_KEY='$(SSH_KEY)' INVENTORY='$(INVENTORY)'" \
		--provision "$(MAKE) --no-print-directory provision SSH_KEY='$(SSH_KEY)' INVENTORY='$(INVENTORY)'" \
		-- $(WATCH_START)

infra-price: ## Print the hourly price of what infra-up would leave running (an estimate from trainer/prices.py)
	@$(TF_CLOUD) preflight tfvars creds
	@$(TF_CLOUD) init >/dev/null
	@$(CLOUD_WATCH) price
