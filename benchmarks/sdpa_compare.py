#!/usr/bin/env python3
"""FlashSig's CUDA forward and forward+backward against PyTorch SDPA (flash and cuDNN backends) on the
DESIGN §7 shapes.

bf16, hidden 2048 (H = 2048 / d), batch = 16384 / seq, seq in 512 ... 16384, d in {64, 128}, causal and
not; forward FLOPs = 4·B·H·N²·d, halved for causal; forward+backward = 3.5 × forward (FlashAttention's
count: backward = 2.5 × forward). SDPA is timed here with CUDA events (warm-up, median of --iters runs;
fwdbwd = SDPA forward + autograd backward with a random dO); FlashSig through
`flashsig-bench --device cuda --pass fwd,fwdbwd` on the same shapes (a subprocess, same protocol, its
CSV read back). Prints TFLOP/s per shape and pass and the ratios FlashSig / SDPA. FlashSig's sigmoid is
listed next to its softmax: SDPA has no sigmoid, so its softmax is the comparison, as in the
FlashSigmoid paper.

    python3 benchmarks/sdpa_compare.py --bench build/benchmarks/flashsig-bench
    python3 benchmarks/sdpa_compare.py --bench build/benchmarks/flashsig-bench --seqs 1024,4096 --dims 128 --check
    python3 benchmarks/sdpa_compare.py --bench build/benchmarks/flashsig-bench --passes fwdbwd

Needs a CUDA GPU, PyTorch with CUDA, and a flashsig-bench built with CUDA (CMake finds nvcc).
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile

TOKENS = 16384  # batch = 16384 / seq (DESIGN §7), as flashsig-bench does with --hidden


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default="build/benchmarks/flashsig-bench", help="path of flashsig-bench")
    ap.add_argument("--seqs", default="512,1024,2048,4096,8192,16384")
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--causal", default="both", choices=["0", "1", "both"])
    ap.add_argument("--scores", default="softmax,sigmoid", help="FlashSig scores to time")
    ap.add_argument("--passes", default="fwd,fwdbwd", help="fwd, fwdbwd or both (comma list)")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--check", action="store_true",
                    help="flashsig-bench --check (DESIGN §6 rule) before timing (under the first --wgmma value)")
    ap.add_argument("--wgmma", default="",
                    help="FSIG_CUDA_WGMMA values to time FlashSig under, a comma list (e.g. 0,1: the mma.sync and "
                         "the Hopper kernels, one column each); empty: the environment's")
    ap.add_argument("--csv", help="also write the table as CSV here")
    return ap.parse_args()


PASS_FACTOR = {"fwd": 1.0, "fwdbwd": 3.5}


def fmt(x, w=10, p=1):
    return f"{x:{w}.{p}f}" if x is not None else f"{'n/a':>{w}}"


def flops(b, h, n, d, causal, pass_="fwd"):
    f = 4.0 * b * h * n * n * d * PASS_FACTOR[pass_]
    return f / 2 if causal else f


def time_sdpa(torch, backend, b, h, n, d, causal, warmup, iters, pass_="fwd"):
    """Median ms of one SDPA forward (pass fwd) or forward + backward (fwdbwd) with only `backend`
    allowed, or None when it cannot run the case."""
    from torch.nn.attention import sdpa_kernel
    import torch.nn.functional as F

    g = torch.Generator(device="cuda").manual_seed(42)
    bwd = pass_ == "fwdbwd"
    # FlashSig's layout, BSHD, viewed as SDPA's [B, H, N, d] (last dim contiguous), as FA2 users do
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
               .requires_grad_(bwd) for _ in range(3))
    dout = torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2) if bwd else None

    def step():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if bwd:
            torch.autograd.backward(o, dout)

    try:
        with sdpa_kernel(backends=[backend]):
            for _ in range(warmup):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(iters):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                step()
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1))
                if bwd:
                    q.grad = k.grad = v.grad = None
    except RuntimeError as e:  # this backend does not support the case (or this GPU)
        print(f"  SDPA {backend.name} {pass_} n/a for B={b} H={h} N={n} d={d} causal={causal}: "
              f"{str(e).splitlines()[0]}", file=sys.stderr)
        return None
    finally:
        del q, k, v, dout
    return statistics.median(times)


def run_flashsig(args, seqs, dims, causals, passes, wgmma=None, check=False):
    """{(score, seq, d, causal, pass): median ms} from one flashsig-bench run (FSIG_CUDA_WGMMA=wgmma if given;
    check: flashsig-bench --check before each row)."""
    fd, path = tempfile.mkstemp(suffix=".csv", prefix="flashsig-bench-")
    os.close(fd)
    os.unlink(path)  # flashsig-bench writes the header into a fresh file
    cmd = [args.bench, "--device", "cuda", "--dtype", "bf16", "--hidden", str(args.hidden),
           "--seq", ",".join(map(str, seqs)), "--d", ",".join(map(str, dims)),
           "--causal", "both" if len(causals) == 2 else str(causals[0]), "--score", args.scores,
           "--pass", ",".join(passes), "--warmup", str(args.warmup), "--iters", str(args.iters), "--csv", path]
    # flashsig-bench sizes the batch as 16384 / seq when --hidden is given and --batch is not
    if check:
        cmd.append("--check")
    env = dict(os.environ)
    if wgmma is not None:
        env["FSIG_CUDA_WGMMA"] = wgmma
    print("running:", f"FSIG_CUDA_WGMMA={wgmma}" if wgmma is not None else "", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env)
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            for row in csv.DictReader(f):
                key = (row["score"], int(row["Nq"]), int(row["d"]), int(row["causal"]), row["pass"])
                results[key] = float(row["median_ms"])
        os.unlink(path)
    if proc.returncode != 0:
        print(f"flashsig-bench exited {proc.returncode}; its rows that ran are still compared", file=sys.stderr)
    return results


def main():
    args = parse_args()
    seqs = [int(s) for s in args.seqs.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    causals = [0, 1] if args.causal == "both" else [int(args.causal)]
    scores = args.scores.split(",")
    passes = args.passes.split(",")
    if any(p not in PASS_FACTOR for p in passes):
        sys.exit(f"sdpa_compare: --passes takes fwd and/or fwdbwd, not {args.passes}")
    try:
        import torch
        from torch.nn.attention import SDPBackend
    except ImportError as e:
        sys.exit(f"sdpa_compare: needs PyTorch ({e})")
    if not torch.cuda.is_available():
        sys.exit("sdpa_compare: no CUDA device visible to PyTorch")
    if not os.access(args.bench, os.X_OK):
        sys.exit(f"sdpa_compare: {args.bench} is not an executable flashsig-bench (see --bench)")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16, hidden {args.hidden}, "
          f"batch {TOKENS}/seq, median of {args.iters} after {args.warmup} warm-up", flush=True)

    # SDPA first, each figure printed as it comes: a run cut short by a time limit still has the baselines,
    # and FlashSig's own rows are in flashsig-bench's output
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    rows = []
    for pass_ in passes:
        for n in seqs:
            for d in dims:
                for causal in causals:
                    b, h = max(1, TOKENS // n), args.hidden // d
                    f = flops(b, h, n, d, causal, pass_)
                    row = {"pass": pass_, "seq": n, "d": d, "causal": causal, "B": b, "H": h}
                    for name, be in backends:
                        ms = time_sdpa(torch, be, b, h, n, d, bool(causal), args.warmup, args.iters, pass_)
                        row[f"sdpa_{name}"] = f / (ms * 1e-3) / 1e12 if ms else None
                    print(f"SDPA {pass_} N={n} d={d} causal={causal}: flash {fmt(row['sdpa_flash'])} "
                          f"cudnn {fmt(row['sdpa_cudnn'])} TFLOP/s", flush=True)
                    rows.append(row)
                    torch.cuda.empty_cache()

    variants = args.wgmma.split(",") if args.wgmma else [None]
    columns = [(sc, v, sc if len(variants) == 1 else f"{sc}:{v}") for v in variants for sc in scores]
    for n, v in enumerate(variants):
        fs = run_flashsig(args, seqs, dims, causals, passes, v, check=args.check and n == 0)  # checked once
        for r in rows:
            f = flops(r["B"], r["H"], r["seq"], r["d"], r["causal"], r["pass"])
            for sc, cv, col in columns:
                if cv == v:
                    ms = fs.get((sc, r["seq"], r["d"], r["causal"], r["pass"]))
                    r[f"fsig_{col}"] = f / (ms * 1e-3) / 1e12 if ms else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    def line_of(r):
        line = f"{r['seq']:>6} {r['d']:>4} {r['causal']:>6} {fmt(r['sdpa_flash'])} {fmt(r['sdpa_cudnn'])}"
        line += "".join(f" {fmt(r['fsig_' + c])}" for _, _, c in columns)
        line += "".join(f" {fmt(ratio(r['fsig_' + c], r['sdpa_flash']), 10, 2)} "
                        f"{fmt(ratio(r['fsig_' + c], r['sdpa_cudnn']), 10, 2)}" for _, _, c in columns)
        return line

    def short(col):  # softmax:1 -> soft:1
        sc, _, v = col.partition(":")
        return sc[:4] + (":" + v[:3] if v else "")

    head = f"{'seq':>6} {'d':>4} {'causal':>6} {'SDPA-fl':>10} {'SDPA-cu':>10}"
    head += "".join(f" {'FS-' + short(c):>10}" for _, _, c in columns)
    head += "".join(f" {short(c) + '/fl':>10} {short(c) + '/cu':>10}" for _, _, c in columns)
    for pass_ in passes:
        print(f"\n{'forward' if pass_ == 'fwd' else 'forward + backward'} TFLOP/s (and FlashSig / SDPA ratios)")
        print(head)
        for r in rows:
            if r["pass"] == pass_:
                print(line_of(r))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
        print(f"written: {args.csv}")


if __name__ == "__main__":
    main()
