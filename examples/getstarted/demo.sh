#!/usr/bin/env bash
# The seed's walkthrough on shoal, from a Dockerfile to a load-balanced stack:
#   base image (offline, from the Debian archive) -> shoal build --tag=web:v1 . ->
#   shoal stack deploy -c docker-compose.yml webapp -> stack ls / services / service ps /
#   network ls -> requests to port 4000 answered by different tasks, visits counted in redis.
#
# Run as root (`make demo` installs what it needs first). Running it again is quick: the base
# image and the build steps come from caches and an already deployed webapp stack is kept.
# When a step fails it says what to do and removes what this run started (the stack, shoald),
# never what was there before.
set -Eeuo pipefail

here=$(cd "$(dirname "$0")" && pwd)
STACK=webapp
PORT=4000
REQUESTS=8
RUN_DIR=${SHOAL_RUN:-/run/shoal}
LOCK=$RUN_DIR/shoald.lock
started_at=$SECONDS

step=""          # what is being done, for the failure message
hint=""          # what the user can do about it
daemon_ours=0    # shoald was started by this run
stack_ours=0     # the webapp stack was deployed by this run (it did not exist before)
finished=0
show_logs=0      # the failure is the app's: show what its tasks printed before removing them

say() { printf '\n==> [%3ds] %s\n' "$((SECONDS - started_at))" "$*"; }
fail() { hint=$2; echo "demo: $1" >&2; exit 1; }

daemon_running() { [ -e "$LOCK" ] && ! flock -n "$LOCK" true 2>/dev/null; }

stop_daemon() {
  local pid
  pid=$(head -n1 "$LOCK" 2>/dev/null || true)
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do daemon_running || return 0; sleep 0.2; done
  echo "demo: shoald (pid $pid) did not stop after SIGTERM" >&2
}

# Tasks of the stack still present as containers (stack rm returns before they are gone).
# A failed listing counts as "still there": a container being removed must not end the wait.
stack_containers() {
  local names
  names=$(shoal ps -a --format '{{.Names}}' 2>/dev/null) || { echo unknown; return 0; }
  grep -c "^${STACK}_" <<<"$names" || true
}

remove_stack() {
  shoal stack rm "$STACK" >/dev/null 2>&1 || true
  for _ in $(seq 150); do [ "$(stack_containers)" = 0 ] && return 0; sleep 0.2; done
  echo "demo: some containers of $STACK are still there: see 'shoal ps -a'" >&2
}

on_exit() {
  local rc=$?
  [ "$finished" = 1 ] && return 0
  trap - ERR INT TERM
  if [ "$show_logs" = 1 ]; then
    echo "demo: the last lines the ${STACK}_web tasks printed:" >&2
    shoal service logs --tail 3 "${STACK}_web" 2>&1 | tail -n 15 | sed 's/^/    /' >&2 || true
  fi
  echo >&2
  echo "demo: FAILED${step:+ while: $step} (exit $rc)" >&2
  [ -n "$hint" ] && echo "demo: what to do: $hint" >&2
  if [ "$stack_ours" = 1 ]; then
    echo "demo: removing the $STACK stack this run deployed" >&2
    remove_stack
  fi
  if [ "$daemon_ours" = 1 ]; then
    echo "demo: stopping the shoald this run started" >&2
    stop_daemon
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# --- 1. what the demo needs -------------------------------------------------------------------
step="checking the machine"
if [ "$(id -u)" != 0 ]; then
  fail "this needs root (containers need mounts, namespaces, cgroups and nftables)" \
       "run it as root: sudo make demo"
fi
missing=()
for cmd in shoal conmon nft ss curl flock debootstrap; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
command -v crun >/dev/null 2>&1 || command -v runc >/dev/null 2>&1 || missing+=("crun or runc")
if [ ${#missing[@]} -gt 0 ]; then
  fail "missing: ${missing[*]}" \
       "run 'make install' (as root; it installs the Debian packages and shoal), then 'make demo' again"
fi

# Port 4000: shoal publishes ports with nftables, never with a listening socket, so anything
# ss shows on it belongs to another program.
step="checking port $PORT"
holder=$(ss -Hltnp "sport = :$PORT" 2>/dev/null | head -n1 || true)
if [ -n "$holder" ]; then
  proc=$(sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' <<<"$holder")
  fail "port $PORT is taken by another program${proc:+: $proc}" \
       "stop that program (ss -ltnp 'sport = :$PORT' shows it), then run 'make demo' again"
fi

# --- 2. the base images, offline ---------------------------------------------------------------
# No registry is reachable (no Docker Hub): the bases are made from the Debian archive once and
# cached under /var/cache/shoal; an image already in the store is not made again.
have_image() { shoal image inspect --format '{{.Id}}' "$1" >/dev/null 2>&1; }
step="making the offline base images"
hint="check that the Debian archive is reachable (apt-get update), then run 'make demo' again"
if have_image localhost/shoal-python:3.11; then
  say "Base image localhost/shoal-python:3.11 is there"
else
  say "Making localhost/shoal-python:3.11 from the Debian archive (debootstrap; minutes the first time)"
  shoal image bootstrap --python
fi
if have_image localhost/shoal-debian:bookworm; then
  say "Base image localhost/shoal-debian:bookworm is there (the base of redis/)"
else
  say "Making localhost/shoal-debian:bookworm (the base of redis/)"
  shoal image bootstrap
fi

# --- 3. build, as the seed does ------------------------------------------------------------------
cd "$here"
step="building web:v1"
hint="read the build output above; pip needs PyPI to be reachable from the machine"
say "shoal build --tag=web:v1 ."
shoal build --tag=web:v1 .
say "shoal images"
shoal images

# --- 4. the daemon, and port 4000 among shoal's own services -----------------------------------
step="starting shoald"
hint="see /var/lib/shoal/shoald.log"
if ! daemon_running; then
  daemon_ours=1
  say "Starting shoald (the manager and agent of this node; it starts on first use)"
fi
shoal service ls >/dev/null          # starts shoald when none is running
step="checking port $PORT"
hint=""
others=$(shoal service ls --format '{{.Name}} {{.Ports}}' |
         awk -v port="*:$PORT->" -v own="${STACK}_web" 'index($0, port) && $1 != own {print $1}')
if [ -n "$others" ]; then
  fail "port $PORT is already published by the shoal service(s): $others" \
       "remove them ('shoal service rm $others', or 'shoal stack rm <their stack>'), then run 'make demo' again"
fi
if shoal stack ls --format '{{.Name}}' | grep -qx "$STACK"; then
  say "The $STACK stack is already deployed: deploying again updates it in place"
else
  stack_ours=1
fi

# --- 5. deploy ---------------------------------------------------------------------------------------
step="deploying the $STACK stack"
hint="read the error above; 'shoal service ps ${STACK}_web --no-trunc' shows why tasks failed"
say "shoal stack deploy -c docker-compose.yml $STACK"
shoal stack deploy -c docker-compose.yml "$STACK"

# The deploy returns once the services are made; their tasks start in the background (Docker's
# default since 26, hence its notice above). Wait as a user does: until `stack services` shows
# every service with all its tasks running.
step="waiting for the $STACK services to run all their tasks"
say "Waiting until 'shoal stack services $STACK' shows every service's tasks running"
converged() {
  shoal stack services "$STACK" --format '{{.Replicas}}' |
    awk '{split($1, r, "/"); if (r[1] != r[2] || r[2] == 0) bad = 1; n++} END {exit (bad || !n)}'
}
for i in $(seq 300); do
  converged && break
  if (( i % 20 == 0 )); then
    failed=$(shoal stack ps "$STACK" --format '{{.CurrentState}} {{.Error}}' | grep -E '^(Failed|Rejected)' || true)
    if [ -n "$failed" ] && [ "$(wc -l <<<"$failed")" -ge 10 ]; then
      fail "the $STACK tasks keep failing: $(head -n1 <<<"$failed")" "$hint"
    fi
  fi
  [ "$i" -eq 300 ] && fail "the $STACK services did not run all their tasks within 150 s" "$hint"
  sleep 0.5
done

step="listing the stack"
hint=""
say "shoal stack ls"
shoal stack ls
say "shoal stack services $STACK"
shoal stack services "$STACK"
say "shoal service ps ${STACK}_web"
shoal service ps "${STACK}_web"
say "shoal network ls"
shoal network ls

# --- 6. requests to port 4000 --------------------------------------------------------------------
# The tasks run under 10% of a core, so Flask takes a few seconds to listen after its task is
# running (and in the rotation, as in Swarm when a service has no healthcheck): wait until one
# full round of the round robin has counted visits, then send the requests.
ask() { curl -s --max-time 5 "http://localhost:$PORT/" | sed -e 's/<[^>]*>/ /g' -e 's/  */ /g' -e 's/^ //' -e 's/ $//'; }
replicas=$(shoal service ls --format '{{.Name}} {{.Replicas}}' |
           awk -v name="${STACK}_web" '$1 == name {split($2, r, "/"); print r[2]}')
replicas=${replicas:-5}
step="waiting for the app to answer on port $PORT"
hint="fix what the task logs above show, then run 'make demo' again"
show_logs=1
say "Waiting until all $replicas tasks answer on http://localhost:$PORT/"
answer=""
in_a_row=0
for i in $(seq 120); do
  answer=$(ask || true)
  if [[ $answer =~ Visits:\ [0-9]+ ]]; then
    in_a_row=$((in_a_row + 1))
    [ "$in_a_row" -ge "$replicas" ] && break
    continue
  fi
  in_a_row=0
  # A task that crashes may still have been running long enough to count for the deploy.
  if (( i % 10 == 0 )); then
    failed=$(shoal service ps "${STACK}_web" --format '{{.CurrentState}} {{.Error}}' | grep '^Failed' || true)
    if [ "$(wc -l <<<"$failed")" -ge 10 ]; then
      fail "the ${STACK}_web tasks keep failing: $(head -n1 <<<"$failed")" "$hint"
    fi
  fi
  sleep 0.5
done
[ "$in_a_row" -ge "$replicas" ] ||
  fail "the tasks did not all answer with a visit count on port $PORT within 60 s (last: ${answer:-no answer})" "$hint"
show_logs=0
hint="run 'make demo' again; 'shoal service ps ${STACK}_web' and 'shoal service logs ${STACK}_web' show the tasks"

say "$REQUESTS requests: curl -s http://localhost:$PORT/ (HTML tags stripped)"
hosts=()
visits=()
for _ in $(seq "$REQUESTS"); do
  answer=$(ask || true)
  echo "${answer:-(no answer)}"
  [[ $answer =~ Hostname:\ ([^ ]+) ]] && hosts+=("${BASH_REMATCH[1]}")
  [[ $answer =~ Visits:\ ([0-9]+) ]] && visits+=("${BASH_REMATCH[1]}")
done
distinct=$(printf '%s\n' "${hosts[@]}" | sort -u | wc -l)
if [ ${#visits[@]} -ne "$REQUESTS" ]; then
  fail "only ${#visits[@]} of $REQUESTS requests were answered with a visit count" "$hint"
fi
echo "-- $REQUESTS answers from $distinct different tasks, visits ${visits[0]} -> ${visits[-1]}"

finished=1
trap - EXIT
say "Done. The $STACK stack keeps running:"
printf '    %-36s # %s\n' \
  "curl http://localhost:$PORT/" "another visit" \
  "shoal service scale ${STACK}_web=10" "more replicas" \
  "shoal service logs ${STACK}_web" "what the tasks print" \
  "shoal stack rm $STACK" "remove the stack: its services, tasks and network"
