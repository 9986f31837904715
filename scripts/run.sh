#!/usr/bin/env bash
# shellcheck disable=SC2317  # on_err and on_exit are reached through traps
# The main job: installs (scripts/setup.sh), starts the daemon on a demo data dir, walks through DataShare
# with two apps, UDMF and the on-device LLM (aicap), then keeps the daemon in the foreground until Ctrl-C
# (SIGTERM to it, graceful shutdown).
#   scripts/run.sh          demo, then serve until Ctrl-C
#   scripts/run.sh --once   demo, then stop the daemon; exit non-zero if any step failed
# Data dir: $DATAMGR_DATA_DIR, else .datamgr in the repo root (that default one is reset on every run).
set -Eeuo pipefail
start_dir="$PWD"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

once=0
case "${1:-}" in
  "") ;;
  --once) once=1 ;;
  -h | --help) sed -n '2,6s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "usage: scripts/run.sh [--once]" >&2; exit 2 ;;
esac

PROVIDER=com.example.contacts
CONSUMER=com.example.dialer
STRANGER=com.example.stranger
ASSISTANT=com.example.assistant
READ_PERM=com.example.permission.READ_CONTACTS
WRITE_PERM=com.example.permission.WRITE_CONTACTS
MANIFEST=deploy/examples/contacts.manifest.json
URI="datashare:///$PROVIDER/main/people"
# Predicates for --where: a JSON list of DataSharePredicates calls.
WHERE_ADA='[["equal_to", "name", "Ada"]]'
HEALTH_TIMEOUT_S=30
STOP_TIMEOUT_S=40

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
section() { printf '\n%s=== %s ===%s\n' "$bold" "$*" "$plain"; }
show() {  # prints the command, shell-quoted so that it can be pasted, then runs it
  local arg line='$'
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=+@,-]+$ ]]; then line+=" $arg"; else line+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  printf '%s\n' "$line"
  "$@"
}
on_err() {
  local rc=$? cmd=$BASH_COMMAND
  if [ "$cmd" = '"$@"' ]; then cmd="the command above"; fi
  echo "run.sh: failed (exit $rc): $cmd" >&2
}
trap on_err ERR

daemon=""
subscriber=""
log=""

stop_daemon() {  # SIGTERM, then wait for the graceful shutdown; sets daemon_rc
  daemon_rc=0
  [ -n "$daemon" ] || return 0
  kill -TERM "$daemon" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while kill -0 "$daemon" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if kill -0 "$daemon" 2>/dev/null; then
    echo "run.sh: daemon did not stop within ${STOP_TIMEOUT_S} s; killing it" >&2
    kill -KILL "$daemon" 2>/dev/null || true
  fi
  wait "$daemon" 2>/dev/null || daemon_rc=$?
  daemon=""
}

on_exit() {
  local rc=$?
  trap - ERR INT TERM
  if [ -n "$subscriber" ]; then kill "$subscriber" 2>/dev/null || true; fi
  if [ "$rc" -ne 0 ] && [ -n "$log" ] && [ -f "$log" ]; then
    printf '\n--- last lines of the daemon log (%s) ---\n' "$log" >&2
    tail -n 40 "$log" >&2 || true
  fi
  if [ -n "$daemon" ]; then
    echo "stopping the daemon (pid $daemon)"
    stop_daemon
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

section "setup"
bash scripts/setup.sh
export PATH="$root/.venv/bin:$PATH"

section "daemon"
if [ -n "${DATAMGR_DATA_DIR:-}" ]; then
  data_dir="$(cd "$start_dir" && realpath -m "$DATAMGR_DATA_DIR")"
  reset=0
else
  data_dir="$root/.datamgr"
  reset=1
fi
export DATAMGR_DATA_DIR="$data_dir"
if timeout 10 datamgr health >/dev/null 2>&1; then
  echo "run.sh: a daemon already serves $data_dir; stop it first" >&2
  exit 1
fi
if [ "$reset" -eq 1 ]; then
  echo "fresh demo data dir: $data_dir"
  rm -rf "$data_dir"
else
  echo "data dir: $data_dir (the demo expects it to be fresh: it registers apps and a provider)"
fi
mkdir -p "$data_dir"
log="$data_dir/daemon.log"
# Embedded defaults: no config file, SQLite in the data dir, the Unix socket $data_dir/datamgr.sock.
datamgr serve >"$log" 2>&1 &
daemon=$!
echo "started datamgr serve (pid $daemon), log: $log"
deadline=$((SECONDS + HEALTH_TIMEOUT_S))
until timeout 5 datamgr health >/dev/null 2>&1; do
  if ! kill -0 "$daemon" 2>/dev/null; then
    echo "run.sh: the daemon exited during startup" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "run.sh: the daemon is not healthy after ${HEALTH_TIMEOUT_S} s" >&2
    exit 1
  fi
  sleep 0.2
done
show datamgr health

section "register apps (the owner issues each a token)"
register() {  # prints `datamgr apps add` and sets TOKEN from its last line, `token: <TOKEN>`
  local out
  out="$(datamgr apps add "$1")"
  printf '$ datamgr apps add %s\n%s\n' "$1" "$out"
  TOKEN="$(printf '%s\n' "$out" | tail -n 1 | sed -n 's/^token: //p')"
  if [ -z "$TOKEN" ]; then
    echo "run.sh: no 'token: ...' line at the end of 'datamgr apps add $1'" >&2
    return 1
  fi
}
register "$PROVIDER"
provider_token="$TOKEN"
register "$CONSUMER"
consumer_token="$TOKEN"
register "$STRANGER"
stranger_token="$TOKEN"
show datamgr apps grant "$CONSUMER" "$READ_PERM" "$WRITE_PERM"
show datamgr apps list

section "the provider shares its table ($MANIFEST)"
show datamgr share provide "$MANIFEST" --token "$provider_token"

section "the provider publishes data (an app publishes under its own bundle only)"
show datamgr share publish "$PROVIDER" "datashareproxy://$PROVIDER/weather" '{"t": 21}' --token "$provider_token"
show datamgr share published "$PROVIDER" --token "$provider_token"

section "the dialer inserts two people"
show datamgr share insert "$URI" '{"name": "Ada", "phone": "+44 20 7946 0018", "age": 36, "starred": false}' \
  --token "$consumer_token"
show datamgr share insert "$URI" '{"name": "Grace", "phone": "+1 202 555 0143", "age": 45}' --token "$consumer_token"

section "a subscriber watches $URI"
sub_out="$data_dir/subscriber.out"
datamgr share subscribe "$URI" --token "$consumer_token" --count 1 >"$sub_out" 2>&1 &
subscriber=$!
echo "subscriber started (pid $subscriber)"
# The subscription is live once the daemon has answered the stream; give it a moment to get there.
for _ in $(seq 30); do
  if [ -s "$sub_out" ] || ! kill -0 "$subscriber" 2>/dev/null; then break; fi
  sleep 0.1
done
sleep 0.5

section "the dialer updates Ada"
show datamgr share update "$URI" '{"age": 37, "starred": true}' --where "$WHERE_ADA" --token "$consumer_token"

section "query, as a table"
show datamgr share query "$URI" --token "$consumer_token"

section "query name = Ada, as JSON"
printf "\$ datamgr share query %s --token %s --where '%s' --json\n" "$URI" "$consumer_token" "$WHERE_ADA"
ada_json="$(datamgr share query "$URI" --token "$consumer_token" --where "$WHERE_ADA" --json)"
printf '%s\n' "$ada_json"
if ! printf '%s' "$ada_json" | grep -Eq '"age": *37'; then
  echo "run.sh: the query does not show Ada's updated age 37" >&2
  exit 1
fi

section "what the subscriber saw"
deadline=$((SECONDS + 10))
while kill -0 "$subscriber" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
if kill -0 "$subscriber" 2>/dev/null; then
  cat "$sub_out"
  echo "run.sh: the subscriber saw no change within 10 s" >&2
  exit 1
fi
sub_rc=0
wait "$subscriber" || sub_rc=$?
subscriber=""
cat "$sub_out"
if [ "$sub_rc" -ne 0 ]; then
  echo "run.sh: the subscriber exited with $sub_rc" >&2
  exit 1
fi

section "an app without the permission is refused (expected)"
printf '$ datamgr share query %s --token %s\n' "$URI" "$stranger_token"
denied_rc=0
denied="$(datamgr share query "$URI" --token "$stranger_token" 2>&1)" || denied_rc=$?
printf '%s\n' "$denied"
if [ "$denied_rc" -eq 0 ]; then
  echo "run.sh: $STRANGER read the table without $READ_PERM" >&2
  exit 1
fi
if ! printf '%s' "$denied" | grep -Eqi 'permission.denied'; then
  echo "run.sh: expected PERMISSION_DENIED, got the output above (exit $denied_rc)" >&2
  exit 1
fi
echo "refused as expected (exit $denied_rc)"

section "AI capability: the bundled SmolLM2-135M served to apps"
register "$ASSISTANT"
assistant_token="$TOKEN"
show datamgr apps grant "$ASSISTANT" ohos.permission.USE_AI
show datamgr health --service ai --wait 120  # SERVING once the default model is loaded
show datamgr ai models
show datamgr ai complete "The capital of France is" --max-tokens 16 --temperature 0 --token "$assistant_token"
show datamgr ai chat "Name three primary colours." --max-tokens 48 --seed 7 --token "$assistant_token"
# the same long system prompt twice: the second request reuses its KV blocks from the prefix cache
SYSTEM="You are the assistant of a contacts app. Answer in one short sentence, politely and precisely."
show datamgr ai chat "Who is Ada?" --system "$SYSTEM" --max-tokens 24 --temperature 0 --token "$assistant_token"
show datamgr ai chat "Who is Grace?" --system "$SYSTEM" --max-tokens 24 --temperature 0 --token "$assistant_token"
show datamgr ai stats --token "$assistant_token"
printf '$ datamgr ai complete hello --token %s\n' "$stranger_token"
ai_rc=0
ai_denied="$(datamgr ai complete hello --token "$stranger_token" 2>&1)" || ai_rc=$?
printf '%s\n' "$ai_denied"
if [ "$ai_rc" -eq 0 ] || ! printf '%s' "$ai_denied" | grep -q 'ohos.permission.USE_AI'; then
  echo "run.sh: $STRANGER used the AI without ohos.permission.USE_AI" >&2
  exit 1
fi
echo "refused as expected (exit $ai_rc)"

section "AI as a data service: embeddings, an indexed table, retrieval, a grounded answer"
register com.example.notes
notes_token="$TOKEN"
NOTES_URI=datashare:///com.example.notes/main/notes
show datamgr share provide deploy/examples/notes.manifest.json --token "$notes_token"  # body: "index" vector+fulltext
show datamgr apps grant "$ASSISTANT" com.example.permission.READ_NOTES
show datamgr apps grant com.example.notes com.example.permission.WRITE_NOTES
for body in "The wifi password at the cabin is BLUEFJORD42." "The dentist appointment is on Tuesday at nine." \
  "Water the tomato plants every second evening."; do
  show datamgr share insert "$NOTES_URI" "{\"folder\": \"home\", \"body\": \"$body\"}" --token "$notes_token"
done
show datamgr ai embed "wifi password" "network key" "tomato plants" --token "$assistant_token"
for _ in $(seq 120); do  # the rows are embedded behind the writes; Retrieve's "pending" counts the rest
  pending="$(datamgr share retrieve "$NOTES_URI" wifi --json --token "$assistant_token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["pending"])')"
  [ "$pending" = 0 ] && break
  sleep 0.5
done
show datamgr share retrieve "$NOTES_URI" "what is the network key at the cabin" -k 2 --token "$assistant_token"
show datamgr ai chat "What is the wifi password at the cabin?" --context "$NOTES_URI" --rows 2 --max-tokens 32 \
  --temperature 0 --token "$assistant_token"
register com.example.guest  # may use the AI, may not read the notes
guest_token="$TOKEN"
show datamgr apps grant com.example.guest ohos.permission.USE_AI
printf '$ datamgr ai chat "What is the wifi password?" --context %s --token %s\n' "$NOTES_URI" "$guest_token"
grounded_rc=0
grounded_denied="$(datamgr ai chat "What is the wifi password?" --context "$NOTES_URI" --token "$guest_token" 2>&1)" \
  || grounded_rc=$?
printf '%s\n' "$grounded_denied"
if [ "$grounded_rc" -eq 0 ] || ! printf '%s' "$grounded_denied" | grep -Eqi 'permission.denied'; then
  echo "run.sh: com.example.guest grounded a chat in a table it may not read" >&2
  exit 1
fi
echo "refused as expected (exit $grounded_rc)"

section "UDMF: typed data between apps (DATA_HUB, then a drag read once by its target)"
show datamgr udmf types --ext .jpg --token "$consumer_token"
hub_key="$(datamgr udmf put-text "Meet Ada at 10:00" --tag reminder --token "$provider_token")"
printf '$ datamgr udmf put-text %q --tag reminder --token %s\n%s\n' "Meet Ada at 10:00" "$provider_token" "$hub_key"
show datamgr udmf list --token "$consumer_token"
show datamgr udmf get "$hub_key" --token "$consumer_token"
show datamgr udmf drag "Ada Lovelace, +44 20 7946 0018" --from-token "$provider_token" --to "$CONSUMER" \
  --to-token "$consumer_token"

section "demo done"
if [ "$once" -eq 1 ]; then
  echo "stopping the daemon (pid $daemon)"
  stop_daemon
  if [ "$daemon_rc" -ne 0 ]; then
    echo "run.sh: the daemon exited with $daemon_rc on SIGTERM (expected a graceful 0)" >&2
    exit 1
  fi
  echo "the daemon stopped cleanly"
  exit 0
fi

section "serving"
echo "the daemon (pid $daemon) serves $data_dir/datamgr.sock; try, with the environment"
echo "  DATAMGR_DATA_DIR=$data_dir"
echo "  $root/.venv/bin/datamgr share query $URI --token $consumer_token"
echo "Ctrl-C stops it gracefully. Its log follows."
# The daemon, started in the background by a script, ignores SIGINT: forward both signals as SIGTERM.
trap 'echo; echo "stopping the daemon (SIGTERM)..."; kill -TERM "$daemon" 2>/dev/null || true' INT TERM
tail -n +1 -f --pid="$daemon" "$log" &
rc=0
# `wait` returns early when a trapped signal arrives; wait again until the daemon itself has exited
# (a zombie still answers kill -0, so its real status is collected by the next wait).
while kill -0 "$daemon" 2>/dev/null; do
  wait "$daemon" && rc=0 || rc=$?
done
daemon=""
log=""  # already shown
echo "the daemon exited with status $rc"
exit "$rc"
