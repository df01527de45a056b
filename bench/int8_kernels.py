#!/usr/bin/python3
"""Why `mmintent quantize` stores int8 weights but computes in float (docs/INT8.md): LibTorch's
own dynamic int8 kernels against float, side by side, on the CLINC150 model's shapes (embedding
6000x128, BiLSTM 256, max pooling, head 512->256->151), one request of 12 tokens at a time,
1 thread. Prints the median latency of each and its ratio to float.

    /usr/bin/python3 bench/int8_kernels.py [--runs 200] 2>/dev/null   # qnnpack warns once per call

Runs on Debian's python3-torch (the same LibTorch as the C++ build)."""
import argparse
import time

import torch


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(6000, 128)
        self.rnn = torch.nn.LSTM(128, 256, bidirectional=True, batch_first=True)
        self.h1 = torch.nn.Linear(512, 256)
        self.h2 = torch.nn.Linear(256, 151)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.h2(torch.relu(self.h1(out.amax(1))))


def median_ms(model, x, runs):
    with torch.no_grad():
        for _ in range(20):
            model(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Model().eval()
    x = torch.randint(1, 6000, (1, 12))
    print(f"torch {torch.__version__}, quantized engines {torch.backends.quantized.supported_engines}")
    base = median_ms(model, x, args.runs)
    print(f"float: {base:.3f} ms")
    for engine in ("qnnpack", "onednn", "fbgemm", "x86"):
        if engine not in torch.backends.quantized.supported_engines:
            continue
        torch.backends.quantized.engine = engine
        q = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8)
        ms = median_ms(q, x, args.runs)
        with torch.no_grad():
            diff = (model(x) - q(x)).abs().max().item()
        print(f"dynamic int8 ({engine}): {ms:.3f} ms, {ms / base:.2f}x float's latency; max |logit difference| {diff:.4f}")


if __name__ == "__main__":
    main()
