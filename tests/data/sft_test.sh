#!/usr/bin/env bash
# sft_test.sh L2L_DATA L2L_TRAIN MPIEXEC PYENV: `l2l-data sft` and training on
# its output. A BPE tokenizer is trained offline and given a chat template with
# {% generation %} markers, so transformers' own assistant mask
# (return_assistant_tokens_mask) is the oracle: the file's loss mask must be
# exactly it for every example, and its tokens exactly apply_chat_template's.
# Then a 2-rank --eval-only over the file (data.sampling: examples) must count
# exactly the masked tokens as targets. Bad input: exit 2, one line, no file.
set -uo pipefail
tool=${1:?usage: sft_test.sh L2L_DATA L2L_TRAIN MPIEXEC PYENV}
train=${2:?} mpiexec=${3:?}
py=$("${4:?}") || { echo "FAIL: pyenv.sh could not make the venv" >&2; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cli.sh"
value() { sed -n "s/^$1=//p" out.txt; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

mkdir chat
"$py" - <<'PY' || fail "fixtures: could not build the tokenizer"
import json
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
text = open("/usr/share/common-licenses/Apache-2.0").read()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator([text], trainers.BpeTrainer(
    vocab_size=400, special_tokens=["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save("chat/tokenizer.json")
template = ("{% for m in messages %}<|{{ m['role'] }}|>"
            "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|endoftext|>"
            "{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
json.dump({"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast",
           "chat_template": template}, open("chat/tokenizer_config.json", "w"))
json.dump({"vocab_size": 512}, open("chat/config.json", "w"))
paras = [l.strip() for l in text.splitlines() if len(l.strip()) > 20]
with open("ex.jsonl", "w") as f:
    for i in range(0, 40, 2):
        q, a = paras[i][:150], paras[i + 1][:150]
        if i % 4 == 0:
            f.write(json.dumps({"prompt": q, "response": a}) + "\n")
        else:
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "Answer in licence text."},
                {"role": "user", "content": q}, {"role": "assistant", "content": a},
                {"role": "user", "content": "More?"}, {"role": "assistant", "content": q[:40]}]}) + "\n")
    f.write(json.dumps({"prompt": "Summarise.", "response": " ".join(paras[:8])}) + "\n")  # too long
PY

ok sft-skip sft --tokenizer chat --out skip.tok --seq-len 160 --too-long skip ex.jsonl
[ "$(value num_documents)" = 20 ] && [ "$(value skipped_too_long)" = 1 ] ||
  fail "sft-skip: $(cat out.txt)"
loss_tokens=$(value loss_tokens)
ok sft-info info skip.tok
[ "$(value loss_tokens)" = "$loss_tokens" ] || fail "info: loss_tokens $(value loss_tokens), sft said $loss_tokens"
for w in 1 3; do
  ok "sft-workers-$w" sft --tokenizer chat --out "w$w.tok" --seq-len 160 --too-long skip \
    --workers "$w" ex.jsonl
  cmp -s skip.tok "w$w.tok" || fail "workers $w: output differs"
done
"$py" - <<'PY' || fail "sft: tokens or loss mask differ from transformers' apply_chat_template"
import json, os, struct
import numpy as np
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained("chat")
raw = open("skip.tok", "rb").read()
version, width, vocab, flags, n = struct.unpack("<IIIIQ", raw[8:32])
assert version == 2 and flags == 1 and vocab == 512, (version, flags, vocab)
tokens = np.frombuffer(raw, "<u2", n, 32)
at = 32 + 2 * n
docs = struct.unpack("<Q", raw[at:at + 8])[0]
starts = list(np.frombuffer(raw, "<u8", docs, at + 8)) + [n]
mask = np.frombuffer(raw, "u1", n, at + 8 + 8 * docs)
assert len(raw) == at + 8 + 8 * docs + n
records = [json.loads(l) for l in open("ex.jsonl")][:-1]  # the last one was skipped
assert len(records) == docs
for d, r in enumerate(records):
    msgs = r.get("messages") or [{"role": "user", "content": r["prompt"]},
                                 {"role": "assistant", "content": r["response"]}]
    want = tok.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                   return_assistant_tokens_mask=True)
    got_ids = tokens[starts[d]:starts[d + 1]].tolist()
    got_mask = mask[starts[d]:starts[d + 1]].tolist()
    assert got_ids == list(want["input_ids"]), f"example {d}: tokens differ"
    assert got_mask == list(want["assistant_masks"]), f"example {d}: {got_mask} != {want['assistant_masks']}"
    assert sum(got_mask) > 0
PY

ok sft-truncate sft --tokenizer chat --out cut.tok --seq-len 160 --too-long truncate ex.jsonl
[ "$(value num_documents)" = 21 ] && [ "$(value truncated)" = 1 ] || fail "sft-truncate: $(cat out.txt)"

# Training on it: every masked token is a target, nothing else (eval-only over
# the file at 2 ranks; fresh weights via a step-0 checkpoint of a 1-step run).
cat >sft.yaml <<YAML
model: {kind: llama, layers: 2, hidden: 32, heads: 4, kv_heads: 2, ffn: 64, vocab: 512, seq_len: 160}
data: {path: skip.tok, sampling: examples, eval_fraction: 0.0, eval_path: skip.tok}
train: {steps: 2, global_batch: 4, micro_batch: 1, lr: 1.0e-3, warmup_steps: 0}
checkpoint: {dir: ck}
log: {dir: run, every_steps: 1}
YAML
"$mpiexec" 2 "$train" --config sft.yaml >train.txt 2>err.txt || fail "sft training: $(cat err.txt)"
"$mpiexec" 2 "$train" --config sft.yaml --eval-only --resume auto >eval.txt 2>err.txt ||
  fail "sft eval-only: $(cat err.txt)"
targets=$(sed -n 's/^eval_targets=//p' eval.txt)
[ "$targets" = "$loss_tokens" ] || fail "eval counts $targets targets, the loss mask has $loss_tokens"
# Packed several to a row (attention and positions per example): the same
# targets and, to rounding, the same loss as one example per row.
"$mpiexec" 2 "$train" --config sft.yaml --eval-only --resume auto --set data.sampling=packed \
  --set data.doc_attention=within --set data.doc_positions=restart >packed.txt 2>err.txt ||
  fail "sft eval-only, packed: $(cat err.txt)"
grep -q "examples packed into" packed.txt || fail "packed: no fill line: $(cat packed.txt)"
[ "$(sed -n 's/^eval_targets=//p' packed.txt)" = "$loss_tokens" ] ||
  fail "packed eval counts other targets: $(cat packed.txt)"
python3 - "$(sed -n 's/^eval_loss=//p' eval.txt)" "$(sed -n 's/^eval_loss=//p' packed.txt)" <<'PY' ||
import sys
a, b = map(float, sys.argv[1:])
assert abs(a - b) <= 1e-5 * a, f"examples {a} vs packed {b}"
PY
  fail "packed eval loss differs from one example per row"
"$mpiexec" 2 "$train" --config sft.yaml --set data.path=cut.tok --set checkpoint.dir=ck2 \
  --set train.steps=1 --set model.seq_len=100 >bad.txt 2>err.txt
grep -q "examples are longer than seq_len + 1 = 101 tokens" err.txt ||
  fail "a too-long example at train time: $(cat err.txt)"

# --- bad input
printf '{"prompt": "p"}\n' >noresp.jsonl
printf '{"messages": [{"role": "user", "content": "q"}]}\n' >noasst.jsonl
printf '{"prompt": "p", "response": "r"}\n{"prompt": \n' >broken.jsonl
mkdir plain && cp chat/tokenizer.json plain/
bad too-long "ex.jsonl:21: the example has" o.tok sft --tokenizer chat --out o.tok --seq-len 160 ex.jsonl
bad no-response "noresp.jsonl:1: no string field 'response'" o.tok \
  sft --tokenizer chat --out o.tok --seq-len 64 noresp.jsonl
bad no-assistant "noasst.jsonl:1: no message has role 'assistant'" o.tok \
  sft --tokenizer chat --out o.tok --seq-len 64 noasst.jsonl
bad not-json "broken.jsonl:2: not JSON" o.tok sft --tokenizer chat --out o.tok --seq-len 64 broken.jsonl
bad no-template "plain: the tokenizer has no chat template" o.tok \
  sft --tokenizer plain --out o.tok --seq-len 64 ex.jsonl
bad nothing-left "no examples left to write" o.tok \
  sft --tokenizer chat --out o.tok --seq-len 4 --too-long truncate ex.jsonl
bad not-jsonl "ex.txt: expected a .jsonl file" o.tok sft --tokenizer chat --out o.tok --seq-len 64 ex.txt

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "sft: all checks passed"
