#!/usr/bin/env bash
# The main job on the embedded default: a DuckDB warehouse mirrored into the local LaunchDarkly
# emulator. Usage: scripts/demo.sh PATH/TO/ldsync
set -euo pipefail
ldsync=${1:?usage: scripts/demo.sh PATH/TO/ldsync}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ldsync-demo.XXXXXX")
emulator_pid=
cleanup() {
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '$ %s\n' "$*"; }

step "A DuckDB warehouse, from demo/seed.sql"
cp -r "$repo/demo/ldsync.toml" "$repo/demo/syncs" "$work/"
"$ldsync" seed-duckdb --database "$work/warehouse.duckdb" --script "$repo/demo/seed.sql"
echo "created $work/warehouse.duckdb"

step "A local LaunchDarkly: ldsync emulator"
export LD_ACCESS_TOKEN=demo-token
"$ldsync" emulator --port 0 --token "$LD_ACCESS_TOKEN" >"$work/emulator.out" 2>"$work/emulator.log" &
emulator_pid=$!
for _ in $(seq 100); do
  grep -q '^events_url: ' "$work/emulator.out" 2>/dev/null && break
  sleep 0.1
done
LD_API_URL=$(sed -n 's/^api_url: //p' "$work/emulator.out")
LD_EVENTS_URL=$(sed -n 's/^events_url: //p' "$work/emulator.out")
export LD_API_URL LD_EVENTS_URL
[ -n "$LD_API_URL" ] || { echo "the emulator did not start:"; cat "$work/emulator.log"; exit 1; }
echo "emulator at $LD_API_URL"

cd "$work"
step "Validate, and reach the warehouse and LaunchDarkly"
say "ldsync validate --check-connections"
"$ldsync" validate --check-connections

step "Plan, then run"
say "ldsync plan"
"$ldsync" plan
say "ldsync run"
"$ldsync" run

step "The warehouse changes (demo/change.sql)"
"$ldsync" seed-duckdb --database "$work/warehouse.duckdb" --script "$repo/demo/change.sql"
say "ldsync plan --detailed-exitcode"
"$ldsync" plan --detailed-exitcode || [ $? -eq 2 ]
say "ldsync run"
"$ldsync" run
say "ldsync plan --detailed-exitcode   # nothing left to send"
"$ldsync" plan --detailed-exitcode

step "The segments, read back from the emulator"
say "curl $LD_API_URL/_emulator/state"
python3 - "$LD_API_URL" <<'PY'
import json, sys, urllib.request
state = json.load(urllib.request.urlopen(sys.argv[1] + "/_emulator/state"))
for project in state["projects"]:
    for env in project["environments"]:
        for segment in env["segments"]:
            members = segment["included"]
            print(f'{project["key"]}/{env["key"]} segment `{segment["key"]}` '
                  f'({segment["context_kind"]}, {len(members)} members): {", ".join(members)}')
PY
step "Done: the emulator stops now"
