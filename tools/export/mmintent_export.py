#!/usr/bin/python3
"""ONNX and TorchScript for `mmintent export`.

mmintent writes a finished run's weights as safetensors, with the architecture (JSON) in the
header's metadata. This script, on Debian's python3-torch and nothing of mmintent's, rebuilds the
same network in PyTorch under the same parameter names, loads the weights strictly (every name and
shape must match) and writes the model as ONNX or TorchScript. Its inputs are what mmintent's data
loader gives the model (token ids and normalised pixels, see docs/EXPORT.md); its output is the
logits [B, K]. Audio's input is its log-mel features [B, frames, n_mels] as mmintent's loader
computes them (docs/SPEECH.md).

  mmintent_export.py export WEIGHTS.safetensors --format onnx|torchscript --out FILE
  mmintent_export.py run MODEL.pt INPUTS.json          (TorchScript; prints {"logits": [[...]]})

The recurrent layers are run one layer and direction at a time on the padded batch; the backward
direction reads each sequence reversed within its own length, so padding never reaches a real
position: the result equals mmintent's packed-sequence encoder's, and exports to ONNX's LSTM/GRU.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
          "F16": np.float16, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def fail(message):
    print("mmintent_export: error: " + message, file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """The tensors and metadata of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        fail(f"'{path}' is not a safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        fail(f"'{path}': the header claims {n} bytes, the file has {len(data) - 8}")
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return header.get("__metadata__", {}), tensors


class Recurrent(nn.Module):
    """mmintent's RecurrentPooling (src/models/recurrent.cpp): an LSTM/GRU stack over padded
    sequences and the pooling over each sequence's real steps; registered as `rnn`'s owner."""

    def __init__(self, a, input_size):
        super().__init__()
        self.a = a
        kind = nn.LSTM if a["type"] == "lstm" else nn.GRU
        self.rnn = kind(input_size, a["hidden_size"], num_layers=a["num_layers"],
                        bidirectional=a["bidirectional"], batch_first=True)

    def direction(self, x, layer, reverse):
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        params = [getattr(self.rnn, name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros((1, x.size(0), self.a["hidden_size"]))
        if self.a["type"] == "lstm":
            out = torch._VF.lstm(x, (h0, h0), params, True, 1, 0.0, False, False, True)[0]
        else:
            out = torch._VF.gru(x, h0, params, True, 1, 0.0, False, False, True)[0]
        return out

    def encode(self, x, lengths):
        """x [B,T,D], lengths [B] -> [B, hidden * directions]."""
        lengths = lengths.clamp(min=1).unsqueeze(1)            # [B,1], as mmintent's safe_lengths
        position = (torch.ones_like(x[:, :, 0], dtype=torch.long).cumsum(1) - 1)  # [B,T]: 0, 1, ..., T-1
        inside = position < lengths                            # [B,T]
        # Reversed within each length; an involution, and the identity on padding.
        flip = torch.where(inside, lengths - 1 - position, position)
        h = self.a["hidden_size"]
        for layer in range(self.a["num_layers"]):
            forward = self.direction(x, layer, False)
            if not self.a["bidirectional"]:
                x = forward
                continue
            d = x.size(2)
            # The backward direction reads each sequence reversed: its outputs come in that order.
            backward_reversed = self.direction(torch.gather(x, 1, flip.unsqueeze(2).expand(-1, -1, d)), layer, True)
            backward = torch.gather(backward_reversed, 1, flip.unsqueeze(2).expand(-1, -1, h))
            x = torch.cat([forward, backward], 2)
        if self.a["pooling"] == "last":
            at_end = (lengths - 1).unsqueeze(2).expand(-1, 1, h)   # [B,1,H]
            # Forward: the output at the last real step; backward: its output after reading the
            # whole sequence, the last step of the reversed sequence (the top layer's, as h_n).
            finals = [torch.gather(forward, 1, at_end).squeeze(1)]
            if self.a["bidirectional"]:
                finals.append(torch.gather(backward_reversed, 1, at_end).squeeze(1))
            return torch.cat(finals, 1) if len(finals) == 2 else finals[0]
        mask = inside.unsqueeze(2)
        if self.a["pooling"] == "mean":
            return (x * mask.to(x.dtype)).sum(1) / lengths.to(x.dtype)
        return x.masked_fill(~mask, float("-inf")).amax(1)


class TextEncoder(Recurrent):
    """mmintent's TextEncoder (src/models/text_encoder.cpp) in eval mode, under its names."""

    def __init__(self, a):
        super().__init__(a, a["embedding_dim"])
        self.embedding = nn.Embedding(a["vocab_size"], a["embedding_dim"], padding_idx=0)

    def forward(self, ids, lengths):
        return self.encode(self.embedding(ids), lengths)


def subsampled(lengths):
    """Frames left after the audio encoder's two stride-2 convolutions (0 stays 0)."""
    for _ in range(2):
        lengths = torch.where(lengths > 0, torch.div(lengths - 1, 2, rounding_mode="floor") + 1, lengths)
    return lengths


class AudioEncoder(Recurrent):
    """mmintent's AudioEncoder (src/models/audio_encoder.cpp) in eval mode, under its names."""

    def __init__(self, a):
        mels = int(subsampled(torch.tensor(a["n_mels"])))
        super().__init__(a, a["channels"] * mels)
        self.conv1 = nn.Conv2d(1, a["channels"], 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(a["channels"], a["channels"], 3, stride=2, padding=1)
        self.global_norm = bool(a.get("global_norm", False))
        if self.global_norm:  # data.audio.normalize: global, the training set's band statistics
            self.register_buffer("feature_mean", torch.zeros(a["n_mels"]))
            self.register_buffer("feature_std", torch.ones(a["n_mels"]))

    def forward(self, features, lengths):
        half = torch.where(lengths > 0, torch.div(lengths - 1, 2, rounding_mode="floor") + 1, lengths)
        if self.global_norm:  # normalised, then the padding set back to zero
            frames = torch.ones_like(features[:, :, 0], dtype=torch.long).cumsum(1) - 1
            real = (frames < lengths.unsqueeze(1)).to(features.dtype).unsqueeze(2)
            features = (features - self.feature_mean) / self.feature_std * real
        x = torch.relu(self.conv1(features.unsqueeze(1)))          # [B,C,T/2,M/2]
        steps = torch.ones_like(x[:, 0, :, 0], dtype=torch.long).cumsum(1) - 1
        x = x * (steps < half.unsqueeze(1)).to(x.dtype).unsqueeze(1).unsqueeze(3)
        x = torch.relu(self.conv2(x))                               # [B,C,T/4,M/4]
        x = x.permute(0, 2, 1, 3).flatten(2)
        return self.encode(x, subsampled(lengths))


class ImageEncoder(nn.Module):
    """mmintent's ImageEncoder (src/models/image_encoder.cpp) in eval mode, under its names."""

    def __init__(self, a):
        super().__init__()
        layers = []
        c_in, k = a["in_channels"], a["kernel_size"]
        for c_out in a["channels"]:
            for _ in range(a["convs_per_block"]):
                layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not a["batch_norm"]))
                if a["batch_norm"]:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU())
                c_in = c_out
            if a["pool"] == "max":
                layers.append(nn.MaxPool2d(2))
            elif a["pool"] == "avg":
                layers.append(nn.AvgPool2d(2))
            if a["dropout"] > 0:
                layers.append(nn.Dropout2d(a["dropout"]))
        self.blocks = nn.Sequential(*layers)
        self.projection = nn.Linear(c_in, a["out_dim"])

    def forward(self, images):
        return torch.relu(self.projection(self.blocks(images).mean((2, 3))))


class IntentClassifier(nn.Module):
    """mmintent's IntentClassifier (src/models/intent_classifier.cpp) in eval mode."""

    def __init__(self, a):
        super().__init__()
        self.modalities = a["modalities"]
        dims = []
        for name in self.modalities:
            if name == "text":
                self.text_encoder = TextEncoder(a["text"])
                t = a["text"]
                dims.append(t["hidden_size"] * (2 if t["bidirectional"] else 1))
            elif name == "image":
                self.image_encoder = ImageEncoder(a["image"])
                dims.append(a["image"]["out_dim"])
            elif name == "audio":
                self.audio_encoder = AudioEncoder(a["audio"])
                u = a["audio"]
                dims.append(u["hidden_size"] * (2 if u["bidirectional"] else 1))
            else:
                fail(f"modality '{name}' is a plug-in: this script rebuilds the text, image and audio "
                     "encoders only (safetensors export carries any model)")
        n, total = len(dims), sum(dims)
        self.gated = n > 1 and a["fusion"]["type"] == "gated"
        self.fusion_dim = a["fusion"]["dim"]
        if self.gated:
            for name, d in zip(self.modalities, dims):
                setattr(self, "gate_" + name, nn.Linear(d, self.fusion_dim))
            self.gate_z = nn.Linear(total + n, (1 if n == 2 else n) * self.fusion_dim)
            width = self.fusion_dim
        else:
            width = total + (n if n > 1 else 0)
        head, dropout = [], a["head"]["dropout"]
        for h in a["head"]["hidden"]:
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            head += [nn.Linear(width, h), nn.ReLU()]
            width = h
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(width, a["num_classes"]))
        self.head = nn.Sequential(*head)

    def input_names(self):
        names = []
        for m in self.modalities:
            names += {"text": ["text_ids", "text_lengths", "text_mask"], "image": ["image", "image_mask"],
                      "audio": ["audio", "audio_lengths", "audio_mask"]}[m]
        return names

    def forward(self, *inputs):
        features, masks, i = [], [], 0
        for m in self.modalities:
            if m == "text":
                f, mask = self.text_encoder(inputs[i], inputs[i + 1]), inputs[i + 2]
                i += 3
            elif m == "audio":
                f, mask = self.audio_encoder(inputs[i], inputs[i + 1]), inputs[i + 2]
                i += 3
            else:
                f, mask = self.image_encoder(inputs[i]), inputs[i + 1]
                i += 2
            mask = mask.to(f.dtype).unsqueeze(1)
            features.append(f * mask)
            masks.append(mask)
        n = len(features)
        if n == 1:
            fused = features[0]
        elif not self.gated:
            fused = torch.cat(features + masks, 1)
        else:
            z = self.gate_z(torch.cat(features + masks, 1))
            hs = [torch.tanh(getattr(self, "gate_" + m)(f)) for m, f in zip(self.modalities, features)]
            if n == 2:
                z = torch.sigmoid(z) * masks[0]
                z = z + (1 - masks[1]) * (1 - z)
                fused = z * hs[0] + (1 - z) * hs[1]
            else:
                z = z.view(z.size(0), n, self.fusion_dim)
                present = torch.stack(masks, 1)
                z = torch.softmax(z.masked_fill(present == 0, -1e4), 1)
                fused = sum(z.select(1, k) * hs[k] for k in range(n))
        return self.head(fused)


def example_inputs(model, a, batch=2, steps=5):
    """Inputs of the right types for tracing (their values do not matter)."""
    out = []
    for m in model.modalities:
        if m == "text":
            out += [torch.ones(batch, steps, dtype=torch.long), torch.full((batch,), steps, dtype=torch.long),
                    torch.ones(batch)]
        elif m == "audio":
            frames = 4 * steps
            out += [torch.zeros(batch, frames, a["audio"]["n_mels"]), torch.full((batch,), frames, dtype=torch.long),
                    torch.ones(batch)]
        else:
            i = a["image"]
            out += [torch.zeros(batch, i["in_channels"], i["height"], i["width"]), torch.ones(batch)]
    return tuple(out)


def export(args):
    metadata, tensors = read_safetensors(args.weights)
    if "architecture" not in metadata:
        fail(f"'{args.weights}' has no architecture in its metadata: write it with `mmintent export`")
    a = json.loads(metadata["architecture"])
    model = IntentClassifier(a)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        fail(f"the weights of '{args.weights}' do not fit the architecture it names: {e}")
    model.eval()
    example = example_inputs(model, a)
    names = model.input_names()
    tmp = args.out + ".tmp"
    try:
        with torch.no_grad():
            if args.format == "torchscript":
                traced = torch.jit.trace(model, example, check_trace=False)
                traced.save(tmp)
            else:
                axes = {"logits": {0: "batch"}}
                for name in names:
                    axes[name] = {"text_ids": {0: "batch", 1: "steps"}, "audio": {0: "batch", 1: "frames"},
                                  "image": {0: "batch", 2: "height", 3: "width"}}.get(name, {0: "batch"})
                torch.onnx.export(model, example, tmp, input_names=names, output_names=["logits"],
                                  dynamic_axes=axes, opset_version=14)
                try:
                    import onnx
                except ImportError:
                    onnx = None
                    print("mmintent_export: python3-onnx is not installed: the graph is not checked", file=sys.stderr)
                if onnx is not None:
                    onnx.checker.check_model(onnx.load(tmp), full_check=True)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, args.out)
    print(json.dumps({"inputs": names, "outputs": ["logits"]}))


def run(args):
    """Runs a TorchScript export on inputs written as JSON: {name: {dtype, shape, data}}."""
    model = torch.jit.load(args.model)
    with open(args.inputs) as f:
        spec = json.load(f)
    types = {"int64": torch.long, "float32": torch.float32}
    inputs = [torch.tensor(spec[n]["data"], dtype=types[spec[n]["dtype"]]).reshape(spec[n]["shape"])
              for n in spec["order"]]
    with torch.no_grad():
        logits = model(*inputs)
    print(json.dumps({"logits": logits.tolist()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="safetensors from `mmintent export` -> ONNX or TorchScript")
    e.add_argument("weights")
    e.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    e.add_argument("--out", required=True)
    r = sub.add_parser("run", help="run a TorchScript export on JSON inputs")
    r.add_argument("model")
    r.add_argument("inputs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    export(args) if args.command == "export" else run(args)


if __name__ == "__main__":
    main()
