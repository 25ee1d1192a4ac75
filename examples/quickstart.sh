#!/usr/bin/env bash
# ftab quickstart on the embedded defaults: build, start ftab-scheduler (data in ./ftab-data,
# Flight on 127.0.0.1:50051), create a live workspace, apply the example feature repository,
# ingest generated login counts, wait for materialization, show an online record and the
# offline table, then pull a point-in-time training set. Every step is a plain `ftab`
# command, printed before it runs.
#
# Environment (all optional):
#   FTAB_DATA_DIR     data directory            (default ./ftab-data)
#   FTAB_FLIGHT_ADDR  scheduler address         (default 127.0.0.1:50051; port 0 = any free port)
#   FTAB_BIN_DIR      use binaries from here instead of building them
#   FTAB_KEEP_RUNNING=1  leave the scheduler running at the end
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
repo="$root/examples/feature_repo"
workspace="quickstart"

if [ -z "${FTAB_BIN_DIR:-}" ]; then
  echo "==> building ftab (first build of the DataFusion/Ballista stack takes a while)"
  (cd "$root" && cargo build --bins --quiet)
  FTAB_BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/debug"
fi
ftab_bin="$FTAB_BIN_DIR/ftab"
scheduler_bin="$FTAB_BIN_DIR/ftab-scheduler"

log="$(mktemp -t ftab-scheduler.XXXXXX.log)"
ready="$(mktemp -t ftab-ready.XXXXXX)"
echo "==> starting ftab-scheduler (log: $log)"
"$scheduler_bin" >"$ready" 2>"$log" &
scheduler_pid=$!
stop() {
  if [ "${FTAB_KEEP_RUNNING:-0}" != "1" ] && kill -0 "$scheduler_pid" 2>/dev/null; then
    kill -TERM "$scheduler_pid" && wait "$scheduler_pid" || true
    echo "==> ftab-scheduler stopped (start it again with: $scheduler_bin)"
  fi
  rm -f "$ready"
}
trap stop EXIT

url=""
for _ in $(seq 1 600); do
  url="$(sed -n 's/^ftab-scheduler ready: flight=\([^ ]*\).*/\1/p' "$ready")"
  [ -n "$url" ] && break
  if ! kill -0 "$scheduler_pid" 2>/dev/null; then
    echo "ftab-scheduler exited before it was ready; its log says:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$url" ] || { echo "ftab-scheduler was not ready after 60s; see $log" >&2; exit 1; }
echo "    ready at $url"
export FTAB_SERVER="$url"

run() {
  echo
  echo "\$ ftab $*"
  "$ftab_bin" "$@"
}

# The listing is read whole before it is searched: `grep -q` stops reading at the first
# match, and ftab writing into the closed pipe would fail the pipeline.
workspaces=$("$ftab_bin" --output json workspace list)
if grep -Eq "\"name\": ?\"$workspace\"" <<<"$workspaces"; then
  echo
  echo "(workspace $workspace exists from an earlier run)"
else
  run workspace create "$workspace" --live
fi
run plan "$repo" --workspace "$workspace"
run apply "$repo" --workspace "$workspace" --yes
run tables list --workspace "$workspace"

# Example data: login counts of 20 users over the last 4 days (the table's ttl is 30 days,
# so the data is generated relative to now), plus one row sent twice.
data="$(mktemp -d -t ftab-quickstart.XXXXXX)"
csv="$data/user_login_counts.csv"
now=$(date -u +%s)
{
  echo "user_id,timestamp,user_login_count_7d,user_login_count_30d"
  for day in 3 2 1 0; do
    ts=$(date -u -d "@$(( now - day * 86400 - 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
    for user in $(seq 1 20); do
      echo "user_$user,$ts,$(( user + 3 - day )),$(( 4 * user + 10 - day ))"
    done
  done
  echo "user_1,$ts,99,99"
} > "$csv"
echo
echo "==> generated $(( $(wc -l < "$csv") - 1 )) rows in $csv"

run ingest --workspace "$workspace" --table user_login_counts "$csv" --wait
run get --workspace "$workspace" --table user_login_counts --key user_id=user_1
run jobs list --workspace "$workspace"
run tables describe user_login_counts --workspace "$workspace"

# A spine: which users (and merchants) we want features for, and when (two and a half days
# ago, and now; user_99 has no data, nor has any merchant). Each row gets the values that
# were current at its time.
spine="$data/spine.csv"
{
  echo "user_id,merchant_id,timestamp,label"
  t=$(date -u -d "@$(( now - 5 * 43200 ))" +%Y-%m-%dT%H:%M:%SZ)
  echo "user_1,m1,$t,0"
  echo "user_2,m1,$t,1"
  echo "user_1,m2,$(date -u -d "@$now" +%Y-%m-%dT%H:%M:%SZ),1"
  echo "user_99,m1,$t,0"
} > "$spine"
echo
echo "==> a spine of 4 rows in $spine"
out="${FTAB_DATA_DIR:-ftab-data}/training_set.parquet"
run training-set --workspace "$workspace" --service fraud_detection --spine "$spine" --out "$out"
rm -rf "$data"
echo
echo "==> done: workspace '$workspace' holds the example definitions and the ingested values"
echo "    (offline: the Delta table named above; online: ftab get; the training set: $out)."
