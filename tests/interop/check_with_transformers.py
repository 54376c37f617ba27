#!/usr/bin/env python3
"""l2l's Hugging Face interop checked with transformers itself.

For every fixture under tests/fixtures/hf (tiny transformers models):
  1. round trip: l2l-ckpt import, then export --format hf; transformers'
     from_pretrained must load the export with no missing or unexpected keys,
     every tensor equal to the original's, and the original's logits;
  2. fine-tune: l2l-train --init-from the import for a few steps on a synthetic
     corpus, export, load with transformers, and compare transformers' logits
     with l2l's own (l2l-ckpt logits) on fixed ids: 1e-4 relative;
  3. bf16 export of the fine-tuned model loads as bfloat16.

Needs a Python with torch and transformers (not part of CI; see
tests/fixtures/make_hf_fixtures.py for the venv) and a build of l2l:

  python tests/interop/check_with_transformers.py [--build build] [--keep DIR]

Prints one line per check and a summary; exits 1 on any failure.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import torch
import transformers as T
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "hf")
failures = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd, **kw):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
    return r.stdout


def auto_class(config):
    return T.AutoModelForMaskedLM if config["model_type"] == "bert" else T.AutoModelForCausalLM


def load(path, dtype=None):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    kwargs = {"output_loading_info": True, "attn_implementation": "eager"}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model, info = auto_class(cfg).from_pretrained(path, **kwargs)
    model.eval()
    return model, info


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def l2l_logits(bin_dir, ckpt, ids, out):
    text = "/".join(",".join(str(int(t)) for t in row) for row in ids)
    run([os.path.join(bin_dir, "l2l-ckpt"), "logits", ckpt, "--ids", text, "--out", out])
    return load_file(out)["logits"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--keep", help="work in this directory and keep it")
    args = ap.parse_args()
    bin_dir = os.path.join(args.build, "bin")
    work = args.keep or tempfile.mkdtemp(prefix="l2l-hf-check-")
    os.makedirs(work, exist_ok=True)
    print("transformers %s, torch %s, work dir %s" % (T.__version__, torch.__version__, work))
    for name in sorted(os.listdir(FIXTURES)):
        src = os.path.join(FIXTURES, name)
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        expected = load_file(os.path.join(src, "l2l_expected.safetensors"))
        ids, mask = expected["input_ids"].long(), expected["attention_mask"].long()
        seq = ids.shape[1]
        # 1. Round trip.
        run([os.path.join(bin_dir, "l2l-ckpt"), "import", src, "--out", d + "/ckpt",
             "--seq-len", str(seq)])
        run([os.path.join(bin_dir, "l2l-ckpt"), "export", d + "/ckpt", "--format", "hf",
             "--out", d + "/export"])
        original, _ = load(src)
        model, info = load(d + "/export")
        problems = {k: v for k, v in info.items() if v and k != "mismatched_keys"}
        check(not problems and not info.get("mismatched_keys"),
              "%s: from_pretrained(export) loads every tensor, no missing/unexpected keys %s" %
              (name, problems or ""))
        same = all(torch.equal(a, b) for a, b in
                   zip(original.state_dict().values(), model.state_dict().values()))
        check(same and list(original.state_dict()) == list(model.state_dict()),
              "%s: every tensor equals the original's" % name)
        kw = {"input_ids": ids, "attention_mask": mask}
        if name == "bert":
            kw["token_type_ids"] = expected["token_type_ids"].long()
        with torch.no_grad():
            logits = model(**kw).logits
        check(rel(logits, expected["logits"]) < 1e-5,
              "%s: export's logits = the original's (max rel err %.2e)" %
              (name, rel(logits, expected["logits"])))
        # 2. Fine-tune with l2l, then compare transformers' logits with l2l's.
        with open(os.path.join(src, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        data = os.path.join(d, "corpus.tok")
        run([os.path.join(bin_dir, "l2l-data"), "synthetic", "--out", data, "--tokens", "20000",
             "--vocab", str(vocab - 1), "--order", "1"])
        run([os.path.join(bin_dir, "l2l-train"), "--config", d + "/ckpt/config.yaml",
             "--set", "data.path=" + data, "--set", "train.steps=4", "--set", "train.warmup_steps=1",
             "--set", "train.lr=1e-2", "--set", "train.global_batch=4", "--set",
             "train.eval_every_steps=0", "--set", "checkpoint.dir=" + d + "/ft",
             "--set", "log.dir=" + d + "/runs", "--set", "exec.device=cpu"])
        run([os.path.join(bin_dir, "l2l-ckpt"), "export", d + "/ft", "--format", "hf",
             "--out", d + "/ft-export"])
        tuned, info = load(d + "/ft-export")
        check(not info["missing_keys"] and not info["unexpected_keys"],
              "%s: fine-tuned export loads with no missing/unexpected keys" % name)
        changed = any(not torch.equal(a, b) for a, b in
                      zip(original.state_dict().values(), tuned.state_dict().values()))
        check(changed, "%s: fine-tuning changed the weights" % name)
        probe = torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            theirs = tuned(input_ids=probe).logits
        ours = l2l_logits(bin_dir, d + "/ft", probe.tolist(), d + "/ft-logits.safetensors")
        check(rel(ours, theirs) < 1e-4,
              "%s: fine-tuned model's logits, l2l vs transformers (max rel err %.2e)" %
              (name, rel(ours, theirs)))
        # 3. bf16.
        run([os.path.join(bin_dir, "l2l-ckpt"), "export", d + "/ft", "--format", "hf",
             "--dtype", "bf16", "--out", d + "/ft-export-bf16"])
        half, info = load(d + "/ft-export-bf16", dtype="auto")
        check(not info["missing_keys"] and not info["unexpected_keys"] and
              next(half.parameters()).dtype == torch.bfloat16,
              "%s: bf16 export loads as bfloat16 with no missing/unexpected keys" % name)
    print("%d failure(s)" % len(failures))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
