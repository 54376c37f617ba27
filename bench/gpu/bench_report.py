#!/usr/bin/env python3
"""Rows and the report of bench/gpu/bert_large_bench.sh (standard library only).

The shell script runs the programs; this file turns their output into one JSON
object per line in bench.jsonl and, at the end, into the table, the targets
and bench.md. Subcommands:

  meta    first line of bench.jsonl: model shape, card, date, commit
  l2l     one l2l-train run: its metrics.jsonl (timed steps only) and its log
  torch   one bench/peers/torch_bert.py run: the JSON line it printed
  cap     the cap check: l2l-train refusing a configuration over
          exec.device_memory_limit before it allocates the model
  skip    a run that did not start (budget, host memory)
  report  table on stdout, bench.md, rows.tsv for device_check.sh; exit 0

Model FLOPs per step (the numerator of MFU; the same function for every row):
  6 * T * (L * P_block + mask_prob * P_head) + 12 * L * S * H * T
with T tokens per step, L blocks, S seq_len, H hidden, P_block the parameters
of one block and P_head those of the MLM head. The head decodes only the
masked rows (about mask_prob of them, as l2l and the peer both do) and the
embedding is a lookup, so neither is counted at 6 FLOPs per parameter and
token; recompute is not counted (model FLOPs, not hardware FLOPs). The
denominator is gemm_rate's block_step_tflops (l2l's own cuBLAS settings on a
BERT-large block's GEMM shapes, 2 x forward + dx + dw) from gemm_rate.jsonl;
without it the card's dense bf16 spec (989 TFLOP/s for H100/H200 SXM), with a
note saying so.
"""
import argparse
import json
import math
import re
import statistics
import sys

SPEC_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4}  # dense, SXM; a fallback only
CAP_BYTES_TARGET = 3.0e9  # the issue: l2l at 384 blocks in at most 3.0 GB
L2L_VS_RESIDENT = 0.9
L2L_VS_FSDP2 = 2.0
GIB = float(1 << 30)


# ---- helpers -------------------------------------------------------------------

def load_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                # l2l-train prints %.17g, so a non-finite loss reads "nan" / "inf".
                line = re.sub(r'(?<=[:\s])(-?)(nan|inf)(?=[,}\s])',
                              lambda m: '"%s%s"' % (m.group(1), m.group(2)), line)
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def num(x):
    """A finite float, or None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def parse_bytes(text):
    """'1.04 GiB' / '493.42 MiB' / '12 B' (l2l::FormatBytes) -> bytes."""
    m = re.match(r'\s*([0-9.]+)\s*([KMGTPE]i?B|B)\b', text)
    if not m:
        return None
    unit = m.group(2)
    scale = 1
    if unit != "B":
        power = "KMGTPE".index(unit[0]) + 1
        scale = (1024 if "i" in unit else 1000) ** power
    return int(float(m.group(1)) * scale)


def block_params(h, f):
    # ln1, qkv weight + bias, proj weight + bias, ln2, fc1, fc2 (docs/model.md)
    return 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h)


def head_params(h, v):
    return (h * h + h) + 2 * h + (h * v + v)


def all_params(meta, layers):
    h, f, v, s = meta["hidden"], meta["ffn"], meta["vocab"], meta["seq"]
    embedding = v * h + s * h + 2 * h + 2 * h  # token, position, token-type, layernorm
    return embedding + layers * block_params(h, f) + head_params(h, v)


def issue_flops_per_step(meta, layers, tokens):
    """The issue's definition: 6 x params x tokens plus attention FLOPs."""
    return 6.0 * all_params(meta, layers) * tokens + 12.0 * layers * meta["seq"] * meta["hidden"] * tokens


def model_flops_per_step(meta, layers, tokens):
    h, f, v, s = meta["hidden"], meta["ffn"], meta["vocab"], meta["seq"]
    lin = 6.0 * tokens * (layers * block_params(h, f) + meta["mask_prob"] * head_params(h, v))
    attn = 12.0 * layers * s * h * tokens
    return lin + attn


def append(path, obj):
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def say(row):
    """One console line per row, for the log of the run."""
    bits = [row["status"]]
    if num(row.get("tokens_per_s")):
        bits.append("%.0f tok/s (median of %s timed steps, %s tokens/step)" % (
            row["tokens_per_s"], row.get("timed_steps_done", row.get("timed_steps")),
            row.get("tokens_per_step")))
    if row.get("device_peak_bytes"):
        bits.append("device peak %.2f GiB" % (row["device_peak_bytes"] / GIB))
    if row.get("smi_peak_bytes"):
        bits.append("nvidia-smi +%.2f GiB" % (row["smi_peak_bytes"] / GIB))
    if row.get("plan_bytes"):
        bits.append("plan %.2f GiB" % (row["plan_bytes"] / GIB))
    if row.get("loss_last") is not None:
        bits.append("loss %s -> %s" % (row.get("loss_first"), row.get("loss_last")))
    if row.get("note"):
        bits.append(row["note"])
    if row.get("error"):
        bits.append("error: " + row["error"][:160])
    print("bench %s: %s" % (row["name"], "; ".join(str(b) for b in bits)))


def log_facts(log_path):
    """What l2l-train printed at start: the device memory plan and host memory."""
    facts = {}
    try:
        text = open(log_path, errors="replace").read()
    except OSError:
        return facts, ""
    m = re.search(r"device memory plan ([0-9.]+ \w+) \(parameters ([0-9.]+ \w+), "
                  r"workspace ([0-9.]+ \w+), boundaries ([0-9.]+ \w+), stash ([0-9.]+ \w+)\)",
                  text)
    if m:
        for k, g in zip(("plan", "plan_params", "plan_workspace", "plan_boundaries",
                         "plan_stash"), m.groups()):
            facts[k + "_bytes"] = parse_bytes(g)
    m = re.search(r"host memory per rank: training state ([0-9.]+ \w+).*stash ([0-9.]+ \w+)", text)
    if m:
        facts["host_state_bytes"] = parse_bytes(m.group(1))
        facts["host_stash_bytes"] = parse_bytes(m.group(2))
    last = ""
    for line in text.splitlines():
        if line.strip() and not line.startswith("step "):
            last = line.strip()
    return facts, last


def common(a):
    return {"name": a.name, "status": a.status, "rc": a.rc, "wall_s": a.wall,
            "note": a.note or "", "layers": a.layers}


# ---- subcommands -----------------------------------------------------------------

def cmd_meta(a):
    obj = {"kind": "meta", "gpu": a.gpu, "date": a.date, "commit": a.commit,
           "device": a.device, "precision": a.precision, "hidden": a.hidden, "heads": a.heads,
           "ffn": a.ffn, "vocab": a.vocab, "seq": a.seq, "mask_prob": a.mask_prob,
           "global_batch": a.global_batch, "micro_batch": a.micro_batch, "dry_run": a.dry,
           "mem_total_bytes": a.mem_total, "budget_s": a.budget}
    append(a.out, obj)


def cmd_l2l(a):
    row = {"kind": "run", "system": "l2l", "mode": a.mode, **common(a),
           "global_batch": a.global_batch, "micro_batch": a.micro_batch,
           "tokens_per_step": a.global_batch * a.seq, "device_memory_limit": a.limit,
           "warmup_steps": a.warmup, "timed_steps": a.timed,
           "host_need_est_bytes": a.host_need, "mem_available_bytes": a.mem_available}
    recs = [r for r in load_jsonl(a.metrics) if "step" in r]
    timed = [r for r in recs if a.warmup < r["step"] <= a.warmup + a.timed]
    facts, last_line = log_facts(a.log)
    row.update(facts)
    if a.smi_peak > 0:
        row["smi_peak_bytes"] = a.smi_peak
    row["steps_done"] = len(recs)
    if recs:
        losses = [num(r.get("loss")) for r in recs]
        row["loss_first"], row["loss_last"] = losses[0], losses[-1]
        row["loss_finite"] = all(x is not None for x in losses)
        row["device_peak_bytes"] = max(int(r.get("device_peak_bytes", 0)) for r in recs)
        row["host_eps_bytes"] = int(recs[-1].get("host_eps_bytes", 0))
    if timed:
        med = lambda k: statistics.median(float(r.get(k, 0.0)) for r in timed)
        row["tokens_per_s"] = med("tokens_per_s")
        row["step_s_median"] = med("step_s")
        row["compute_s"] = med("compute_s")
        row["gather_wait_s"] = med("gather_wait_s")
        row["optimizer_wait_s"] = med("optimizer_wait_s")
        row["gathers"] = int(med("gathers"))
        row["timed_steps_done"] = len(timed)
    if a.status == "ok" and (len(timed) < a.timed or not row.get("loss_finite", False)):
        row["status"] = "FAIL"
        row["note"] = (row["note"] + "; " if row["note"] else "") + (
            "non-finite loss" if timed else "no timed steps in metrics.jsonl")
    if row["status"] != "ok" and last_line:
        row["error"] = last_line[:300]
    append(a.out, row)
    say(row)


def cmd_torch(a):
    row = {"kind": "run", "system": "torch", "mode": a.mode, **common(a)}
    peer = None
    try:
        for line in open(a.log, errors="replace"):
            if line.startswith('{"peer"'):
                try:
                    peer = json.loads(line)
                except ValueError:
                    pass
    except OSError:
        pass
    if peer:
        row.update({
            "global_batch": peer["batch"], "micro_batch": peer["batch"],
            "tokens_per_step": peer["tokens_per_step"], "tokens_per_s": peer["tokens_per_s"],
            "step_s_median": peer["step_s_median"],
            "device_peak_bytes": peer.get("max_memory_allocated"),
            "device_reserved_bytes": peer.get("max_memory_reserved"),
            "host_max_rss_bytes": peer.get("host_max_rss_bytes"),
            "loss_first": peer.get("loss_first"), "loss_last": peer.get("loss_last"),
            "timed_steps": peer.get("steps"), "warmup_steps": peer.get("warmup"),
            "torch": peer.get("torch"), "attn": peer.get("attn"),
            "recompute": peer.get("recompute"), "params": peer.get("params"),
            "peer_model_tflops": peer.get("model_tflops"),
            "optimizer": peer.get("optimizer"), "offload": peer.get("offload"),
        })
        if a.smi_peak > 0:
            row["smi_peak_bytes"] = a.smi_peak
    elif a.status == "ok":
        row["status"] = "FAIL"
        row["note"] = (row["note"] + "; " if row["note"] else "") + "no JSON line"
    if row["status"] != "ok":
        _, last = log_facts(a.log)
        row["error"] = last[:300]
    append(a.out, row)
    say(row)


def cmd_cap(a):
    facts, last = log_facts(a.log)
    try:
        text = open(a.log, errors="replace").read()
    except OSError:
        text = ""
    refused = a.rc not in (0, None) and "is too small" in text
    row = {"kind": "check", "system": "l2l", "mode": a.mode, **common(a),
           "device_memory_limit": a.limit, "refused": refused, **facts}
    row["status"] = a.status if a.status != "ok" else ("ok" if refused else "FAIL")
    if not refused and last:
        row["error"] = last[:300]
    append(a.out, row)
    say(row)


def cmd_skip(a):
    row = {"kind": "run", "system": a.system, "mode": a.mode, **common(a), "status": "SKIP"}
    append(a.out, row)
    say(row)


# ---- report ------------------------------------------------------------------------

def denominator(gemm_path, gpu, override):
    """(TF/s, text) of the MFU denominator."""
    if override:
        return float(override), "%.0f TF/s (given: L2L_BENCH_PEAK_TFLOPS)" % float(override)
    rows = load_jsonl(gemm_path) if gemm_path else []
    summ = [r for r in rows if r.get("summary")]
    sq = [r for r in rows if r.get("shape") == "square8192"]
    if summ and summ[-1].get("checks_ok") and num(summ[-1].get("block_step_tflops")):
        s = summ[-1]
        extra = ""
        if sq:
            extra = "; 8192^3 raw cuBLAS %.0f TF/s" % sq[-1].get("raw_tflops", 0)
        return float(s["block_step_tflops"]), (
            "%.0f TF/s measured: gemm_rate block_step_tflops (l2l's cuBLAS settings, BERT-large "
            "block GEMMs, 2 x fwd + dx + dw; raw cuBLAS %.0f%s)" %
            (s["block_step_tflops"], s.get("raw_block_step_tflops", 0), extra))
    for key, peak in SPEC_BF16_TFLOPS.items():
        if key in (gpu or ""):
            return peak, ("%.0f TF/s: %s dense bf16 SPEC PEAK (no usable gemm_rate.jsonl), "
                          "not a measured rate" % (peak, key))
    return None, "none (no gemm_rate.jsonl and no spec peak for '%s'): MFU not computed" % gpu


def fmt(x, spec, none="-"):
    return none if x is None else spec % x


def label(r):
    if r["system"] == "l2l":
        return r["mode"]  # l2l | resident
    return "torch " + r["mode"]


def evaluate_targets(runs, checks, find):
    """[(id, text, verdict, detail)]: PASS / MISS, or n/a when a run is missing."""
    out = []
    l24, res24, fsdp = find("l2l-24"), find("resident-24"), find("torch-fsdp2-offload-24")
    text = "l2l-24 >= %.1f x resident-24 tokens/s" % L2L_VS_RESIDENT
    if l24 and res24:
        x = l24["tokens_per_s"] / res24["tokens_per_s"]
        out.append(("l2l24_vs_resident24", text, "PASS" if x >= L2L_VS_RESIDENT else "MISS",
                    "%.3f x" % x))
    else:
        out.append(("l2l24_vs_resident24", text, "n/a", "a run is missing"))
    text = "l2l-24 >= %.0f x fsdp2-offload-24 tokens/s" % L2L_VS_FSDP2
    if l24 and fsdp:
        x = l24["tokens_per_s"] / fsdp["tokens_per_s"]
        out.append(("l2l24_vs_fsdp2", text, "PASS" if x >= L2L_VS_FSDP2 else "MISS",
                    "%.2f x" % x))
    else:
        out.append(("l2l24_vs_fsdp2", text, "n/a", "a run is missing"))
    big = [r for r in runs if r["name"] == "l2l-384"]
    text = "l2l-384 device peak <= %.1f GB" % (CAP_BYTES_TARGET / 1e9)
    if big and big[-1]["status"] in ("ok", "TIMEOUT") and big[-1].get("device_peak_bytes"):
        r = big[-1]  # a run that timed out after some steps still shows its peak
        p, smi = r["device_peak_bytes"], r.get("smi_peak_bytes")
        detail = "%.3f GB (%.2f GiB) under exec.device_memory_limit=%s" % (
            p / 1e9, p / GIB, r.get("device_memory_limit"))
        if r["status"] != "ok":
            detail += " (run %s after %d steps)" % (r["status"], r.get("steps_done", 0))
        if smi:
            detail += "; nvidia-smi %.2f GB incl. CUDA context" % (smi / 1e9)
        if r.get("note"):
            detail += "; " + r["note"]
        out.append(("l2l384_peak", text, "PASS" if p <= CAP_BYTES_TARGET else "MISS", detail))
    elif big and big[-1]["status"] != "SKIP":
        out.append(("l2l384_peak", text, "MISS", "run %s: %s" % (
            big[-1]["status"], big[-1].get("error", "")[:100])))
    else:
        out.append(("l2l384_peak", text, "n/a", big[-1].get("note", "") if big else "not run"))
    for c in checks:
        text = "%s: refused at exec.device_memory_limit=%s" % (c["name"], c.get("device_memory_limit"))
        if c["status"] == "SKIP":
            out.append(("cap_" + c["name"], text, "n/a", c.get("note", "")))
        elif c.get("refused"):
            out.append(("cap_" + c["name"], text, "PASS",
                        "needs %.2f GB" % (c["plan_bytes"] / 1e9) if c.get("plan_bytes")
                        else "refused"))
        else:
            out.append(("cap_" + c["name"], text, "MISS",
                        "not refused (%s): %s" % (c["status"], c.get("error", "")[:100])))
    return out


def cmd_report(a):
    rows = load_jsonl(a.jsonl)
    metas = [r for r in rows if r.get("kind") == "meta"]
    if not metas:
        print("bench_report: no meta line in %s" % a.jsonl, file=sys.stderr)
        return 1
    meta = metas[-1]
    runs = [r for r in rows if r.get("kind") == "run"]
    checks = [r for r in rows if r.get("kind") == "check"]
    denom, denom_text = denominator(a.gemm, meta.get("gpu"), a.peak)

    def find(name):
        for r in runs:
            if r["name"] == name and r["status"] == "ok" and num(r.get("tokens_per_s")):
                return r
        return None

    res24, fsdp = find("resident-24"), find("torch-fsdp2-offload-24")
    for r in runs:
        tps = num(r.get("tokens_per_s")) if r["status"] == "ok" else None
        r["ratio_vs_resident24"] = tps / res24["tokens_per_s"] if tps and res24 else None
        r["ratio_vs_fsdp2_offload"] = tps / fsdp["tokens_per_s"] if tps and fsdp else None
        r["model_tflops"] = r["mfu"] = r["mfu_6pt"] = None
        if tps:
            fl = model_flops_per_step(meta, r["layers"], r["tokens_per_step"])
            r["model_flops_per_step"] = fl
            r["model_tflops"] = fl * tps / r["tokens_per_step"] / 1e12
            fl6 = issue_flops_per_step(meta, r["layers"], r["tokens_per_step"])
            if denom:
                r["mfu"] = r["model_tflops"] / denom
                r["mfu_6pt"] = fl6 * tps / r["tokens_per_step"] / 1e12 / denom
    targets = evaluate_targets(runs, checks, find)

    # ---- the table
    hdr = ["system", "layers", "tok/step", "tok/s", "vs res-24", "vs fsdp2-off", "peak GiB",
           "smi GiB", "MFU", "MFU 6PT", "gather_s", "optim_s", "status / note"]
    table = []
    for r in runs:
        ok = r["status"] == "ok"
        bits = [] if ok else [r["status"]]
        if r.get("note"):
            bits.append(r["note"])
        if not ok and r.get("error"):
            bits.append(r["error"][:110])
        peak = r.get("device_peak_bytes")
        smi = r.get("smi_peak_bytes")
        table.append([
            label(r), str(r["layers"]), fmt(r.get("tokens_per_step"), "%d"),
            fmt(r.get("tokens_per_s") if ok else None, "%.0f"),
            fmt(r.get("ratio_vs_resident24"), "%.2f"),
            fmt(r.get("ratio_vs_fsdp2_offload"), "%.2f"),
            fmt(peak / GIB if peak else None, "%.2f"),
            fmt(smi / GIB if smi else None, "%.2f"),
            fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, "%.1f%%"),
            fmt(r["mfu_6pt"] * 100 if r.get("mfu_6pt") is not None else None, "%.1f%%"),
            fmt(r.get("gather_wait_s") if ok else None, "%.3f"),
            fmt(r.get("optimizer_wait_s") if ok else None, "%.3f"),
            "; ".join(bits),
        ])
    widths = [max([len(hdr[i])] + [len(t[i]) for t in table]) for i in range(len(hdr) - 1)]
    dry = " (DRY RUN: CPU, tiny width; the numbers mean nothing)" if meta.get("dry_run") else ""
    shape = ("hidden %d, %d heads, FFN %d, vocab %d, seq %d, post-norm, dropout 0.1; %s %s; "
             "global batch %d x %d = %d tokens per step (l2l: micro-batch %d on one rank; the "
             "peers run the whole batch at once) unless a note says otherwise" % (
                 meta["hidden"], meta["heads"], meta["ffn"], meta["vocab"], meta["seq"],
                 meta["device"], meta["precision"], meta["global_batch"], meta["seq"],
                 meta["global_batch"] * meta["seq"], meta["micro_batch"]))
    lines = ["BERT-large benchmark on %s, %s, commit %s%s" % (
        meta.get("gpu"), meta.get("date"), meta.get("commit"), dry),
        "shape: " + shape, "MFU denominator: " + denom_text,
        "  ".join(h.ljust(w) for h, w in zip(hdr, widths)) + "  " + hdr[-1]]
    for t in table:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(t, widths))) + "  " + t[-1])
    lines.append("targets:")
    for _, text, verdict, detail in targets:
        lines.append("  %-4s %s: %s" % (verdict, text, detail))
    print("\n".join(lines))

    # ---- bench.md, to paste into docs/benchmarks.md
    md = ["### BERT-large on one %s (%s, commit %s)%s" % (
        meta.get("gpu"), meta.get("date"), meta.get("commit"), dry), "",
        "`bench/gpu/bert_large_bench.sh`, run by `bench/gpu/device_check.sh`. BERT-large shape: "
        + shape + ". tokens/s: median of the timed steps after the warm-up steps. peak: l2l's "
        "`device_peak_bytes` (its device arena), torch's `max_memory_allocated`; smi: "
        "`nvidia-smi` memory.used during the run minus its value before (CUDA context and "
        "library workspaces included). gather_s: l2l's per-step `gather_wait_s` (on the GPU the "
        "compute stream's stalls on gather / reduce-scatter events: exposed transfer time); "
        "optim_s: `optimizer_wait_s` (host time waiting for AdamW updates). l2l and resident "
        "both run configs/bert-large.yaml's exec settings (prefetch_depth 1, stash host). "
        "MFU: model FLOPs per step "
        "6·T·(L·P_block + %.2f·P_head) + 12·L·S·H·T (embedding lookups, unmasked head rows and "
        "recompute not counted) over %s. MFU 6PT: the issue's definition, 6 x all parameters "
        "x tokens + the same attention term, over the same rate." % (meta["mask_prob"], denom_text), "",
        "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for t in table:
        md.append("| " + " | ".join(c.replace("|", "/") for c in t) + " |")
    md += ["", "Targets:", ""]
    for _, text, verdict, detail in targets:
        md.append("- **%s** %s: %s" % (verdict, text, detail))
    with open(a.md, "w") as f:
        f.write("\n".join(md) + "\n")

    # ---- bench.jsonl again, with the ratios, MFU and targets
    with open(a.jsonl, "w") as f:
        for r in [meta] + runs + checks:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({
            "kind": "targets", "mfu_denominator_tflops": denom, "mfu_denominator": denom_text,
            "targets": [{"id": i, "target": t, "verdict": v, "detail": d}
                        for i, t, v, d in targets]}) + "\n")

    # ---- rows for device_check.sh's summary: name, verdict, seconds, note
    if a.rows:
        with open(a.rows, "w") as f:
            for r in runs:  # the cap check is reported as a target
                v = {"ok": "PASS"}.get(r["status"], r["status"])
                if r["status"] == "ok":
                    peak = r.get("device_peak_bytes")
                    note = "%.0f tok/s, peak %s, MFU %s" % (
                        r["tokens_per_s"], fmt(peak / GIB if peak else None, "%.2f GiB", "n/a"),
                        fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, "%.1f%%",
                            "n/a"))
                    if r.get("note"):
                        note += "; " + r["note"]
                else:
                    note = "; ".join(x for x in (r.get("note", ""), r.get("error", "")) if x)
                f.write("bench_%s\t%s\t%s\t%s\n" % (
                    r["name"], v, fmt(num(r.get("wall_s")), "%.1f", "0"),
                    note.replace("\t", " ")[:160]))
            for tid, text, verdict, detail in targets:
                f.write("target_%s\t%s\t0\t%s: %s\n" % (tid, verdict, text, detail[:100]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    m = sub.add_parser("meta")
    m.add_argument("--out", required=True)
    for k in ("gpu", "date", "commit", "device", "precision"):
        m.add_argument("--" + k, default="?")
    for k in ("hidden", "heads", "ffn", "vocab", "seq", "global-batch", "micro-batch",
              "mem-total", "budget"):
        m.add_argument("--" + k, type=int, required=True)
    m.add_argument("--mask-prob", type=float, default=0.15)
    m.add_argument("--dry", type=int, default=0)

    def run_args(p):
        p.add_argument("--out", required=True)
        p.add_argument("--name", required=True)
        p.add_argument("--mode", required=True)
        p.add_argument("--layers", type=int, required=True)
        p.add_argument("--status", default="ok")  # ok | FAIL | TIMEOUT
        p.add_argument("--rc", type=int, default=None)
        p.add_argument("--wall", type=float, default=None)
        p.add_argument("--note", default="")
        p.add_argument("--log", default="")
        p.add_argument("--smi-peak", type=int, default=0)

    p = sub.add_parser("l2l")
    run_args(p)
    p.add_argument("--metrics", required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--timed", type=int, required=True)
    p.add_argument("--global-batch", type=int, required=True)
    p.add_argument("--micro-batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--limit", default="0")
    p.add_argument("--host-need", type=int, default=None)
    p.add_argument("--mem-available", type=int, default=None)
    p = sub.add_parser("torch")
    run_args(p)
    p = sub.add_parser("cap")
    run_args(p)
    p.add_argument("--limit", default="0")
    p = sub.add_parser("skip")
    run_args(p)
    p.add_argument("--system", required=True)

    p = sub.add_parser("report")
    p.add_argument("--jsonl", required=True)
    p.add_argument("--gemm", default="")
    p.add_argument("--md", required=True)
    p.add_argument("--rows", default="")
    p.add_argument("--peak", default="", help="MFU denominator in TF/s (overrides gemm_rate)")

    a = ap.parse_args(argv)
    return {"meta": cmd_meta, "l2l": cmd_l2l, "torch": cmd_torch, "cap": cmd_cap,
            "skip": cmd_skip, "report": cmd_report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
