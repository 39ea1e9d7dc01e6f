"""The table of bench/train/run.sh from its JSON lines: per model, imops'
training img/s against PyTorch's best configuration (and its default), the
ratio, peak RSS of both processes, imops' achieved training GFLOP/s (6 x
forward MACs per image, the perf-anchors rule) as a share of the measured
sgemm peak (the better of dnnl_sgemm and torch.mm), batch-64 inference img/s
and batch-1 latency of both. The FLOP count is that of direct convolution:
imops' Winograd 3x3 convolutions do fewer multiplications, so its figure is
"direct-equivalent" and can pass 100% of the GEMM peak.

  summarize.py RESULTS.jsonl [--json]"""
import json
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    peaks = {r["impl"]: r["sgemm_gflops"] for r in rows if "sgemm_gflops" in r and "model" not in r}
    peak = max(peaks.values()) if peaks else float("nan")
    models = []
    for r in rows:
        key = (r.get("model"), r.get("img"))
        if r.get("model") and key not in models:
            models.append(key)
    table = []
    for key in models:
        by = {r["impl"]: r for r in rows if (r.get("model"), r.get("img")) == key}
        im = by.get("imops")
        torch = {k: v for k, v in by.items() if k.startswith("torch")}
        if not im or not torch:
            continue
        best_name, best = max(torch.items(), key=lambda kv: kv[1]["train_ips"])
        inf_best = max(t["infer_ips"] for t in torch.values())
        lat_best = min(t["latency_ms"] for t in torch.values())
        macs = next(t["macs"] for t in torch.values())
        gflops = 6 * macs * im["train_ips"] / 1e9
        table.append({
            "model": key[0], "img": key[1], "imops_ips": im["train_ips"],
            "imops_ips_range": [im["train_ips_min"], im["train_ips_max"]],
            "torch_best_ips": best["train_ips"], "torch_best_config": best_name.removeprefix("torch-"),
            "torch_default_ips": torch.get("torch-default", {}).get("train_ips"),
            "ratio": im["train_ips"] / best["train_ips"],
            "imops_rss_mb": im["peak_rss_train_kb"] / 1024, "torch_rss_mb": best["peak_rss_train_kb"] / 1024,
            "fwd_mmac": macs / 1e6, "imops_gflops": gflops, "peak_fraction": gflops / peak,
            "imops_infer_ips": im["infer_ips"], "torch_infer_ips": inf_best,
            "imops_latency_ms": im["latency_ms"], "torch_latency_ms": lat_best,
        })
    if "--json" in sys.argv:
        print(json.dumps({"sgemm_peak": peaks, "rows": table}, indent=1))
        return
    print(f"sgemm peak (2048^3, 2 threads): " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items())
          + f" GFLOP/s; the table uses {peak:.1f} (imops GFLOP/s count direct-convolution FLOPs)")
    print("Training, batch 64, 2 threads, img/s median of the reps (imops min-max); PyTorch: its best of default / malloc /"
          " malloc+channels_last; RSS: peak of each process after training")
    print("| model | input | imops img/s | PyTorch best (config) | PyTorch default | ratio | imops RSS MB | PyTorch RSS MB"
          " | imops GFLOP/s | % sgemm peak | infer b64 img/s imops / torch | b1 latency ms imops / torch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in table:
        print(f"| {t['model']} | {t['img']} | {t['imops_ips']:.1f} ({t['imops_ips_range'][0]:.0f}-"
              f"{t['imops_ips_range'][1]:.0f}) | {t['torch_best_ips']:.1f} ({t['torch_best_config']}) | "
              f"{t['torch_default_ips'] or float('nan'):.1f} | {t['ratio']:.2f}x | {t['imops_rss_mb']:.0f} | "
              f"{t['torch_rss_mb']:.0f} | {t['imops_gflops']:.1f} | {100 * t['peak_fraction']:.0f}% | "
              f"{t['imops_infer_ips']:.0f} / {t['torch_infer_ips']:.0f} | "
              f"{t['imops_latency_ms']:.2f} / {t['torch_latency_ms']:.2f} |")


if __name__ == "__main__":
    main()
