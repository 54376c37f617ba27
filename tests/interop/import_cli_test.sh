#!/usr/bin/env bash
# import_cli_test.sh L2L_CKPT L2L_TRAIN L2L_DATA MPIEXEC FIXTURES: the Hugging
# Face round trip through the tools, and every refusal on the way.
#   import (2 ranks) -> verify -> l2l-train fine-tune from config.yaml (2 ranks)
#   -> export --format hf (tokenizer files carried along) -> import again;
#   the weights survive bitwise (dumps compared), sharded export re-imports.
# Each bad input (broken or mismatched HF directories, refused architectures,
# an existing --out, bad flags; at 1 and 2 ranks) must give exit code 2, one
# stderr line naming the file/key/tensor, nothing on stdout, and leave no
# output directory and no OUT.tmp-* behind. Crafted inputs are edited copies
# of the committed transformers fixtures (python3 stdlib only).
set -uo pipefail
tool=$(realpath "${1:?usage: import_cli_test.sh L2L_CKPT L2L_TRAIN L2L_DATA MPIEXEC FIXTURES}")
train=$(realpath "${2:?missing L2L_TRAIN}")
data=$(realpath "${3:?missing L2L_DATA}")
mpiexec=$(realpath "${4:?missing MPIEXEC}")
fixtures=$(realpath "${5:?missing FIXTURES}")
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cli.sh"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

has() { grep -qF -- "$1" out.txt || fail "$2: output lacks '$1' (got: $(head -c 400 out.txt))"; }
no_tmp() {
  compgen -G "$1.tmp-*" >/dev/null && fail "$2: left $(compgen -G "$1.tmp-*") behind"
  return 0
}
# bad_import NAME TEXT NP OUT ARGS...: like `bad` (lib/cli.sh) under NP ranks;
# neither OUT nor OUT.tmp-* may exist afterwards.
bad_import() {
  local name=$1 text=$2 np=$3 out=$4
  shift 4
  "$mpiexec" "$np" "$tool" "$@" >out.txt 2>err.txt
  local rc=$?
  [ "$rc" -eq 2 ] || fail "$name: exit $rc, expected 2 (stderr: $(head -c 600 err.txt))"
  [ ! -s out.txt ] || fail "$name: unexpected stdout: $(head -c 400 out.txt)"
  [ "$(grep -c . err.txt)" -eq 1 ] || fail "$name: expected one stderr line, got: $(cat err.txt)"
  grep -qF -- "$text" err.txt || fail "$name: stderr '$(cat err.txt)' does not contain '$text'"
  [ ! -e "$out" ] || fail "$name: left $out behind"
  no_tmp "$out" "$name"
}
# edit_config DIR PYTHON: runs PYTHON with `c` = DIR/config.json, writes it back.
edit_config() {
  python3 - "$1/config.json" "$2" <<'EOF'
import json, sys
path, code = sys.argv[1], sys.argv[2]
c = json.load(open(path))
exec(code)
json.dump(c, open(path, "w"), indent=2)
EOF
}
copy_fixture() { rm -rf "$2" && cp -r "$fixtures/$1" "$2" && chmod -R u+w "$2"; }

llama=$fixtures/hf/llama-gqa-tied  # vocab 96, tied, GQA, tokenizer files

# --- import at 2 ranks
"$mpiexec" 2 "$tool" import "$llama" --out m >out.txt 2>err.txt
rc=$?
[ "$rc" -eq 0 ] || { cat err.txt >&2; echo "FAIL: import (2 ranks): exit $rc" >&2; exit 1; }
[ ! -s err.txt ] || fail "import: stderr: $(cat err.txt)"
no_tmp m import
# The parameter count from the safetensors header, read independently.
want_params=$(python3 - "$llama/model.safetensors" <<'EOF'
import json, struct, sys
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n))
total = 0
for k, v in h.items():
    if k == "__metadata__": continue
    e = 1
    for d in v["shape"]: e *= d
    total += e
print(total)
EOF
)
has "imported $llama: $want_params parameters" import
has ", 2 rank(s)" import
has "kept for export: generation_config.json tokenizer.json tokenizer_config.json" import
for f in m/step-00000000.h5 m/latest m/config.yaml m/hf/config.json m/hf/tokenizer.json \
  m/hf/tokenizer_config.json m/hf/generation_config.json; do
  [ -f "$f" ] || fail "import: no $f"
done
cmp -s m/hf/tokenizer.json "$llama/tokenizer.json" || fail "import: tokenizer.json differs"
grep -qE '^  init_from: "m"$' m/config.yaml || fail "import: config.yaml lacks init_from: m"
grep -qE '^  kind: llama$' m/config.yaml || fail "import: config.yaml lacks kind: llama"
ok verify verify m
has "ok: m/step-00000000.h5" verify
ok inspect inspect m
has "step: 0" inspect
has "total parameters: $want_params" inspect

# --- the import's config.yaml fine-tunes as it is (data and length edited)
"$data" synthetic --out d.tok --tokens 20000 --vocab 96 --order 1 --seed 3 >/dev/null
"$mpiexec" 2 "$train" --config m/config.yaml --set data.path=d.tok --set train.steps=2 \
  --set train.global_batch=4 --set train.warmup_steps=1 --set checkpoint.dir=ft \
  --set checkpoint.every_steps=2 --set log.dir=run >train.txt 2>&1 ||
  { cat train.txt >&2; fail "fine-tune from the import's config.yaml"; }
grep -qF "l2l: initialised from m/step-00000000.h5" train.txt ||
  fail "fine-tune: did not initialise from the import ($(head -c 600 train.txt))"
[ -f ft/step-00000002.h5 ] || fail "fine-tune: no ft/step-00000002.h5"

# --- export the fine-tuned checkpoint for transformers; import it again
ok export-hf export ft --format hf --out ft-hf
has "wrote ft-hf: llama, " export-hf
has "config.json based on m/hf/config.json; copied from there: generation_config.json tokenizer.json tokenizer_config.json" \
  export-hf
has "export verified:" export-hf
no_tmp ft-hf export-hf
cmp -s ft-hf/tokenizer.json "$llama/tokenizer.json" || fail "export-hf: tokenizer.json differs"
python3 - "$llama/config.json" ft-hf/config.json <<'EOF' || fail "export-hf: config.json"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for k in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
          "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
          "rms_norm_eps", "tie_word_embeddings", "pad_token_id", "bos_token_id",
          "eos_token_id", "max_position_embeddings"):
    assert a.get(k) == b.get(k), f"{k}: {a.get(k)!r} vs {b.get(k)!r}"
assert b["architectures"] == ["LlamaForCausalLM"], b["architectures"]
EOF
"$mpiexec" 1 "$tool" import ft-hf --out m2 >out.txt 2>err.txt || fail "re-import: $(cat err.txt)"
for t in embedding.tok_emb blocks.1.attn.k.weight blocks.0.mlp.down.weight head.ln.gain; do
  "$tool" dump ft --tensor "$t" >a.txt 2>err.txt || fail "dump ft $t: $(cat err.txt)"
  "$tool" dump m2 --tensor "$t" >b.txt 2>err.txt || fail "dump m2 $t: $(cat err.txt)"
  [ -s a.txt ] && cmp -s a.txt b.txt || fail "re-import: $t differs from the fine-tuned weights"
done
"$tool" dump ft --tensor blocks.0.mlp.down.weight >a.txt
"$tool" dump m --tensor blocks.0.mlp.down.weight >c.txt
[ "$(wc -l <a.txt)" -eq $((48 * 32)) ] || fail "dump: blocks.0.mlp.down.weight is not [32, 48]"
cmp -s a.txt c.txt && fail "fine-tune: blocks.0.mlp.down.weight unchanged by two steps"

# Export says where config.json came from and whether tokenizer files came along:
# an hf/ without tokenizer files; no hf/ at all (trained from scratch).
mkdir -p notok/hf && cp m/step-00000000.h5 notok/ && cp m/hf/config.json notok/hf/
ok export-notok export notok/step-00000000.h5 --format hf --out notok-hf
has "config.json based on notok/hf/config.json" export-notok
has "no tokenizer files in notok/hf: copy them into notok-hf yourself" export-notok
grep -v init_from m/config.yaml >scratch.yaml
"$mpiexec" 1 "$train" --config scratch.yaml --set data.path=d.tok --set train.steps=1 \
  --set train.global_batch=4 --set train.warmup_steps=0 \
  --set checkpoint.dir=scratch --set log.dir=run-scratch >train.txt 2>&1 ||
  { cat train.txt >&2; fail "training from scratch"; }
ok export-scratch export scratch --format hf --out scratch-hf
has "no hf/ directory found" export-scratch
[ -f scratch-hf/config.json ] && [ ! -e scratch-hf/tokenizer.json ] ||
  fail "export-scratch: expected config.json and no tokenizer.json"

# Sharded export (a 20 KB limit: several shards and an index) imports again.
ok export-sharded export m --format hf --out sharded --max-shard-size 20KB --dtype bf16
[ -f sharded/model.safetensors.index.json ] || fail "export-sharded: no index"
[ "$(ls sharded/model-*-of-*.safetensors | wc -l)" -ge 2 ] || fail "export-sharded: < 2 shards"
"$mpiexec" 2 "$tool" import sharded --out m3 >out.txt 2>err.txt || fail "sharded import: $(cat err.txt)"
has "$want_params parameters" sharded-import
# bf16 weights and the other architectures import too.
for fx in hf-bf16/gpt2 hf/bert hf/qwen2-bias hf/mistral; do
  "$mpiexec" 1 "$tool" import "$fixtures/$fx" --out "imp-${fx//\//-}" >out.txt 2>err.txt ||
    fail "import $fx: $(cat err.txt)"
done

# An --out with a trailing slash names the same directory (and its .tmp sibling).
ok import-slash import "$llama" --out slash/
[ -f slash/latest ] || fail "import-slash: no slash/latest"
no_tmp slash import-slash
ok export-slash export slash --format hf --out slash-hf/
[ -f slash-hf/config.json ] || fail "export-slash: no slash-hf/config.json"
no_tmp slash-hf export-slash
# BERT: the tokenizer's [MASK] id becomes data.mask_token_id.
copy_fixture hf/bert bert-tok
printf '[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n' >bert-tok/vocab.txt
ok import-bert-mask import bert-tok --out bert-m
grep -qE '^  mask_token_id: 4$' bert-m/config.yaml || fail "import-bert-mask: no mask_token_id: 4"
[ -f bert-m/hf/vocab.txt ] || fail "import-bert-mask: vocab.txt not kept"

# --- bad inputs: nothing written, the ranks agree (2-rank cases)
latest_before=$(cat m/latest)
bad_import not-a-dir "nodir: not a directory" 1 x import nodir --out x
bad_import missing-out "missing required flag --out" 1 x import "$llama"
bad_import seq-len "--seq-len 'abc', expected a positive integer" 1 x \
  import "$llama" --out x --seq-len abc
"$mpiexec" 2 "$tool" import "$llama" --out m >out.txt 2>err.txt
[ $? -eq 2 ] && grep -qF "m: already exists; import writes a new directory" err.txt ||
  fail "existing --out: $(cat err.txt)"
[ "$(cat m/latest)" = "$latest_before" ] && [ -f m/step-00000000.h5 ] ||
  fail "existing --out: m was touched"
no_tmp m existing-out

mkdir -p noweights && cp "$llama/config.json" noweights/
bad_import no-weights "noweights: no model.safetensors or model.safetensors.index.json" 2 x \
  import noweights --out x
mkdir -p nocfg && cp "$llama/model.safetensors" nocfg/
bad_import no-config "nocfg/config.json: cannot open" 1 x import nocfg --out x
copy_fixture hf/llama-gqa-tied badjson && echo '{"model_type": ' >badjson/config.json
bad_import bad-json "badjson/config.json: not valid JSON" 1 x import badjson --out x

copy_fixture hf/llama-gqa-tied t5 && edit_config t5 'c["model_type"] = "t5"'
bad_import model-type "model_type: expected gpt2, bert, llama, mistral or qwen2, got \"t5\"" 1 x \
  import t5 --out x
copy_fixture hf/llama-gqa-tied abias && edit_config abias 'c["attention_bias"] = True'
bad_import llama-attention-bias "abias/config.json: attention_bias:" 2 x import abias --out x
copy_fixture hf/mistral window && edit_config window 'c["sliding_window"] = 4'
bad_import mistral-sliding-window "window/config.json: sliding_window:" 1 x import window --out x
copy_fixture hf/llama-gqa-tied yarn &&
  edit_config yarn 'c["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}'
bad_import rope-yarn "yarn/config.json: rope_parameters" 1 x import yarn --out x
copy_fixture hf/llama-gqa-tied ffn && edit_config ffn 'c["intermediate_size"] = 40'
bad_import wrong-shape "has shape [48, 32], config.json implies [40, 32]" 2 x import ffn --out x
copy_fixture hf/llama-gqa-tied deeper && edit_config deeper 'c["num_hidden_layers"] = 3'
bad_import missing-tensor "the weights lack tensor 'model.layers.2." 1 x import deeper --out x
copy_fixture hf/llama-gqa-tied shallower && edit_config shallower 'c["num_hidden_layers"] = 1'
bad_import extra-tensor "is not a parameter of the Llama family" 1 x import shallower --out x
copy_fixture hf/llama-gqa-tied trunc &&
  truncate -s -100 trunc/model.safetensors
bad_import truncated "trunc/model.safetensors: not a valid safetensors file" 2 x import trunc --out x

# Sharded directories: a shard missing, an index that disagrees with a shard.
cp -r sharded lost && chmod -R u+w lost && rm "$(ls lost/model-*-of-*.safetensors | head -1)"
bad_import missing-shard ": missing shard (listed in lost/model.safetensors.index.json" 2 x \
  import lost --out x
cp -r sharded liar && chmod -R u+w liar
python3 - liar/model.safetensors.index.json <<'EOF'
import json, sys
idx = json.load(open(sys.argv[1]))
wm = idx["weight_map"]
files = sorted(set(wm.values()))
name = next(k for k, v in wm.items() if v == files[0])
wm[name] = files[1]  # listed for the wrong shard
json.dump(idx, open(sys.argv[1], "w"))
EOF
bad_import index-disagrees "disagrees with liar/model.safetensors.index.json" 1 x import liar --out x

# A failure after the weights are written (a side file that cannot be read)
# still leaves nothing behind.
copy_fixture hf/llama-gqa-tied eio && ln -sf /proc/self/mem eio/tokenizer.json
bad_import side-file-eio "eio/tokenizer.json: read failed (Input/output error)" 2 x \
  import eio --out x

# --- export refusals (one rank; OUT never written)
# A corrupt layer late in the checkpoint: the export fails part way through
# writing and removes what it wrote. The byte flipped is found by the first
# four values of blocks.1.mlp.down.weight (the last layer's).
mkdir -p flip && cp m/step-00000000.h5 m/config.yaml flip/ && cp -r m/hf flip/
"$tool" dump m/step-00000000.h5 --tensor blocks.1.mlp.down.weight | head -4 >down.txt
flip_byte down.txt flip/step-00000000.h5 || fail "could not flip a byte"
bad export-flipped "checksum mismatch" x export flip/step-00000000.h5 --format hf --out x
bad export-exists "ft-hf: already exists; export never replaces a file" "" \
  export ft --format hf --out ft-hf
bad export-qwen2 "qwen2 always has q/k/v biases" x export m --format hf --out x --model-type qwen2
bad export-gpt2 "export: model type 'gpt2' is not one of llama, mistral, qwen2 for a kind llama model" x \
  export m --format hf --out x --model-type gpt2
bad export-shard-size "--max-shard-size must be > 0" x \
  export m --format hf --out x --max-shard-size 0
bad export-flags "--model-type and --max-shard-size go with --format hf" x \
  export m --out x --model-type llama
no_tmp x export

# --- l2l-train --init-from refusals (2 ranks agree; nothing trained)
# train_bad NAME TEXT ARGS...: l2l-train at 2 ranks, exit 2, one stderr line.
train_bad() {
  local name=$1 text=$2
  shift 2
  rm -rf run2 ft2
  "$mpiexec" 2 "$train" --config m/config.yaml --set data.path=d.tok --set train.global_batch=4 \
    --set train.steps=1 --set train.warmup_steps=0 --set checkpoint.dir=ft2 --set log.dir=run2 \
    "$@" >out.txt 2>err.txt
  local rc=$?
  [ "$rc" -eq 2 ] || fail "$name: exit $rc, expected 2 ($(head -c 600 err.txt))"
  [ "$(grep -c . err.txt)" -eq 1 ] || fail "$name: expected one stderr line: $(cat err.txt)"
  grep -qF -- "$text" err.txt || fail "$name: stderr '$(cat err.txt)' lacks '$text'"
  [ ! -e ft2/latest ] || fail "$name: wrote a checkpoint"
}
train_bad init-from-empty "--init-from needs a checkpoint path, got an empty one" --init-from ""
train_bad init-from-other-model "the checkpoint's model differs from this config's: model.ffn" \
  --set model.ffn=64
train_bad init-from-missing "nothere" --init-from nothere
train_bad init-from-in-checkpoint-dir "lies in checkpoint.dir m, whose saves would prune it" \
  --set checkpoint.dir=m
# The same directory under other spellings, and through symbolic links.
train_bad init-from-in-checkpoint-dir-slash "lies in checkpoint.dir ./m/" --set checkpoint.dir=./m/
train_bad init-from-in-checkpoint-dir-abs "lies in checkpoint.dir $PWD/m" --set checkpoint.dir="$PWD/m"
ln -sfn m mlink && ln -sf m/step-00000000.h5 link.h5
train_bad init-from-in-checkpoint-dir-dirlink "lies in checkpoint.dir mlink" --set checkpoint.dir=mlink
train_bad init-from-in-checkpoint-dir-filelink "train.init_from link.h5 lies in checkpoint.dir m" \
  --init-from link.h5 --set checkpoint.dir=m
[ "$(cat m/latest)" = "$latest_before" ] && [ -f m/step-00000000.h5 ] ||
  fail "init-from-in-checkpoint-dir: m was touched"
[ -f m/step-00000000.h5 ] || fail "init-from-in-checkpoint-dir: the import is gone"

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "import_cli: all checks passed"
