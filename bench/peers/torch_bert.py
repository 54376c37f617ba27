#!/usr/bin/env python3
"""PyTorch peer of l2l's BERT: the same architecture, trained the way a PyTorch
user would, for tokens/s and peak-memory comparisons against l2l-train.

Architecture (docs/model.md): token + position + type embeddings, layernorm,
dropout; post-norm blocks x1 = LN1(x + Drop(Attn(x)·Wo + bo)),
y = LN2(x1 + Drop(FC2(GELU(FC1(x1))))) with a fused qkv projection whose output
columns are [q | k | v] and heads split inside each; GELU in the tanh form;
layernorm eps 1e-5; MLM head LN(GELU(x·Wd + bd))·Wdec + bdec, untied from the
token embedding, applied to the masked rows only (as l2l gathers them); mean
cross-entropy over the masked tokens. AdamW (l2l's bert-large defaults:
lr 1e-4, betas 0.9/0.999, eps 1e-6, weight decay 0.01) and global-norm
clipping at 1.0.

Modes:
  plain          fp32 master weights on the GPU, bf16 autocast, fused AdamW on
                 the GPU (the resident baseline).
  fsdp2-offload  FSDP2 fully_shard per block (+ embedding, head, root) on one
                 rank, MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32),
                 CPUOffloadPolicy(pin_memory=True): parameters, gradients and
                 AdamW state live in host memory and the optimizer steps on the
                 CPU — the closest PyTorch analogue of l2l's relay + EPS.
                 bf16 autocast stays on, so layernorm, softmax and the loss run
                 in fp32 as in l2l.
--recompute on (default) checkpoints every block (l2l recomputes each block in
its backward); --attn sdpa (default) uses scaled_dot_product_attention (flash),
--attn math materialises the probabilities as l2l does. The synthetic batch has
no padding, so no attention mask is passed.

Prints progress to stderr and ONE JSON line to stdout (also appended to --json):
tokens_per_s (batch*seq per step over the median step time after --warmup
steps), step_s_median, max_memory_allocated / max_memory_reserved (bytes,
torch.cuda), host_max_rss_bytes, model_tflops (3 x forward FLOPs of the
matmuls incl. attention and head, no recompute, over the median step).

Exit 2 without CUDA (unless --device cpu, a CPU smoke test of the code paths).
"""
import argparse
import json
import math
import os
import resource
import socket
import statistics
import sys
import time


def die(msg, code=2):
    print(f"torch_bert.py: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - depends on the host
    die(f"cannot import torch ({e}); run it with the python that has PyTorch "
        "(on the GPU host: plain python3)")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["plain", "fsdp2-offload"], default="plain")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--mask-prob", type=float, default=0.15)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--eps", type=float, default=1e-6)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    ap.add_argument("--recompute", choices=["on", "off"], default="on")
    ap.add_argument("--attn", choices=["sdpa", "math"], default="sdpa")
    ap.add_argument("--compile", action="store_true",
                    help="compile each block (Module.compile); experimental, untested on GPU")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: a smoke test of the code paths only")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", help="also append the JSON line to this file")
    a = ap.parse_args(argv)
    if a.hidden % a.heads:
        ap.error("--hidden must be a multiple of --heads")
    if min(a.layers, a.hidden, a.heads, a.ffn, a.vocab, a.seq, a.batch, a.steps) <= 0:
        ap.error("sizes and --steps must be positive")
    return a


# ---- model ---------------------------------------------------------------------

class Embedding(nn.Module):
    def __init__(self, vocab, seq, hidden, types, p):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(seq, hidden)
        self.types = nn.Embedding(types, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-5)
        self.p = p

    def forward(self, ids, types):
        pos = torch.arange(ids.shape[1], device=ids.device)
        e = self.tok(ids) + self.pos(pos)[None] + self.types(types)
        return F.dropout(self.ln(e), self.p, self.training)


class Block(nn.Module):
    def __init__(self, hidden, heads, ffn, p, attn):
        super().__init__()
        self.h, self.nh, self.p, self.attn = hidden, heads, p, attn
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-5)
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-5)

    def attention(self, x):
        b, s, h = x.shape
        hd = h // self.nh
        q, k, v = (t.view(b, s, self.nh, hd).transpose(1, 2)
                   for t in self.qkv(x).split(h, dim=-1))
        p = self.p if self.training else 0.0
        if self.attn == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            probs = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)), dim=-1)
            a = F.dropout(probs, p, self.training) @ v
        return a.transpose(1, 2).reshape(b, s, h)

    def forward(self, x):
        x1 = self.ln1(x + F.dropout(self.proj(self.attention(x)), self.p, self.training))
        m = self.fc2(F.gelu(self.fc1(x1), approximate="tanh"))
        return self.ln2(x1 + F.dropout(m, self.p, self.training))


class MlmHead(nn.Module):
    def __init__(self, hidden, vocab):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-5)
        self.decoder = nn.Linear(hidden, vocab)  # untied from the token embedding

    def forward(self, x):
        return self.decoder(self.ln(F.gelu(self.dense(x), approximate="tanh")))


class Bert(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.emb = Embedding(a.vocab, a.seq, a.hidden, 2, a.dropout)
        self.blocks = nn.ModuleList(
            Block(a.hidden, a.heads, a.ffn, a.dropout, a.attn) for _ in range(a.layers))
        self.head = MlmHead(a.hidden, a.vocab)
        self.apply(self._init)

    @staticmethod
    def _init(m):  # docs/model.md: normal(0, 0.02) weights, zero biases, LN ones/zeros
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, ids, types, mask_rows, targets):
        x = self.emb(ids, types)
        for blk in self.blocks:  # wrapped by checkpoint_wrapper when --recompute on
            x = blk(x)
        rows = x.reshape(-1, x.shape[-1]).index_select(0, mask_rows)
        logits = self.head(rows)
        return F.cross_entropy(logits.float(), targets)


def forward_flops(a, masked_rows):
    """Matmul FLOPs of one forward over a step's batch (no recompute)."""
    tokens = a.batch * a.seq
    h, f = a.hidden, a.ffn
    per_tok_block = 2 * (4 * h * h + 2 * h * f) + 2 * 2 * a.seq * h  # linears + qk, pv
    head = masked_rows * 2 * (h * h + h * a.vocab)
    return a.layers * tokens * per_tok_block + head


# ---- data ----------------------------------------------------------------------

def make_batch(a, gen, device):
    """Random tokens, 15% masked (80% [MASK], 10% random, 10% kept) like l2l's MLM."""
    ids = torch.randint(0, a.vocab - 1, (a.batch, a.seq), generator=gen)
    types = (torch.arange(a.seq) >= a.seq // 2).long().expand(a.batch, a.seq).contiguous()
    sel = torch.rand(a.batch, a.seq, generator=gen) < a.mask_prob
    sel.view(-1)[0] = True  # at least one target
    mask_rows = sel.view(-1).nonzero().squeeze(1)
    targets = ids.view(-1)[mask_rows].clone()
    r = torch.rand(mask_rows.numel(), generator=gen)
    inp = ids.clone().view(-1)
    inp[mask_rows[r < 0.8]] = a.vocab - 1  # [MASK]
    rnd = mask_rows[(r >= 0.8) & (r < 0.9)]
    inp[rnd] = torch.randint(0, a.vocab - 1, (rnd.numel(),), generator=gen)
    return [t.to(device, non_blocking=True) for t in
            (inp.view(a.batch, a.seq), types, mask_rows, targets)]


# ---- setup ---------------------------------------------------------------------

def init_single_rank_group(device):
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:  # not under torchrun: a 1-process group on loopback
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0")
    backend = "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend=backend)


def wrap_blocks(model, a):
    """Activation checkpointing and compilation per block, in torchtitan's order
    (checkpoint wrapper, then compile, then fully_shard on the result), so that
    FSDP2's hooks sit outside the recomputed region."""
    for i, blk in enumerate(model.blocks):
        if a.recompute == "on":
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
                checkpoint_wrapper)
            blk = checkpoint_wrapper(blk, preserve_rng_state=True)  # non-reentrant
        if a.compile:
            blk.compile()
        model.blocks[i] = blk


def build(a, device):
    model = Bert(a)
    wrap_blocks(model, a)
    info = {}
    if a.mode == "plain":
        model.to(device)
        fused = device == "cuda"
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=a.eps,
                                weight_decay=a.weight_decay, fused=fused)
        info["optimizer"] = "AdamW fused on GPU" if fused else "AdamW (default impl) on CPU"
        return model, opt, info
    # fsdp2-offload
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    init_single_rank_group(device)
    mesh = init_device_mesh(device, (1,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    kw = dict(mesh=mesh, mp_policy=mp)
    if device == "cuda":
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
        info["offload"] = "CPUOffloadPolicy(pin_memory=True)"
    else:
        info["offload"] = "none (cpu smoke test)"
    fully_shard(model.emb, **kw)
    for blk in model.blocks:
        fully_shard(blk, **kw)
    fully_shard(model.head, **kw)
    fully_shard(model, **kw)
    # With CPU offload the parameters (DTensor shards) are on the CPU: the
    # optimizer runs there (torch picks foreach).
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=a.eps,
                            weight_decay=a.weight_decay)
    info["optimizer"] = "AdamW (default impl) on CPU"
    return model, opt, info


def main(argv=None):
    a = parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        die(f"CUDA is not available (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}): run this on a GPU host, or pass --device cpu "
            "for a smoke test of the code paths")
    device = a.device
    torch.manual_seed(a.seed)
    if device == "cuda":
        torch.cuda.manual_seed(a.seed)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model, opt, info = build(a, device)
    model.train()
    nparams = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(a.seed)

    times, losses, masked = [], [], []
    total = a.warmup + a.steps
    t_start = time.perf_counter()
    for step in range(total):
        ids, types, rows, targets = make_batch(a, gen, device)
        masked.append(rows.numel())
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(ids, types, rows, targets)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        lv = float(loss.detach().float().cpu())
        if not math.isfinite(lv):
            die(f"step {step}: loss is {lv}", code=1)
        losses.append(lv)
        if step >= a.warmup:
            times.append(dt)
        print(f"step {step + 1}/{total}{' (warm-up)' if step < a.warmup else ''}: "
              f"loss {lv:.4f}, {dt:.3f} s, {a.batch * a.seq / dt:.0f} tok/s",
              file=sys.stderr, flush=True)

    med = statistics.median(times)
    tokens = a.batch * a.seq
    flops = 3 * forward_flops(a, statistics.mean(masked))
    res = {
        "peer": "torch", "mode": a.mode, "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "layers": a.layers, "hidden": a.hidden, "heads": a.heads, "ffn": a.ffn,
        "vocab": a.vocab, "seq": a.seq, "batch": a.batch, "steps": a.steps,
        "warmup": a.warmup, "recompute": a.recompute, "attn": a.attn, "compile": a.compile,
        "dropout": a.dropout, "params": nparams,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / med,
        "tokens_per_s_mean": tokens * len(times) / sum(times),
        "step_s_median": med, "step_s_min": min(times), "step_s_max": max(times),
        "model_tflops": flops / med / 1e12,
        "max_memory_allocated": torch.cuda.max_memory_allocated() if device == "cuda" else None,
        "max_memory_reserved": torch.cuda.max_memory_reserved() if device == "cuda" else None,
        "host_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss_first": losses[0], "loss_last": losses[-1],
        "wall_s": time.perf_counter() - t_start,
        **info,
    }
    line = json.dumps(res)
    print(line, flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(line + "\n")
    if a.mode == "fsdp2-offload":
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
