#!/usr/bin/python3
"""The Python reference for mmintent's training benchmark (bench/compare_training.sh).

The same model as src/models/*.cpp in Debian's PyTorch (python3-torch: the same LibTorch 1.13
underneath), trained the same way as src/training/trainer.cpp, on the same files:

- reads an *effective* config, every key explicit (`mmintent config CONFIG KEY=VALUE ...`
  prints it), so both sides use exactly the same settings;
- reads the same JSONL manifests and images (OpenCV's Python binding, python3-opencv), decodes
  and resizes every image once into a cache as mmintent does (data.cache_images), or per sample
  when the cache is off;
- tokenises once with the same sentencepiece model file (python3-sentencepiece; ids + 1, 0 is
  padding, at most data.text.max_length tokens), given with --tokenizer;
- collates batches (padding, masks, crop/flip/brightness/contrast augmentation) in
  data.loader.num_workers background threads with data.loader.prefetch batches ahead per
  worker (0: in the training thread), LibTorch intra-op threads = runtime.threads;
- trains with AdamW, the warm-up + cosine/step/constant schedule stepped per optimizer step,
  gradient clipping, label smoothing, per-sample losses summed and divided by the batch size,
  for --epochs passes over the training split (no validation, no checkpoints: what the
  benchmark asks of mmintent too).

Prints one JSON object: samples, steps, seconds of the training loop, samples/s, parameter
count, the process's peak resident memory (ru_maxrss) and the set-up time. Only the training
loop is timed for samples/s; the process as a whole is timed and measured by the caller.

  /usr/bin/python3 bench/reference/train_reference.py EFFECTIVE.yaml --tokenizer tokenizer.model \
      [--epochs N] [--max-steps N] [--json OUT]
"""

import argparse
import json
import math
import os
import queue
import resource
import sys
import threading
import time

T_START = time.monotonic()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402


# ------------------------------------------------------------------------------------ data
def resolve(path, base):
    return path if not path or os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def read_manifest(path, fields, use_text, use_image):
    """Records (text, image path, label) of a JSONL manifest; image paths resolved against the
    manifest's folder, as mmintent's read_manifest does."""
    base = os.path.dirname(os.path.abspath(path))
    texts, images, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            text = r.get(fields["text"]) if use_text and fields["text"] else None
            image = r.get(fields["image"]) if use_image and fields["image"] else None
            texts.append(text.strip() and text if isinstance(text, str) else "")
            images.append(resolve(image, base) if isinstance(image, str) and image else "")
            labels.append(str(r[fields["label"]]))
    return texts, images, labels


def decode_image(path, width, height, channels):
    """HWC uint8, resized (INTER_AREA when shrinking, else INTER_LINEAR), RGB for colour."""
    flags = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    img = cv2.imread(path, flags)
    if img is None:
        raise RuntimeError(f"{path}: cannot decode image")
    if channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[1] != width or img.shape[0] != height:
        shrinking = width <= img.shape[1] and height <= img.shape[0]
        img = cv2.resize(img, (width, height),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return img.reshape(height, width, channels)


class Dataset:
    """Tokenised once; images decoded once into one contiguous uint8 array when cached."""

    def __init__(self, manifest, cfg, sp, label_index, use_text, use_image):
        d = cfg["data"]
        texts, images, labels = read_manifest(manifest, d["fields"], use_text, use_image)
        self.n = len(labels)
        self.labels = np.array([label_index[x] for x in labels], dtype=np.int64)
        self.use_text, self.use_image = use_text, use_image
        self.img = d["image"]
        self.has_image = np.array([bool(p) for p in images], dtype=bool)
        self.paths = images
        if use_text:
            max_len = int(d["text"]["max_length"])
            self.ids = [[i + 1 for i in sp.encode(t)][:max_len] if t else [] for t in texts]
        self.cache = None
        if use_image and d.get("cache_images", True):
            H, W, C = int(self.img["height"]), int(self.img["width"]), int(self.img["channels"])
            self.cache = np.zeros((self.n, H, W, C), dtype=np.uint8)
            for i, p in enumerate(images):
                if p:
                    self.cache[i] = decode_image(p, W, H, C)


class Collator:
    """Batches as mmintent's MultimodalDataset::collate makes them (augmented for training)."""

    def __init__(self, ds, augment, seed):
        self.ds = ds
        self.augment = None
        if augment and augment.get("enabled"):
            self.augment = {k: float(v) for k, v in augment.items() if k != "enabled"}
        img = ds.img
        self.H, self.W, self.C = int(img["height"]), int(img["width"]), int(img["channels"])
        mean, std = [float(v) for v in img["mean"]], [float(v) for v in img["std"]]
        self.mean = np.array(mean * self.C if len(mean) == 1 else mean, np.float32).reshape(1, -1, 1, 1)
        self.inv_std = 1.0 / np.array(std * self.C if len(std) == 1 else std, np.float32).reshape(1, -1, 1, 1)
        self.seed = seed

    def images(self, idx, rng):
        ds, H, W, C = self.ds, self.H, self.W, self.C
        if ds.cache is not None:
            u8 = ds.cache[idx]
        else:
            u8 = np.zeros((len(idx), H, W, C), np.uint8)
            for k, i in enumerate(idx):
                if ds.has_image[i]:
                    u8[k] = decode_image(ds.paths[i], W, H, C)
        x = u8.transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / 255.0)  # [B,C,H,W] in [0,1]
        a = self.augment
        if a is not None:
            B = len(idx)
            pad = int(a.get("crop_padding", 0))
            if pad > 0:
                padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
                oy = rng.integers(0, 2 * pad + 1, B)
                ox = rng.integers(0, 2 * pad + 1, B)
                rows = (oy[:, None] + np.arange(H)[None, :])[:, None, :, None]
                cols = (ox[:, None] + np.arange(W)[None, :])[:, None, None, :]
                x = padded[np.arange(B)[:, None, None, None], np.arange(C)[None, :, None, None], rows, cols]
            if a.get("hflip", 0) > 0:
                flip = rng.random(B) < a["hflip"]
                x[flip] = x[flip][..., ::-1]
            if a.get("brightness", 0) > 0:
                x = np.clip(x + (rng.uniform(-1, 1, B) * a["brightness"]).astype(np.float32)[:, None, None, None], 0, 1)
            if a.get("contrast", 0) > 0:
                m = x.mean(axis=(1, 2, 3), keepdims=True)
                c = (1 + rng.uniform(-1, 1, B) * a["contrast"]).astype(np.float32)[:, None, None, None]
                x = np.clip((x - m) * c + m, 0, 1)
        x = (x - self.mean) * self.inv_std
        x[~self.ds.has_image[idx]] = 0
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def __call__(self, idx, epoch, b):
        ds = self.ds
        rng = np.random.default_rng([self.seed, epoch, b])
        out = {"labels": torch.from_numpy(ds.labels[idx])}
        if ds.use_text:
            seqs = [ds.ids[i] for i in idx]
            T = max(1, max(len(s) for s in seqs))
            tok = np.zeros((len(idx), T), np.int64)
            for k, s in enumerate(seqs):
                tok[k, :len(s)] = s
            lengths = np.array([len(s) for s in seqs], np.int64)
            out["token_ids"] = torch.from_numpy(tok)
            out["lengths"] = torch.from_numpy(lengths)
            out["text_mask"] = torch.from_numpy((lengths > 0).astype(np.float32))
        if ds.use_image:
            out["images"] = self.images(idx, rng)
            out["image_mask"] = torch.from_numpy(ds.has_image[idx].astype(np.float32))
        return out


def batches(ds, collate, batch_size, shuffle, drop_last, workers, prefetch, epoch, seed):
    """Yields the batches of one pass; `workers` threads collate up to prefetch*workers ahead."""
    order = np.random.default_rng([seed, epoch]).permutation(ds.n) if shuffle else np.arange(ds.n)
    count = ds.n // batch_size if drop_last else (ds.n + batch_size - 1) // batch_size
    spans = [order[b * batch_size:(b + 1) * batch_size] for b in range(count)]
    if workers <= 0:
        for b, idx in enumerate(spans):
            yield collate(idx, epoch, b)
        return
    window = threading.Semaphore(prefetch * workers)
    ready, lock, cond = {}, threading.Lock(), threading.Condition(threading.Lock())
    next_b = iter(range(count))

    def work():
        while True:
            window.acquire()
            with lock:
                b = next(next_b, None)
            if b is None:
                return
            batch = collate(spans[b], epoch, b)
            with cond:
                ready[b] = batch
                cond.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for b in range(count):
        with cond:
            cond.wait_for(lambda: b in ready)
            batch = ready.pop(b)
        window.release()
        yield batch
    for _ in threads:
        window.release()
    for t in threads:
        t.join()


# ----------------------------------------------------------------------------------- model
class TextEncoder(nn.Module):
    """src/models/text_encoder.cpp: embedding, packed (bi)LSTM/GRU, padding-aware pooling."""

    def __init__(self, vocab, t):
        super().__init__()
        self.pooling, self.layers = t["pooling"], int(t["num_layers"])
        self.bidirectional = bool(t["bidirectional"])
        self.embedding = nn.Embedding(vocab, int(t["embedding_dim"]), padding_idx=0)
        self.dropout = nn.Dropout(float(t["dropout"]))
        rnn = nn.LSTM if t["type"] == "lstm" else nn.GRU
        self.rnn = rnn(int(t["embedding_dim"]), int(t["hidden_size"]), num_layers=self.layers,
                       bidirectional=self.bidirectional, batch_first=True,
                       dropout=float(t["dropout"]) if self.layers > 1 else 0.0)
        self.output_dim = int(t["hidden_size"]) * (2 if self.bidirectional else 1)

    def forward(self, token_ids, lengths):
        safe = lengths.clamp_min(1)
        x = self.dropout(self.embedding(token_ids))
        packed = pack_padded_sequence(x, safe, batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        if self.pooling == "last":
            h_n = h[0] if isinstance(h, tuple) else h
            dirs = 2 if self.bidirectional else 1
            last = h_n.view(self.layers, dirs, h_n.size(1), h_n.size(2))[-1]
            return torch.cat([last[0], last[1]], 1) if dirs == 2 else last[0]
        seq, _ = pad_packed_sequence(out, batch_first=True)
        mask = torch.arange(seq.size(1)).unsqueeze(0) < safe.unsqueeze(1)
        if self.pooling == "mean":
            m = mask.unsqueeze(2).to(seq.dtype)
            return (seq * m).sum(1) / m.sum(1)
        return seq.masked_fill(~mask.unsqueeze(2), -math.inf).amax(1)


CHANNELS_LAST = False  # --channels-last


class ImageEncoder(nn.Module):
    """src/models/image_encoder.cpp: conv blocks, global average pooling, projection."""

    def __init__(self, in_channels, e):
        super().__init__()
        layers, c_in, k = [], in_channels, int(e["kernel_size"])
        self.p = float(e["dropout"])
        for out in e["channels"]:
            for _ in range(int(e["convs_per_block"])):
                layers.append(nn.Conv2d(c_in, out, k, padding=k // 2, bias=not e["batch_norm"]))
                if e["batch_norm"]:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
                c_in = out
            if e["pool"] == "max":
                layers.append(nn.MaxPool2d(2))
            elif e["pool"] == "avg":
                layers.append(nn.AvgPool2d(2))
            if self.p > 0:
                layers.append(nn.Dropout2d(self.p))
        self.blocks = nn.Sequential(*layers)
        self.projection = nn.Linear(c_in, int(e["out_dim"]))

    def forward(self, images):
        if CHANNELS_LAST:
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.blocks(images).mean((2, 3))
        if self.p > 0:
            x = F.dropout(x, self.p, self.training)
        return torch.relu(self.projection(x))


class IntentClassifier(nn.Module):
    """src/models/intent_classifier.cpp: encoders, concat or gated fusion, softmax head."""

    def __init__(self, cfg, vocab, num_classes):
        super().__init__()
        m = cfg["model"]
        self.use_text, self.use_image = "text" in m["modalities"], "image" in m["modalities"]
        both = self.use_text and self.use_image
        text_dim = image_dim = 0
        if self.use_text:
            self.text_encoder = TextEncoder(vocab, m["text_encoder"])
            text_dim = self.text_encoder.output_dim
        if self.use_image:
            self.image_encoder = ImageEncoder(int(cfg["data"]["image"]["channels"]), m["image_encoder"])
            image_dim = int(m["image_encoder"]["out_dim"])
        self.gated = both and m["fusion"]["type"] == "gated"
        if self.gated:
            d = int(m["fusion"]["dim"])
            self.gate_text = nn.Linear(text_dim, d)
            self.gate_image = nn.Linear(image_dim, d)
            self.gate_z = nn.Linear(text_dim + image_dim + 2, d)
            fused = d
        else:
            fused = text_dim + image_dim + (2 if both else 0)
        head, p, c_in = [], float(m["head"]["dropout"]), fused
        for h in m["head"]["hidden"]:
            if p > 0:
                head.append(nn.Dropout(p))
            head += [nn.Linear(c_in, int(h)), nn.ReLU()]
            c_in = int(h)
        if p > 0:
            head.append(nn.Dropout(p))
        head.append(nn.Linear(c_in, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, b):
        if self.use_text:
            tm = b["text_mask"].unsqueeze(1)
            text = self.text_encoder(b["token_ids"], b["lengths"]) * tm
        if self.use_image:
            im = b["image_mask"].unsqueeze(1)
            image = self.image_encoder(b["images"]) * im
        if not self.use_image:
            return self.head(text)
        if not self.use_text:
            return self.head(image)
        if self.gated:
            ht, hi = torch.tanh(self.gate_text(text)), torch.tanh(self.gate_image(image))
            z = torch.sigmoid(self.gate_z(torch.cat([text, image, tm, im], 1))) * tm
            z = z + (1 - im) * (1 - z)
            return self.head(z * ht + (1 - z) * hi)
        return self.head(torch.cat([text, image, tm, im], 1))


# -------------------------------------------------------------------------------- training
def lr_at(step, base, s, total):
    """src/training/optimization.cpp LrSchedule::lr_at."""
    warm = int(s["warmup_steps"])
    if step < warm:
        return base * (step + 1) / warm
    k = step - warm
    if s["type"] == "cosine":
        span = max(1, total - warm - 1)
        progress = min(1.0, k / span)
        lo = float(s["min_lr"])
        return lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * progress))
    if s["type"] == "step":
        return base * float(s["gamma"]) ** (k // int(s["step_size"]))
    return base


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="effective config (mmintent config CONFIG ... > effective.yaml)")
    ap.add_argument("--tokenizer", help="sentencepiece model (the run's tokenizer.model)")
    ap.add_argument("--epochs", type=int, help="passes over the training split (default train.epochs)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: none)")
    ap.add_argument("--json", help="also write the result object to this file")
    ap.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                    help="convolutions in channels-last (NHWC) memory order (default: the config's "
                         "model.image_encoder.channels_last, as mmintent)")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="convolutions in PyTorch's default NCHW order, whatever the config says")
    ap.add_argument("--bf16", action="store_true",
                    help="train under CPU bf16 autocast (to measure what mixed precision would give)")
    ap.add_argument("--eval", metavar="MANIFEST",
                    help="after training, report the accuracy on this manifest (eval mode, no augmentation)")
    ap.add_argument("--profile", action="store_true",
                    help="run under torch.autograd.profiler and print the operators' times to stderr")
    args = ap.parse_args()

    with open(args.config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    base = os.path.dirname(os.path.abspath(args.config))
    d, t = cfg["data"], cfg["train"]
    threads = int(cfg["runtime"]["threads"]) or os.cpu_count()
    torch.set_num_threads(threads)
    cv2.setNumThreads(0)
    seed = int(cfg["runtime"]["seed"])
    torch.manual_seed(seed)
    use_text, use_image = "text" in cfg["model"]["modalities"], "image" in cfg["model"]["modalities"]

    sp = None
    if use_text:
        import sentencepiece as spm
        tok = args.tokenizer or resolve(d["text"].get("tokenizer") or "", base)
        if not tok:
            sys.exit("train_reference: the config uses text: give --tokenizer or data.text.tokenizer "
                     "(the sentencepiece model mmintent trained: a run's tokenizer.model)")
        sp = spm.SentencePieceProcessor(model_file=tok)
    train_path = resolve(d["train"], base)
    if d.get("labels"):
        with open(resolve(d["labels"], base), encoding="utf-8") as f:
            text = f.read()
        names = json.loads(text) if text.lstrip().startswith("[") else [x.strip() for x in text.splitlines() if x.strip()]
    else:
        _, _, labels = read_manifest(train_path, d["fields"], False, False)
        names = sorted(set(labels))
    label_index = {n: i for i, n in enumerate(names)}
    ds = Dataset(train_path, cfg, sp, label_index, use_text, use_image)
    vocab = sp.get_piece_size() + 1 if sp else 2
    model = IntentClassifier(cfg, vocab, len(names))
    params = sum(p.numel() for p in model.parameters())
    if args.channels_last is None:
        args.channels_last = bool(cfg["model"].get("image_encoder", {}).get("channels_last", False))
    if args.channels_last:
        global CHANNELS_LAST
        CHANNELS_LAST = True
        model = model.to(memory_format=torch.channels_last)

    o = t["optimizer"]
    if o["type"] != "adamw":
        sys.exit("train_reference: only train.optimizer.type adamw is implemented")
    opt = torch.optim.AdamW(model.parameters(), lr=float(o["lr"]), betas=(float(o["beta1"]), float(o["beta2"])),
                            eps=float(o["eps"]), weight_decay=float(o["weight_decay"]))
    L = d["loader"]
    bs = int(L["batch_size"])
    collate = Collator(ds, d.get("augment"), seed)
    epochs = args.epochs or int(t["epochs"])
    per_epoch = ds.n // bs if L["drop_last"] else (ds.n + bs - 1) // bs
    total_steps = per_epoch * epochs
    clip = float(t["grad_clip"]) or math.inf
    smoothing = float(t["loss"]["label_smoothing"])
    setup_s = time.monotonic() - T_START

    profiler = torch.autograd.profiler.profile() if args.profile else None
    if profiler:
        profiler.__enter__()
    model.train()
    steps = samples = 0
    loss_sum = correct = 0.0
    train_s = 0.0
    stop = False
    wait_s = 0.0
    for epoch in range(epochs):
        t0 = time.monotonic()
        it = batches(ds, collate, bs, L["shuffle"], L["drop_last"], int(L["num_workers"]),
                     int(L["prefetch"]), epoch, seed)
        while True:
            w0 = time.monotonic()
            b = next(it, None)
            wait_s += time.monotonic() - w0
            if b is None:
                break
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(b).float()
            per_sample = F.cross_entropy(logits, b["labels"], reduction="none", label_smoothing=smoothing)
            n = b["labels"].size(0)
            loss = per_sample.sum() / n
            batch_loss = per_sample.sum().item()
            if not math.isfinite(batch_loss):
                sys.exit(f"train_reference: loss is {batch_loss} at step {steps + 1}")
            loss.backward()
            loss_sum += batch_loss
            correct += logits.argmax(1).eq(b["labels"]).sum().item()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for g in opt.param_groups:
                g["lr"] = lr_at(steps, float(o["lr"]), t["scheduler"], total_steps)
            opt.step()
            steps += 1
            samples += n
            if args.max_steps and steps >= args.max_steps:
                stop = True
                break
        train_s += time.monotonic() - t0
        if stop:
            break

    if profiler:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)

    eval_accuracy = None
    if args.eval:
        eds = Dataset(resolve(args.eval, os.getcwd()), cfg, sp, label_index, use_text, use_image)
        ecollate = Collator(eds, None, seed)
        model.eval()
        correct_eval = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            for b in batches(eds, ecollate, int(L["eval_batch_size"]), False, False, 0, 1, 0, seed):
                correct_eval += model(b).float().argmax(1).eq(b["labels"]).sum().item()
        eval_accuracy = correct_eval / max(1, eds.n)

    result = {
        "impl": "reference",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "workers": int(L["num_workers"]),
        "batch_size": bs,
        "params": params,
        "samples": samples,
        "steps": steps,
        "train_seconds": round(train_s, 4),
        "samples_per_s": round(samples / train_s, 2) if train_s > 0 else 0,
        "train_loss": round(loss_sum / max(1, samples), 5),
        "train_accuracy": round(correct / max(1, samples), 5),
        "bf16": args.bf16,
        "channels_last": bool(args.channels_last),
        "eval_accuracy": None if eval_accuracy is None else round(eval_accuracy, 5),
        "loader_wait_fraction": round(wait_s / train_s, 4) if train_s > 0 else 0,
        "setup_seconds": round(setup_s, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    line = json.dumps(result)
    print(line)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(line + "\n")
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
