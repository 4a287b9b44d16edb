# Ansible verbs: inventory from Terraform's outputs, provisioning the VM, linting the playbook.

ANSIBLE_DIR ?= ansible
INVENTORY ?= $(ANSIBLE_DIR)/inventory/hosts.yml
SSH_KEY ?= $(HOME)/.ssh/id_ed25519

.PHONY: inventory provision lint-ansible

inventory: ## Write ansible/inventory/hosts.yml from `terraform -chdir=infra output -json` (SSH_KEY=...)
	$(PYTHON) scripts/make_inventory.py --infra-dir $(or $(INFRA_DIR),infra) --out $(INVENTORY) --ssh-key '$(SSH_KEY)'

provision: setup-tools ## Run the Ansible playbook (ansible/site.yml) against the generated inventory; ARGS passes flags
	@test -s $(INVENTORY) || { echo "error: $(INVENTORY) is missing: run \`make inventory\` (or \`make infra-up\`) first" >&2; exit 1; }
	cd $(ANSIBLE_DIR) && ANSIBLE_CONFIG=$(CURDIR)/$(ANSIBLE_DIR)/ansible.cfg \
		ansible-playbook -i $(abspath $(INVENTORY)) site.yml $(ARGS)

lint-ansible: setup-tools ## Lint the playbook and roles (ansible-lint --offline, production profile, and a syntax check)
	cd $(ANSIBLE_DIR) && ansible-lint --offline --profile production
	cd $(ANSIBLE_DIR) && ANSIBLE_CONFIG=$(CURDIR)/$(ANSIBLE_DIR)/ansible.cfg \
		ansible-playbook --syntax-check -i localhost, site.yml
