#!/usr/bin/env bash
# Learning from accept / reject alone, one command: train on CLINC150 "small", serve a stream of
# 10,000 requests (training queries "full" has and "small" lacks, plus out-of-scope queries the
# base never saw) with exploration (epsilon 0.1), let a simulated person only accept the intent
# shown or reject it (no corrections), and tune the base on that log with each objective:
#   supervised  the accepted records as labels (rejections carry no weight: rejection_weight 0)
#   ips         clipped inverse propensity scoring on the reward (1 accepted, 0 rejected)
#   snips       the self-normalised estimator
# Every tune holds the same 20% of the log out (whole distinct requests) and estimates there,
# off-policy, the reward of showing its model's most probable intent; the script sets that
# beside the reward measured on the test split (the share of test requests whose most probable
# intent is right, out-of-scope included: the stream's out-of-scope share is the test split's).
#   bench/bandit_experiment.sh [KEY=VALUE overrides for every `mmintent tune`...]
# Environment: MMINTENT_BIN (default build/bin/mmintent), MMINTENT_SHARED_DATA (../shared/data),
# STREAM_SIZE (10000), STREAM_SEED (7), EPSILON (0.1), OBJECTIVES ("supervised ips snips"),
# REUSE_BASE=1 (keep an existing runs/feedback_base, the same base bench/feedback_experiment.sh
# trains). Writes data/generated/clinc150{,_small}/, data/generated/bandit_experiment/ and
# runs/feedback_base, runs/bandit_<objective>/ (all git-ignored). Exits 1 when the targets are
# missed: ips or snips +2 points of test in-scope accuracy with out-of-scope recall not lower,
# and the measured test reward inside that objective's off-policy interval.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
shared="${MMINTENT_SHARED_DATA:-$root/../shared/data}"
stream_size="${STREAM_SIZE:-10000}"
stream_seed="${STREAM_SEED:-7}"
epsilon="${EPSILON:-0.1}"
objectives="${OBJECTIVES:-supervised ips snips}"
work=data/generated/bandit_experiment
base=runs/feedback_base
mkdir -p "$work"
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.0f}')"; }

# 1. Both variants, and the stream: in-scope queries of full's training split that small's lacks,
#    out-of-scope ones from the oos_plus variant's training queries that full's (and so small's)
#    lack, in the test split's proportions.
if [ ! -f data/generated/clinc150/train.jsonl ]; then  # bench/real_data.sh makes the same files
  "$bin" import clinc150 "$shared/clinc150" data/generated/clinc150 >/dev/null
fi
if [ ! -f data/generated/clinc150_small/train.jsonl ]; then
  "$bin" import clinc150 --variant small "$shared/clinc150" data/generated/clinc150_small >/dev/null
fi
python3 - "$work" "$stream_size" "$stream_seed" "$shared/clinc150" <<'PY'
import collections, json, random, sys
work, n, seed, src = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def load(variant, split):
    with open(f"data/generated/{variant}/{split}.jsonl") as f:
        return [json.loads(l) for l in f if l.strip()]
bag = lambda rs: collections.Counter((r["text"], r["label"]) for r in rs)
full, small = load("clinc150", "train"), load("clinc150_small", "train")
test = load("clinc150", "test")
if bag(small) - bag(full):
    sys.exit("the small variant's training split is not inside the full one's")
in_scope = sorted(t for t in (bag(full) - bag(small)).elements() if t[1] != "oos")
plus = json.load(open(f"{src}/data_oos_plus.json"))
full_json = json.load(open(f"{src}/data_full.json"))
seen_oos = {t for t, _ in full_json["oos_train"]} | {t for t, _ in full_json["oos_val"]} | {t for t, _ in full_json["oos_test"]}
oos = sorted({t for t, _ in plus["oos_train"]} - seen_oos)
share = sum(r["label"] == "oos" for r in test) / len(test)
rng = random.Random(seed)
n_oos = round(n * share)
stream = [(t, l) for t, l in rng.choices(in_scope, k=n - n_oos)] + [(t, "oos") for t in rng.choices(oos, k=n_oos)]
rng.shuffle(stream)
with open(f"{work}/stream.jsonl", "w") as f:
    for text, label in stream:
        f.write(json.dumps({"text": text, "label": label}) + "\n")
print(f"stream: {n} requests (seed {seed}) drawn with repeats from {len(in_scope)} in-scope queries "
      f"of full's training split that small lacks and {len(oos)} out-of-scope queries of oos_plus "
      f"that no full split holds; out-of-scope share {n_oos / n:.4f} (test split: {share:.4f})")
PY

# 2. The model before feedback.
if [ "${REUSE_BASE:-0}" = 1 ] && [ -f "$base/model.pt" ]; then
  echo "reusing $base (REUSE_BASE=1)"
  t_train="(reused)"
else
  t0=$(now)
  "$bin" train configs/clinc150_small.yaml "output.dir=$base" output.overwrite=true train.progress=lines
  t_train="$(elapsed "$t0" "$(now)") s"
fi

# 3. Serve the stream with exploration; the simulated person accepts the intent shown when it is
#    the request's, else rejects it.
t0=$(now)
"$bin" predict "$base" --manifest "$work/stream.jsonl" --out "$work/predictions.jsonl" --explore "$epsilon"
t_predict=$(elapsed "$t0" "$(now)")
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
stream = [json.loads(l) for l in open(f"{work}/stream.jsonl")]
preds = [json.loads(l) for l in open(f"{work}/predictions.jsonl")]
assert len(stream) == len(preds), "one prediction per request"
counts = {"accepted": 0, "rejected": 0}
explored = 0
with open(f"{work}/feedback.jsonl", "w") as f:
    for s, p in zip(stream, preds):
        assert p["text"] == s["text"]
        reaction = "accepted" if p["shown"] == s["label"] else "rejected"
        counts[reaction] += 1
        explored += p["shown"] != p["top"][0]["intent"]
        f.write(json.dumps({"text": s["text"], "predicted": p["shown"], "propensity": p["propensity"],
                            "reaction": reaction}) + "\n")
print(f"simulated person: {counts['accepted']} accepted, {counts['rejected']} rejected "
      f"(logged reward {counts['accepted'] / len(stream):.4f}); {explored} explored requests")
PY

# 4. Tune on the log with each objective.
times=()
for objective in $objectives; do
  extra=(tune.objective="$objective" tune.holdout=0.2)
  [ "$objective" = supervised ] && extra+=(tune.rejection_weight=0)
  t0=$(now)
  "$bin" tune "$base" --feedback "$work/feedback.jsonl" --out "runs/bandit_$objective" --overwrite \
    train.progress=none "${extra[@]}" "$@" >/dev/null
  times+=("$objective=$(elapsed "$t0" "$(now)")")
done

# 5. The truth on the held-out requests (the bench knows their intents): what showing each
#    model's most probable intent there really earns, to check the off-policy estimates against.
first_objective=${objectives%% *}
python3 - "$work" "runs/bandit_$first_objective" <<'PY'
import json, sys
work, run = sys.argv[1], sys.argv[2]
lines = set(json.load(open(f"{run}/tune.json"))["off_policy"]["held_out_lines"])
with open(f"{work}/stream.jsonl") as f, open(f"{work}/held_out.jsonl", "w") as out:
    for i, line in enumerate(f, 1):
        if i in lines:
            out.write(line)
PY
for run in "$base" $(for o in $objectives; do echo "runs/bandit_$o"; done); do
  "$bin" predict "$run" --manifest "$work/held_out.jsonl" --out "$run/held_out_predictions.jsonl" >/dev/null
done

python3 - "$base" "$t_train" "$t_predict" "${times[@]}" <<'PY'
import json, sys
base, t_train, t_predict, times = sys.argv[1], sys.argv[2], sys.argv[3], dict(a.split("=") for a in sys.argv[4:])
def figures(run):
    r = json.load(open(f"{run}/report.json"))["test"]
    preds = [json.loads(l) for l in open(f"{run}/held_out_predictions.jsonl")]
    held = sum(p["top"][0]["intent"] == p["label"] for p in preds) / len(preds)
    return r["oos"]["in_scope_accuracy"] * 100, r["oos"]["oos_recall"] * 100, r["accuracy"], held
def interval(e):
    return f"{e['value']:.4f} [{e['ci95'][0]:.4f}, {e['ci95'][1]:.4f}]"
def inside(e, x):
    return e["ci95"][0] <= x <= e["ci95"][1]
bi, bo, br, bh = figures(base)
print()
print("| policy | test in-scope | change | test oos recall | test reward | held-out reward | "
      "off-policy IPS [95%] | SNIPS [95%] | DR [95%] | IPS effective samples | tune + eval s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
first = None
ok_gain = ok_test = False
rows = []
for objective, secs in times.items():
    run = f"runs/bandit_{objective}"
    t = json.load(open(f"{run}/tune.json"))["off_policy"]
    if first is None:
        first = t
        print(f"| base | {bi:.2f} | | {bo:.2f} | {br:.4f} | {bh:.4f} | {interval(t['base']['ips'])} | "
              f"{interval(t['base']['snips'])} | {interval(t['base']['dr'])} | "
              f"{t['base']['ips']['effective_samples']:.0f} | |")
    i, o, rew, held = figures(run)
    s, p, d = t["tuned"]["snips"], t["tuned"]["ips"], t["tuned"]["dr"]
    print(f"| {objective} | {i:.2f} | {i - bi:+.2f} | {o:.2f} | {rew:.4f} | {held:.4f} | {interval(p)} | "
          f"{interval(s)} | {interval(d)} | {p['effective_samples']:.0f} | {secs} |")
    rows.append((objective, held, s, p, d, rew))
    if objective in ("ips", "snips"):
        ok_gain = ok_gain or (i - bi >= 2.0 and o >= bo)
        # The objective's own estimator (ips: IPS, snips: SNIPS) or the doubly robust one.
        own = p if objective == "ips" else s
        ok_test = ok_test or inside(own, rew) or inside(d, rew)
print(f"held-out log: {first['held_out']} records (whole distinct requests), logged reward "
      f"{first['logged_reward']:.4f}; test reward: the test split's accuracy with out-of-scope as "
      f"an intent; held-out reward: the same on the held-out requests, from their true intents")
yn = lambda b: "yes" if b else "no"
print("held-out reward inside the interval (IPS / SNIPS / DR): " +
      ", ".join(f"{o} {yn(inside(p, h))}/{yn(inside(s, h))}/{yn(inside(d, h))}" for o, h, s, p, d, _ in rows))
print("test reward inside the interval (IPS / SNIPS / DR): " +
      ", ".join(f"{o} {yn(inside(p, r))}/{yn(inside(s, r))}/{yn(inside(d, r))}" for o, _, s, p, d, r in rows))
print(f"wall time: train {t_train}, predict {t_predict} s")
print(f"targets: ips or snips +2 points of test in-scope accuracy with oos recall not lower: "
      f"{'met' if ok_gain else 'MISSED'}; measured test reward inside the ips / snips run's own or its DR interval: "
      f"{'met' if ok_test else 'MISSED'}")
sys.exit(0 if ok_gain and ok_test else 1)
PY
