#!/usr/bin/env python3
"""torch.optim.AdamW on the CPU, for bench_adamw's comparison.

One flat fp32 parameter of --params elements (the layout of an l2l shard, the
friendliest case for torch: no per-tensor overhead), --threads intra-op threads,
each available implementation (foreach, fused, for-loop) timed as the best of
--reps steps after a warm-up step. Prints one line per variant and a last line
`torch_best params_per_s=X with_bf16_copy_params_per_s=Y` that bench_adamw
parses; Y adds the bf16 compute-copy refresh (p16.copy_(p)) that l2l's kernel
does in the same pass.
"""
import argparse
import time
import warnings

warnings.filterwarnings("ignore", message=".*NumPy.*")  # torch without numpy: harmless
import torch  # noqa: E402


def time_best(fn, reps):
    fn()  # warm-up (creates optimizer state on the first step)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=64 << 20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    n = a.params
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n} params")

    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.rand(n, generator=g) - 0.5)
    p.grad = torch.rand(n, generator=g) - 0.5
    p16 = torch.empty(n, dtype=torch.bfloat16)
    copy_s = time_best(lambda: p16.copy_(p.detach()), a.reps)

    variants = [("foreach", {"foreach": True}), ("fused", {"fused": True}),
                ("for-loop", {"foreach": False})]
    best = 0.0
    for name, kwargs in variants:
        try:
            opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                                    weight_decay=0.01, **kwargs)
            secs = time_best(opt.step, a.reps)
        except (RuntimeError, TypeError, ValueError) as e:
            print(f"  {name:9s} unsupported here ({str(e).splitlines()[0][:80]})")
            continue
        finally:
            opt = None
        rate = n / secs
        print(f"  {name:9s} {rate / 1e6:10.1f} M params/s  {secs * 1e3:9.2f} ms/step")
        best = max(best, rate)
    if best == 0.0:
        raise SystemExit("no AdamW variant ran")
    with_copy = n / (n / best + copy_s)
    print(f"  bf16 copy {n / copy_s / 1e6:10.1f} M params/s  {copy_s * 1e3:9.2f} ms")
    print(f"torch_best params_per_s={best:.1f} with_bf16_copy_params_per_s={with_copy:.1f}")


if __name__ == "__main__":
    main()
