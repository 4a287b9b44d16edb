# Ansible verbs: inventory from Terraform's outputs, provisioning the VM, linting the playbook.

ANSIBLE_DIR ?= ansible

.PHONY: inventory provision driver-upgrade lint-ansible

inventory: setup ## Write ansible/inventory/hosts.yml from `terraform -chdir=infra output -json` (SSH_KEY=...)
	@$(OPS) inventory

provision: setup setup-tools ## Run the Ansible playbook (ansible/site.yml) against the generated inventory; ARGS passes flags
	@$(OPS) provision $(ARGS)

# The NVIDIA driver packages are held on the VM (a newer driver under the loaded module breaks CUDA until a
# reboot); this is the one way to move them: unhold, upgrade, hold again, and reboot when the new driver
# is not loaded yet (an interrupted run resumes at boot).
driver-upgrade: setup setup-tools ## Upgrade the VM's held NVIDIA driver to the newest Debian build, then reboot the VM into it
	@$(OPS) provision --tags nvidia_driver -e nvidia_driver_upgrade=true

lint-ansible: setup-tools ## Lint the playbook and roles (ansible-lint --offline, production profile, and a syntax check)
	cd $(ANSIBLE_DIR) && ansible-lint --offline --profile production
	cd $(ANSIBLE_DIR) && ANSIBLE_CONFIG=$(CURDIR)/$(ANSIBLE_DIR)/ansible.cfg \
		ansible-playbook --syntax-check -i localhost, site.yml
