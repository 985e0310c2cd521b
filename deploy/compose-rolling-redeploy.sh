#!/usr/bin/env bash
# Zero-downtime redeploy of the app-server containers of a compose project.
#
#   deploy/compose-rolling-redeploy.sh [--build] [--timeout SECONDS] [SERVICE]
#
# Run it where you run `docker compose` (the directory of docker-compose.yml, or
# with COMPOSE_FILE / COMPOSE_PROJECT_NAME set). SERVICE defaults to appserver.
#   1. start as many new containers as are running now (new image and config),
#      beside the old ones: front ends balance over old and new alike;
#   2. wait until every new container is healthy (its healthcheck: connected to
#      every front end);
#   3. stop the old containers with SIGTERM (`docker stop`): each drains -- DRAIN,
#      in-flight requests finish, BYE -- within its stop_grace_period; remove them.
# If a new container is not healthy within --timeout seconds (default 120), the new
# ones are stopped and removed and the old ones keep serving: exit status 1.
set -euo pipefail

usage() { echo "usage: $0 [--build] [--timeout SECONDS] [SERVICE]" >&2; exit 2; }

service=appserver
timeout_s=120
build=0
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) service=$1 ;;
    esac
    shift
done
case "$timeout_s" in ''|*[!0-9]*) echo "--timeout needs whole seconds, got '$timeout_s'" >&2; exit 2 ;; esac

if docker compose version >/dev/null 2>&1; then
    compose() { docker compose "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
    compose() { docker-compose "$@"; }
else
    echo "neither 'docker compose' nor 'docker-compose' is available" >&2
    exit 1
fi

log() { echo "[rolling-redeploy] $*"; }

# Health of one container: healthy / unhealthy / starting, or its state without a healthcheck.
health() {
    docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"
}

# The service's running container ids, one a line.
ids() { compose ps -q "$service" | sed '/^$/d'; }

mapfile -t old < <(ids)
if [ ${#old[@]} -eq 0 ]; then
    echo "no running '$service' containers: start the project with 'docker compose up -d' first" >&2
    exit 1
fi
log "${#old[@]} running '$service' container(s): ${old[*]}"

if [ "$build" = 1 ]; then
    compose build "$service"
fi

# --no-recreate keeps the old containers; the new ones get the current image and config.
compose up -d --no-deps --no-recreate --scale "$service=$(( ${#old[@]} * 2 ))" "$service"
new=()
while IFS= read -r id; do
    case " ${old[*]} " in *" $id "*) ;; *) new+=("$id") ;; esac
done < <(ids)
if [ ${#new[@]} -eq 0 ]; then
    echo "no new '$service' container was started" >&2
    exit 1
fi
log "started ${#new[@]} new container(s): ${new[*]}; waiting until healthy (${timeout_s}s)"

rollback() {
    echo "$1: removing the new containers, the old ones keep serving" >&2
    docker stop "${new[@]}" >/dev/null || true
    docker rm "${new[@]}" >/dev/null || true
    exit 1
}

deadline=$(( SECONDS + timeout_s ))
for id in "${new[@]}"; do
    while :; do
        state=$(health "$id" || echo missing)
        case "$state" in
            healthy) break ;;
            running) log "$id has no healthcheck: treating running as serving"; break ;;
            unhealthy|exited|dead|missing) rollback "new container $id is $state" ;;
        esac
        [ "$SECONDS" -lt "$deadline" ] || rollback "new container $id not healthy after ${timeout_s}s ($state)"
        sleep 1
    done
done
log "new containers are serving; draining the old ones (SIGTERM)"

# docker stop sends the image's STOPSIGNAL (SIGTERM), then SIGKILL after the grace period:
# the service's stop_grace_period (compose v2 stores it in the container; 40 s otherwise).
# The old containers drain in parallel.
grace=$(docker inspect --format '{{if .Config.StopTimeout}}{{.Config.StopTimeout}}{{end}}' "${old[0]}" || true)
docker stop --time "${grace:-40}" "${old[@]}" >/dev/null
docker rm "${old[@]}" >/dev/null
log "done: ${#new[@]} new '$service' container(s) serving"
