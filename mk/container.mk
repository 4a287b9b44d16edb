# Container verbs: build the trainer image and run the compose service `trainer` on this machine.
# On the GPU VM, `make train MODE=cloud` runs the same service over SSH (mk/infra.mk).

COMPOSE ?= docker compose
# GPU=1 keeps the GPU reservation, GPU=0 adds the CPU override; default: 1 when nvidia-smi lists a GPU.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
COMPOSE_FILES := -f docker-compose.yml $(if $(filter 1,$(GPU)),,-f docker-compose.cpu.yml)
# The image's user is you, so what the trainer writes under runs/ and models/ is yours
# (as root: the image's default uid 1000, and runs/ models/ are handed to it).
CONTAINER_UID := $(shell u=$$(id -u); [ "$$u" = 0 ] && echo 1000 || echo $$u)
CONTAINER_GID := $(shell g=$$(id -g); [ "$$(id -u)" = 0 ] && echo 1000 || echo $$g)

.PHONY: image train-container

image: ## Build the trainer image tweet-trainer:latest (BASE_IMAGE and EXTRA_CA_CERTS from the environment pass through)
	TRAINER_UID=$(CONTAINER_UID) TRAINER_GID=$(CONTAINER_GID) $(COMPOSE) $(COMPOSE_FILES) build trainer

train-container: ## Train in the compose service (MODE=local|cloud, ARGS="--epochs 1"; CPU override when no GPU)
	@mkdir -p data runs models
	@if [ "$$(id -u)" = 0 ]; then chown $(CONTAINER_UID):$(CONTAINER_GID) runs models; fi
ifeq ($(MODE),local)
	@test -f data/demo/tweets.csv || $(MAKE) --no-print-directory data
endif
	@echo "compose: $(COMPOSE_FILES) (GPU=$(GPU)), mode $(MODE)"
	TRAINER_UID=$(CONTAINER_UID) TRAINER_GID=$(CONTAINER_GID) TRAINER_MODE=$(MODE) \
	  $(COMPOSE) $(COMPOSE_FILES) run --rm trainer $(ARGS)
