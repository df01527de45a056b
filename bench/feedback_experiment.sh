#!/usr/bin/env bash
# Learning from feedback, one command: train on CLINC150 "small", stream unseen utterances of
# the "full" training split through the model, let a simulated person accept every right
# prediction and correct every wrong one, tune the model on that feedback log, and compare.
#   bench/feedback_experiment.sh [KEY=VALUE overrides for `mmintent tune`...]
# Environment: MMINTENT_BIN (default build/bin/mmintent), MMINTENT_SHARED_DATA (default
# ../shared/data), STREAM_SIZE (3000), STREAM_SEED (7), REUSE_BASE=1 (keep an existing
# runs/feedback_base instead of training it again: for trying tune settings), BOUND=1 (also
# train from scratch on "small" plus the streamed utterances with their true labels, into
# runs/feedback_union: what the same data gives without the feedback loop, for comparison),
# TUNED (the tuned run, default runs/feedback_tuned).
# Writes data/generated/clinc150{,_small}/, data/generated/feedback_experiment/ and
# runs/feedback_{base,tuned}/ (all git-ignored). Exits 1 when the tuned model misses the
# targets: test in-scope accuracy +2 points or more, small-train accuracy down 0.5 at most.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${MMINTENT_BIN:-$root/build/bin/mmintent}"
shared="${MMINTENT_SHARED_DATA:-$root/../shared/data}"
stream_size="${STREAM_SIZE:-3000}"
stream_seed="${STREAM_SEED:-7}"
work=data/generated/feedback_experiment
base=runs/feedback_base
tuned="${TUNED:-runs/feedback_tuned}"
mkdir -p "$work"
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.0f}')"; }

# 1. Both variants; check how "small" relates to "full" and draw the stream.
if [ ! -f data/generated/clinc150/train.jsonl ]; then  # bench/real_data.sh makes the same files
  "$bin" import clinc150 "$shared/clinc150" data/generated/clinc150 >/dev/null
fi
"$bin" import clinc150 --variant small "$shared/clinc150" data/generated/clinc150_small >/dev/null
python3 - "$work" "$stream_size" "$stream_seed" <<'PY'
import collections, json, random, sys
work, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(variant, split):
    with open(f"data/generated/{variant}/{split}.jsonl") as f:
        return [json.loads(l) for l in f if l.strip()]
def bag(records):
    return collections.Counter((r["text"], r["label"]) for r in records)
full = {s: load("clinc150", s) for s in ("train", "val", "test")}
small = {s: load("clinc150_small", s) for s in ("train", "val", "test")}
rest = bag(full["train"]) - bag(small["train"])
subset = not (bag(small["train"]) - bag(full["train"]))
print(f"small train ({len(small['train'])}) is {'a subset' if subset else 'NOT a subset'} of full "
      f"train ({len(full['train'])}); val identical: {bag(small['val']) == bag(full['val'])}; "
      f"test identical: {bag(small['test']) == bag(full['test'])}; full train minus small train: "
      f"{sum(rest.values())} utterances")
if not subset or bag(small["val"]) != bag(full["val"]) or bag(small["test"]) != bag(full["test"]):
    sys.exit("the small variant is not nested in the full one: the experiment's premise fails")
pool = sorted(rest.elements())
stream = random.Random(seed).sample(pool, n)
with open(f"{work}/stream.jsonl", "w") as f:
    for text, label in stream:
        f.write(json.dumps({"text": text, "label": label}) + "\n")
with open(f"{work}/small_train.jsonl", "w") as f:
    for r in small["train"]:
        f.write(json.dumps({"text": r["text"], "label": r["label"]}) + "\n")
print(f"stream: {n} utterances drawn with seed {seed} ({len(set(l for _, l in stream))} intents)")
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

# 3. Stream the utterances through it; the simulated person reacts.
t0=$(now)
"$bin" predict "$base" --manifest "$work/stream.jsonl" --out "$work/predictions.jsonl" --top-k 3
t_predict=$(elapsed "$t0" "$(now)")
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
stream = [json.loads(l) for l in open(f"{work}/stream.jsonl")]
preds = [json.loads(l) for l in open(f"{work}/predictions.jsonl")]
assert len(stream) == len(preds), "one prediction per streamed utterance"
counts = {"accepted": 0, "corrected": 0}
with open(f"{work}/feedback.jsonl", "w") as f:
    for s, p in zip(stream, preds):
        assert p["text"] == s["text"]
        predicted = p["top"][0]["intent"]
        record = {"text": s["text"], "predicted": predicted}
        if predicted == s["label"]:
            record["reaction"] = "accepted"
        else:
            record.update(reaction="corrected", corrected_to=s["label"])
        counts[record["reaction"]] += 1
        f.write(json.dumps(record) + "\n")
print(f"simulated person: {counts['accepted']} accepted, {counts['corrected']} corrected "
      f"(stream accuracy {counts['accepted'] / len(stream):.4f})")
PY

# 4. Learn from the feedback into a new run.
t0=$(now)
"$bin" tune "$base" --feedback "$work/feedback.jsonl" --out "$tuned" --overwrite train.progress=lines "$@"
t_tune=$(elapsed "$t0" "$(now)")

# 4b. The bound: the same labelled data, trained from scratch.
if [ "${BOUND:-0}" = 1 ]; then
  python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
with open(f"{work}/union_train.jsonl", "w") as out:
    out.writelines(open(f"{work}/small_train.jsonl"))
    for line in open(f"{work}/feedback.jsonl"):
        f = json.loads(line)
        label = f["corrected_to"] if f["reaction"] == "corrected" else f["predicted"]
        out.write(json.dumps({"text": f["text"], "label": label}) + "\n")
PY
  "$bin" train configs/clinc150_small.yaml output.dir=runs/feedback_union output.overwrite=true \
    "data.train=$work/union_train.jsonl" train.progress=none >/dev/null
fi

# 5. The original training distribution, before and after.
"$bin" eval "$base" --split "$work/small_train.jsonl" >/dev/null
"$bin" eval "$tuned" --split "$work/small_train.jsonl" >/dev/null

python3 - "$base" "$tuned" "$t_train" "$t_predict" "$t_tune" <<'PY'
import json, sys
base, tuned, t_train, t_predict, t_tune = sys.argv[1:6]
b, t = json.load(open(f"{base}/report.json")), json.load(open(f"{tuned}/report.json"))
tj = json.load(open(f"{tuned}/tune.json"))
def row(name, key, split, fmt=lambda r: r):
    before, after = fmt(b[split])[key] * 100, fmt(t[split])[key] * 100
    return name, before, after, after - before
oos = lambda r: r["oos"]
def in_scope_errors(run):
    """Wrong in-scope test predictions: (predicted out-of-scope, predicted another intent)."""
    to_oos = other = 0
    for line in open(f"{run}/misclassified_test.jsonl"):
        m = json.loads(line)
        if m["gold"] == "oos":
            continue
        if m["top"][0]["label"] == "oos":
            to_oos += 1
        else:
            other += 1
    return to_oos, other
rows = [row("test in-scope accuracy", "in_scope_accuracy", "test", oos),
        row("test oos recall", "oos_recall", "test", oos),
        row("val in-scope accuracy", "in_scope_accuracy", "val", oos),
        row("small-train accuracy", "accuracy", "small_train"),
        row("small-train in-scope accuracy", "in_scope_accuracy", "small_train", oos)]
print()
print(f"feedback: {tj['accepted']} accepted, {tj['corrected']} corrected, {tj['rejected']} rejected; "
      f"{tj['replay_per_epoch']} training samples replayed per epoch")
print(f"| {'figure':<30} | {'before':>7} | {'after':>7} | {'change':>7} |")
print(f"|{'-' * 32}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
for name, before, after, d in rows:
    print(f"| {name:<30} | {before:7.2f} | {after:7.2f} | {d:+7.2f} |")
(bo, bi), (ao, ai) = in_scope_errors(base), in_scope_errors(tuned)
print(f"| {'test in-scope errors: as oos':<30} | {bo:7d} | {ao:7d} | {ao - bo:+7d} |")
print(f"| {'test in-scope errors: intent':<30} | {bi:7d} | {ai:7d} | {ai - bi:+7d} |")
import os
if os.path.exists("runs/feedback_union/report.json") and os.environ.get("BOUND") == "1":
    u = json.load(open("runs/feedback_union/report.json"))
    print(f"from scratch on small + the stream with true labels (runs/feedback_union): test in-scope "
          f"accuracy {u['test']['oos']['in_scope_accuracy'] * 100:.2f} "
          f"({(u['test']['oos']['in_scope_accuracy'] - b['test']['oos']['in_scope_accuracy']) * 100:+.2f}), "
          f"test oos recall {u['test']['oos']['oos_recall'] * 100:.2f}")
print(f"wall time: train {t_train}, predict {t_predict} s ({tj['feedback_samples']} utterances), tune + eval {t_tune} s")
gain, drop = rows[0][3], -rows[3][3]
ok = gain >= 2.0 and drop <= 0.5
print(f"targets: test in-scope accuracy +{gain:.2f} points (>= 2: {'met' if gain >= 2 else 'MISSED'}), "
      f"small-train accuracy change {-drop:+.2f} points (drop <= 0.5: {'met' if drop <= 0.5 else 'MISSED'})")
sys.exit(0 if ok else 1)
PY
