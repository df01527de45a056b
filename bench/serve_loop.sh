#!/usr/bin/env bash
# The feedback loop closed online, end to end, in one command:
#   train the demo on a quarter of its training split, serve it, measure the served accuracy on
#   the test split over HTTP, stream the other three quarters through POST /v1/predict as a
#   product would, with a simulated person reacting to each answer through POST /v1/feedback
#   (accept a right intent, correct a wrong one), run `mmintent tune` on the server's feedback
#   log, hot-reload the tuned run (POST /v1/admin/reload) into the same server, and measure the
#   served accuracy again.
#     bench/serve_loop.sh [KEY=VALUE overrides for `mmintent tune`...]
# Environment: MMINTENT_BIN (default build/bin/mmintent), BASE_SHARE (0.25: the share of the
# demo's training split the first model sees), SEED (7: which records).
# Writes data/generated/serve_loop/ and runs/serve_loop_{base,tuned}/ (git-ignored). Exits 1
# when a step fails or any request of the stream or the reload fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
share="${BASE_SHARE:-0.25}"
seed="${SEED:-7}"
work="$root/data/generated/serve_loop"
base=runs/serve_loop_base
tuned=runs/serve_loop_tuned
source "$root/bench/serve_common.sh"
rm -rf "$work"
mkdir -p "$work"
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.1f}')"; }

if [ ! -f data/demo/train.jsonl ]; then
  "$root/build/bin/mmintent_make_demo" --out data/demo
fi

# 1. Split the demo's training records: the base model's share, and the stream. Image paths
# become absolute (the manifests live elsewhere).
python3 - "$work" "$share" "$seed" <<'PY'
import json, os, random, sys
work, share, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
demo = os.path.abspath("data/demo")
def load(split):
    out = []
    for line in open(f"{demo}/{split}.jsonl"):
        if line.strip():
            r = json.loads(line)
            r["image"] = os.path.join(demo, r["image"])
            out.append(r)
    return out
train = load("train")
random.Random(seed).shuffle(train)
k = int(len(train) * share)
for name, records in (("base_train", train[:k]), ("stream", train[k:]), ("test", load("test"))):
    with open(f"{work}/{name}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
print(f"base model: {k} training records; stream: {len(train) - k}; test: {len(load('test'))}")
PY

# 2. The model before feedback.
t0=$(now)
"$bin" train configs/demo.yaml "data.train=$work/base_train.jsonl" "output.dir=$base" output.overwrite=true \
  train.progress=none >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
t_train=$(elapsed "$t0" "$(now)")

# 3. Serve it, with the feedback log on (no keys: loopback only, admin open).
start_server "$work/server.log" "$base" "serve.feedback_log=$work/feedback.jsonl" runtime.threads=1
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
echo "serving $base on port $server_port (pid $server_pid)"

# 4. Served accuracy before, the stream with reactions, (5.) tune, (6.) reload, accuracy after.
python3 - "$server_port" "$work" "$bin" "$base" "$tuned" "$t_train" "$@" <<'PY'
import base64, json, subprocess, sys, time, urllib.error, urllib.request
port, work, binary, base, tuned, t_train = sys.argv[1:7]
tune_overrides = sys.argv[7:]
url = f"http://127.0.0.1:{port}"

def call(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"serve_loop: {path} answered {e.code}: {e.read().decode()}")

images = {}
def as_request(record):
    path = record["image"]
    if path not in images:
        images[path] = base64.b64encode(open(path, "rb").read()).decode()
    return {"text": record["text"], "image": images[path]}

def load(name):
    return [json.loads(l) for l in open(f"{work}/{name}.jsonl") if l.strip()]

def served_accuracy(records, batch=32):
    """Accuracy (top intent) and decision shares of the served model, through the batch form."""
    right, decisions, versions = 0, {"accept": 0, "clarify": 0, "fallback": 0}, set()
    for i in range(0, len(records), batch):
        chunk = records[i:i + batch]
        answers = call("/v1/predict", [as_request(r) for r in chunk])
        for r, a in zip(chunk, answers):
            right += a["top"][0]["intent"] == r["label"]
            decisions[a["decision"]] += 1
            versions.add(a["model_version"])
    return right / len(records), decisions, versions

test = load("test")
t0 = time.time()
before, decisions_before, v_before = served_accuracy(test)
t_eval = time.time() - t0
print(f"served accuracy before: {before:.4f} on {len(test)} test requests ({t_eval:.1f} s)")

# The stream: one request at a time, as a product sends them; the person reacts to each.
stream = load("stream")
counts = {"accepted": 0, "corrected": 0}
t0 = time.time()
for r in stream:
    answer = call("/v1/predict", as_request(r))
    shown = answer["top"][0]["intent"]
    reaction = {"id": answer["id"], "reaction": "accepted"}
    if shown != r["label"]:
        reaction = {"id": answer["id"], "reaction": "corrected", "corrected_to": r["label"]}
    if not call("/v1/feedback", reaction).get("recorded"):
        sys.exit("serve_loop: feedback not recorded")
    counts[reaction["reaction"]] += 1
t_stream = time.time() - t0
stream_accuracy = counts["accepted"] / len(stream)
print(f"stream: {len(stream)} requests and reactions in {t_stream:.1f} s ({2 * len(stream) / t_stream:.0f} calls/s): "
      f"{counts['accepted']} accepted, {counts['corrected']} corrected")

# Learn from the server's log (it keeps serving meanwhile).
t0 = time.time()
subprocess.run([binary, "tune", base, "--feedback", f"{work}/feedback.jsonl", "--out", tuned, "--overwrite",
                "train.progress=none", *tune_overrides], check=True, stdout=open(f"{work}/tune.log", "w"),
               stderr=subprocess.STDOUT)
t_tune = time.time() - t0

reload = call("/v1/admin/reload", {"run_dir": tuned})
print(f"reloaded: model {reload['previous_model_version'][:12]} -> {reload['model_version'][:12]} "
      f"in {reload['seconds']:.2f} s")
after, decisions_after, v_after = served_accuracy(test)
if v_after != {reload["model_version"]}:
    sys.exit(f"serve_loop: after the reload the server answered with versions {v_after}")

def shares(d):
    n = sum(d.values())
    return " / ".join(f"{d[k] / n * 100:.1f}" for k in ("accept", "clarify", "fallback"))
print()
print("| figure | before (base) | after (tuned, hot-reloaded) |")
print("|---|---|---|")
print(f"| served test accuracy (top intent, {len(test)} requests) | {before * 100:.2f} | {after * 100:.2f} "
      f"({(after - before) * 100:+.2f}) |")
print(f"| decisions accept / clarify / fallback (%) | {shares(decisions_before)} | {shares(decisions_after)} |")
print(f"| model version | {next(iter(v_before))[:12]} | {reload['model_version'][:12]} |")
print()
print(f"stream accuracy (the base model, as the person saw it): {stream_accuracy:.4f}; times: train {t_train} s, "
      f"stream {t_stream:.0f} s, tune {t_tune:.0f} s, reload {reload['seconds']:.2f} s")
with open(f"{work}/summary.json", "w") as f:
    json.dump({"before": before, "after": after, "feedback": counts, "stream_accuracy": stream_accuracy,
               "reload_seconds": reload["seconds"], "tune_seconds": t_tune, "stream_seconds": t_stream}, f, indent=1)
PY

# 7. SIGHUP reloads the served path again (here the tuned run, the last one loaded).
reloads_before=$(grep -c "reloaded: model" "$work/server.log" || true)
kill -HUP "$server_pid"
for _ in $(seq 1 300); do
  [ "$(grep -c "reloaded: model" "$work/server.log" || true)" -gt "$reloads_before" ] && break
  sleep 0.1
done
grep "reloaded: model" "$work/server.log" | tail -1 | grep -q "from $tuned" ||
  { echo "serve_loop: SIGHUP did not reload $tuned" >&2; cat "$work/server.log" >&2; exit 1; }
echo "SIGHUP: reloaded $tuned again"

# 8. Stop the server as an operator would; it must exit cleanly.
kill -TERM "$server_pid"
wait "$server_pid" || { echo "serve_loop: the server did not exit cleanly" >&2; cat "$work/server.log" >&2; exit 1; }
trap - EXIT
echo "server stopped; its log: $work/server.log; feedback log: $work/feedback.jsonl"
