#!/usr/bin/env python3
"""PyTorch's CPU convolutions (oneDNN, NCHW) on the shapes of bench_conv.c,
pass by pass: the oneDNN side of the direct-kernel choice (BENCHMARKS.md).
Times are the minimum over repeats, as in bench_conv; with "cpu" as the
fourth argument, process CPU time divided by the threads (bench_conv's "cpu").

    bench/bench_conv_torch.py [batch] [repeats] [threads] [wall|cpu]
"""
import sys
import time

import torch

CASES = [(1, 32, 28), (32, 32, 28), (32, 64, 14), (64, 64, 14), (64, 64, 7)]


def best_ms(fn, reps, clock, threads):
    fn()
    best = 1e30
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, (clock() - t0) / threads)
    return best * 1e3


def main():
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    cpu = len(sys.argv) > 4 and sys.argv[4] == "cpu"
    clock, per = (time.process_time, threads) if cpu else (time.perf_counter, 1)
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, mkldnn {torch.backends.mkldnn.is_available()}, {threads} threads")
    print(f"{'shape':14s} {'pass':16s} {'torch ms':>10s} {'GFLOPS':>8s}")
    total = 0.0
    with torch.no_grad():
        for cin, cout, hw in CASES:
            x = torch.randn(batch, cin, hw, hw)
            w = torch.randn(cout, cin, 3, 3)
            dy = torch.randn(batch, cout, hw, hw)
            conv_bwd = torch.ops.aten.convolution_backward
            passes = {
                "forward": lambda: torch.nn.functional.conv2d(x, w, padding=1),
                "backward_data": lambda: conv_bwd(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                  [True, False, False]),
                "backward_filter": lambda: conv_bwd(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                    [False, True, False]),
            }
            flops = 2.0 * batch * hw * hw * cin * cout * 9
            for name, fn in passes.items():
                ms = best_ms(fn, reps, clock, per)
                total += ms
                print(f"{cin}>{cout} {hw}x{hw}".ljust(14), f"{name:16s} {ms:10.3f} {flops / ms * 1e-6:8.1f}")
    print(f"all passes above: torch {total:.2f} ms")
    print(f"RESULT name=torch-conv batch={batch} threads={threads} torch_ms={total:.3f}")


if __name__ == "__main__":
    main()
