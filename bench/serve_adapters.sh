#!/usr/bin/env bash
# Low-rank adapters served over one base (serve.adapters): what a request that names an adapter
# costs against one that does not, on the same server, and what each adapter costs in memory.
# One server holds the base run and the adapter runs given; wrk (Debian's) sends one text
# request at 1 and at 8 connections, without "adapter" and with the first adapter, the two
# cases alternating for ROUNDS rounds; a second server without adapters gives the base's
# memory. Prints the medians (requests/s, p50, p99), the ratios adapter / base, and the
# servers' resident memory after the load; writes OUT/summary.md.
#
#   bench/serve_adapters.sh [-d SECONDS] [-r ROUNDS] [-o OUT] BASE_RUN ADAPTER_RUN...
#
# e.g. after bench/lora_experiment.sh:
#   bench/serve_adapters.sh runs/feedback_base runs/feedback_lora_emb runs/feedback_lora_emb_s7
# The text is the first test query of the base run's data. wrk and the server share this
# machine's cores. Run on an otherwise idle machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source "$root/bench/serve_common.sh"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
seconds=5
rounds=3
out="$root/runs/bench_serve_adapters"
while getopts "d:r:o:h" opt; do
  case "$opt" in
    d) seconds="$OPTARG" ;;
    r) rounds="$OPTARG" ;;
    o) out="$OPTARG" ;;
    *) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 2; }
base="$1"
shift
command -v wrk >/dev/null || { echo "serve_adapters: needs wrk (apt-get install wrk)" >&2; exit 2; }
[ -x "$bin" ] || { echo "serve_adapters: no mmintent binary at $bin (set MMINTENT_BIN)" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# The request: the base run's first test query (text only).
/usr/bin/python3 - "$base/config.yaml" "$out" <<'PY'
import json, os, re, sys
config, out = sys.argv[1], sys.argv[2]
test = re.search(r'^\s+test:\s*"?([^"\n]+)"?\s*$', open(config).read(), re.M).group(1)
text = json.loads(open(test).readline())["text"]
json.dump({"text": text}, open(os.path.join(out, "base.json"), "w"))
json.dump({"text": text, "adapter": "a1"}, open(os.path.join(out, "adapter.json"), "w"))
PY
for case in base adapter; do
  cat >"$out/$case.lua" <<EOF2
local f = io.open("$out/$case.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %d\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF2
done

adapters=()
i=1
for a in "$@"; do
  adapters+=(--adapter "a$i=$a")
  i=$((i + 1))
done
results="$out/results.txt"
: >"$results"

start_server "$out/server_base_only.log" "$base"
url="http://127.0.0.1:$server_port/v1/predict"
wrk -t1 -c8 -d"${seconds}s" -s "$out/base.lua" "$url" >/dev/null
echo "rss_kib 0 $(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")" | tee -a "$results"
kill -TERM "$server_pid"
wait "$server_pid" || true

start_server "$out/server_adapters.log" "$base" "${adapters[@]}"
url="http://127.0.0.1:$server_port/v1/predict"
for case in base adapter; do wrk -t1 -c1 -d2s -s "$out/$case.lua" "$url" >/dev/null; done  # warm-up
for round in $(seq 1 "$rounds"); do
  for c in 1 8; do
    threads=$((c < 2 ? 1 : 2))
    for case in base adapter; do
      line=$(wrk -t"$threads" -c"$c" -d"${seconds}s" --timeout 10s -s "$out/$case.lua" "$url" | grep '^RESULT')
      echo "$case $c $line" | tee -a "$results"
    done
  done
done
echo "rss_kib $# $(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")" | tee -a "$results"
kill -TERM "$server_pid"
wait "$server_pid" || true

/usr/bin/python3 - "$results" "$out/summary.md" "$seconds" "$rounds" "$(date -u +%Y-%m-%dT%H:%MZ)" \
  "$(git -C "$root" rev-parse --short HEAD)" "$base" "$*" <<'PY'
import statistics, sys
results, dst, seconds, rounds, when, commit, base, adapter_runs = sys.argv[1:9]
runs, rss = {}, {}
for line in open(results):
    f = line.split()
    if f[0] == "rss_kib":
        rss[int(f[1])] = int(f[2]) / 1024
        continue
    case, c, n, dur_us, p50, p99, errors = f[0], int(f[1]), int(f[3]), int(f[4]), float(f[5]), float(f[6]), int(f[7])
    runs.setdefault((case, c), []).append((n / (dur_us / 1e6), p50, p99, errors))
med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) + (sum(r[3] for r in v),) for k, v in runs.items()}
out = [f"{when}, commit {commit}, base {base}, adapters {adapter_runs}; {seconds} s per case, medians of {rounds} "
       "alternating rounds, wrk on the same cores", "",
       "| request | connections | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
for (case, c), (rps, p50, p99, errors) in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0] != "base")):
    out.append(f"| {'no adapter' if case == 'base' else 'adapter a1'} | {c} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {errors} |")
out.append("")
for c in (1, 8):
    if ("base", c) in med and ("adapter", c) in med:
        b, a = med[("base", c)], med[("adapter", c)]
        out.append(f"{c} connection(s): adapter / base requests/s x{a[0] / b[0]:.2f}, p50 x{a[1] / b[1]:.2f}")
n = max(rss)
if 0 in rss and n > 0:
    out.append(f"resident memory after load: {rss[0]:.0f} MiB without adapters, {rss[n]:.0f} MiB with {n}: "
               f"{(rss[n] - rss[0]) / n:.1f} MiB per adapter")
text = "\n".join(out) + "\n"
print(text, end="")
open(dst, "w").write(text)
PY
