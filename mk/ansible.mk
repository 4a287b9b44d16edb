# Ansible verbs: inventory from Terraform's outputs, provisioning the VM, linting the playbook.

ANSIBLE_DIR ?= ansible
INVENTORY ?= $(ANSIBLE_DIR)/inventory/hosts.yml
SSH_KEY ?= $(HOME)/.ssh/id_ed25519

.PHONY: inventory provision driver-upgrade lint-ansible

inventory: ## Write ansible/inventory/hosts.yml from `terraform -chdir=infra output -json` (SSH_KEY=...)
	$(PYTHON) scripts/make_inventory.py --infra-dir $(or $(INFRA_DIR),infra) --out $(INVENTORY) --ssh-key '$(SSH_KEY)'

provision: setup-tools ## Run the Ansible playbook (ansible/site.yml) against the generated inventory; ARGS passes flags
	@test -s $(INVENTORY) || { echo "error: $(INVENTORY) is missing: run \`make inventory\` (or \`make infra-up\`) first" >&2; exit 1; }
	cd $(ANSIBLE_DIR) && ANSIBLE_CONFIG=$(CURDIR)/$(ANSIBLE_DIR)/ansible.cfg \
		ansible-playbook -i $(abspath $(INVENTORY)) site.yml $(ARGS)

# The NVIDIA driver packages are held on the VM (a newer driver under the loaded module breaks CUDA until a
# reboot); this is the one way to move them: unhold, upgrade, hold again, and reboot when the new driver
# is not loaded yet (an interrupted run resumes at boot).
driver-upgrade: ## Upgrade the VM's held NVIDIA driver to the newest Debian build, then reboot the VM into it
	@$(MAKE) --no-print-directory provision ARGS='--tags nvidia_driver -e nvidia_driver_upgrade=true'

lint-ansible: setup-tools ## Lint the playbook and roles (ansible-lint --offline, production profile, and a syntax check)
	cd $(ANSIBLE_DIR) && ansible-lint --offline --profile production
	cd $(ANSIBLE_DIR) && ANSIBLE_CONFIG=$(CURDIR)/$(ANSIBLE_DIR)/ansible.cfg \
		ansible-playbook --syntax-check -i localhost, site.yml
