#!/usr/bin/env bash
# Feedback durability under kill -9: clients post predictions and feedback to `mmintent serve`
# at full speed while the server is killed with SIGKILL at ROUNDS random moments and restarted
# each time on the same log. Then checks that every acknowledged feedback record (HTTP 200) is in
# the log, and that `mmintent tune` reads the log. Exit 1 when a record was lost.
#
#   bench/feedback_durability.sh [-r ROUNDS] [-o OUT] [RUN_DIR]
#
# RUN_DIR: a trained demo run (default: trains configs/demo.yaml into OUT/demo_run first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source "$root/bench/serve_common.sh"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
python="${PYTHON:-/usr/bin/python3}"
rounds=10
out="$root/runs/feedback_durability"
while getopts "r:o:h" opt; do
  case "$opt" in
    r) rounds="$OPTARG" ;;
    o) out="$OPTARG" ;;
    *) sed -n '2,10p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
run_dir="${1:-}"
rm -rf "$out/log" "$out/acked.txt" "$out/tuned"
mkdir -p "$out/log"
out="$(cd "$out" && pwd)"
if [ -z "$run_dir" ]; then
  run_dir="$out/demo_run"
  [ -f "$run_dir/model.pt" ] || "$bin" train configs/demo.yaml "output.dir=$run_dir" output.overwrite=true >"$out/train.log" 2>&1
fi
log="$out/log/feedback.jsonl"
: >"$out/acked.txt"

for ((round = 1; round <= rounds; ++round)); do
  start_server "$out/server_$round.log" "$run_dir" "serve.feedback_log=$log"
  pid=$server_pid
  port=$server_port
  # 4 client threads: predict, then feedback on it; an acknowledged id is appended to acked.txt.
  "$python" - "$port" "$root/data/demo/val.jsonl" "$out/acked.txt" <<'PY' &
import base64, http.client, json, os, random, sys, threading
port, manifest, acked_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
folder = os.path.dirname(manifest)
samples = []
for line in open(manifest).readlines()[:40]:
    r = json.loads(line)
    samples.append({"text": r["text"], "image": base64.b64encode(open(os.path.join(folder, r["image"]), "rb").read()).decode()})
lock = threading.Lock()
acked = open(acked_path, "a")
def client(seed):
    rng = random.Random(seed)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while True:
            c.request("POST", "/v1/predict", json.dumps(rng.choice(samples)), {"Content-Type": "application/json"})
            shown = json.loads(c.getresponse().read())
            reaction = rng.choice(["accepted", "rejected"])
            c.request("POST", "/v1/feedback", json.dumps({"id": shown["id"], "reaction": reaction}),
                      {"Content-Type": "application/json"})
            resp = c.getresponse()
            body = resp.read()
            if resp.status == 200:
                with lock:
                    acked.write(shown["id"] + "\n")
                    acked.flush()
    except Exception:
        return  # the server was killed
threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
for t in threads: t.start()
for t in threads: t.join()
PY
  clients=$!
  sleep "$("$python" -c 'import random; print(round(random.uniform(0.5, 3.0), 2))')"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  wait "$clients" || true
  echo "round $round: killed; $(wc -l <"$out/acked.txt") acknowledged so far, log $(wc -c <"$log") bytes"
done

"$python" - "$log" "$out/acked.txt" <<'PY'
import json, sys
log, acked = sys.argv[1], sys.argv[2]
data = open(log, "rb").read().decode("utf-8", "replace")
lines = data.split("\n")
torn = lines[-1] if lines[-1] else ""
ids = set()
for i, line in enumerate(lines[:-1] if torn else lines):
    if line.strip():
        ids.add(json.loads(line)["id"])  # every complete line must be JSON
want = [l.strip() for l in open(acked) if l.strip()]
lost = [a for a in want if a not in ids]
print(f"{len(want)} acknowledged, {len(ids)} records in the log, {len(lost)} lost; "
      f"unfinished last line: {len(torn)} bytes")
sys.exit(1 if lost else 0)
PY
"$bin" tune "$run_dir" --feedback "$log" --out "$out/tuned" --overwrite tune.epochs=1 >"$out/tune.log" 2>&1 ||
  { echo "tune could not read the log:" >&2; tail -5 "$out/tune.log" >&2; exit 1; }
echo "mmintent tune read the log: $(grep -m1 -o 'feedback: [^;]*' "$out/tune.log" || true)"
