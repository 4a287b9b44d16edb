# Container verbs: build the trainer image and run the compose service `trainer` on this machine.
# On the GPU VM, `make train MODE=cloud` runs the same service over SSH (mk/infra.mk).

COMPOSE ?= docker compose
# The one GPU decision for this machine: GPU=1 keeps the GPU reservation, GPU=0 adds the CPU override;
# default: 1 when nvidia-smi lists a GPU. The compose .env (`make setup`) and the targets below both use it.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
# The compose files in order, as .env's COMPOSE_FILE spells them (':' between them).
COMPOSE_FILE_LIST := docker-compose.yml$(if $(filter 1,$(GPU)),,:docker-compose.cpu.yml)
COMPOSE_FILES := $(addprefix -f ,$(subst :, ,$(COMPOSE_FILE_LIST)))
# The image's user is you, so what the trainer writes under runs/ and models/ is yours
# (as root: the image's default uid 1000, and runs/ models/ are handed to it).
CONTAINER_UID := $(shell u=$$(id -u); [ "$$u" = 0 ] && echo 1000 || echo $$u)
CONTAINER_GID := $(shell g=$$(id -g); [ "$$(id -u)" = 0 ] && echo 1000 || echo $$g)
# Where compose-env writes .env and makes the mounted folders: the project (a test passes another folder).
COMPOSE_ENV_DIR ?= .
# compose-env rewrites a .env only while this line is in it; a .env without it is the user's and is kept.
ENV_MARKER := \# Written by make setup (mk/container.mk) for this machine; it rewrites this file while this line is here.

.PHONY: image train-container compose-env

image: ## Build the trainer image tweet-trainer:latest (BASE_IMAGE and EXTRA_CA_CERTS from the environment pass through)
	TRAINER_UID=$(CONTAINER_UID) TRAINER_GID=$(CONTAINER_GID) $(COMPOSE) $(COMPOSE_FILES) build trainer

# For a bare `docker compose run --rm trainer --epochs 1` here (part of `make setup`): .env with the compose
# files for this machine (the CPU override without a GPU), your ids for the image's user and local mode;
# data/ runs/ models/ made as you (compose would make missing ones as root). Unchanged: left untouched.
# Never shipped to the VM (git-ignored; the trainer_host role writes the VM's own .env).
compose-env:
	@cd '$(COMPOSE_ENV_DIR)' && mkdir -p data runs models && \
	  if [ "$$(id -u)" = 0 ]; then chown $(CONTAINER_UID):$(CONTAINER_GID) runs models; fi && \
	  if [ -f .env ] && ! grep -qxF '$(ENV_MARKER)' .env; then \
	    if [ "$(GPU)" != 1 ] && ! grep -q '^COMPOSE_FILE=' .env; then \
	      echo "note: your .env (kept) sets no COMPOSE_FILE; without a GPU, add COMPOSE_FILE=$(COMPOSE_FILE_LIST)"; \
	    fi; \
	  else \
	    printf '%s\n' '$(ENV_MARKER)' \
	      '# Delete that line to keep your own edits. The VM has its own .env (Ansible'"'"'s trainer_host role).' \
	      '# GPU=$(GPU) (nvidia-smi -L, or make setup GPU=0|1): $(if $(filter 1,$(GPU)),the GPU reservation,the CPU override, no GPU reservation).' \
	      'COMPOSE_PATH_SEPARATOR=:' \
	      'COMPOSE_FILE=$(COMPOSE_FILE_LIST)' \
	      '# The image'"'"'s user: what the trainer writes under runs/ and models/ is yours.' \
	      'TRAINER_UID=$(CONTAINER_UID)' \
	      'TRAINER_GID=$(CONTAINER_GID)' \
	      '# config/local.yaml (MiniLM-L6 on data/demo/tweets.csv, `make data`); --mode cloud needs TRAINER_BUCKET.' \
	      'TRAINER_MODE=local' > .env.tmp && \
	    if cmp -s .env.tmp .env; then rm .env.tmp; \
	    else mv .env.tmp .env && echo "wrote $(COMPOSE_ENV_DIR)/.env: COMPOSE_FILE=$(COMPOSE_FILE_LIST) (GPU=$(GPU))"; fi; \
	  fi

train-container: ## Train in the compose service (MODE=local|cloud, ARGS="--epochs 1"; CPU override when no GPU)
	@mkdir -p data runs models
	@if [ "$$(id -u)" = 0 ]; then chown $(CONTAINER_UID):$(CONTAINER_GID) runs models; fi
ifeq ($(MODE),local)
	@test -f data/demo/tweets.csv || $(MAKE) --no-print-directory data
endif
	@echo "compose: $(COMPOSE_FILES) (GPU=$(GPU)), mode $(MODE)"
	TRAINER_UID=$(CONTAINER_UID) TRAINER_GID=$(CONTAINER_GID) TRAINER_MODE=$(MODE) \
	  $(COMPOSE) $(COMPOSE_FILES) run --rm trainer $(ARGS)
