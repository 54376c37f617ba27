#!/usr/bin/env bash
# tokenize_test.sh L2L_DATA PYENV: `l2l-data tokenize` against the reference
# libraries themselves. Trains a BPE tokenizer (Hugging Face tokenizers) and a
# SentencePiece model offline on this machine's licence texts, tokenizes
# .txt/.jsonl/.parquet inputs, and checks that the token file holds exactly
# each library's own encode of every document plus the separator, that its
# document index says where each starts, that the worker count does not change
# a byte, and that every bad input gives exit 2, one line naming the file (and
# line or row), and no output.
set -uo pipefail
tool=${1:?usage: tokenize_test.sh path/to/l2l-data path/to/pyenv.sh}
py=$("${2:?}") || { echo "FAIL: pyenv.sh could not make the venv" >&2; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cli.sh"
value() { sed -n "s/^$1=//p" out.txt; }

# --- fixtures: text, a BPE tokenizer in an HF-style directory, a SentencePiece model
mkdir hf
cp /usr/share/common-licenses/Apache-2.0 a.txt
cp /usr/share/common-licenses/MPL-2.0 b.txt
cp a.txt Apache-2.0  # no .txt: any other name is plain text
"$py" - <<'PY' || fail "fixtures: could not build the tokenizers"
import glob, json
import pyarrow as pa, pyarrow.parquet as pq
import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
text = open("a.txt").read() + open("b.txt").read()
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator([text], trainers.BpeTrainer(
    vocab_size=400, special_tokens=["<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save("hf/tokenizer.json")
json.dump({"eos_token": "<|endoftext|>"}, open("hf/tokenizer_config.json", "w"))
json.dump({"vocab_size": 512}, open("hf/config.json", "w"))
spm.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()), model_prefix="sp",
                               vocab_size=300, model_type="bpe")
paras = [p for p in text.split("\n\n") if p.strip()]
with open("c.jsonl", "w") as f:
    for p in paras[:40]:
        f.write(json.dumps({"id": len(p), "text": p}) + "\n")
    f.write("\n")  # a trailing blank line holds no document
pq.write_table(pa.table({"text": paras[40:90]}), "d.parquet", row_group_size=7)
PY

# --- good paths
ok hf tokenize --tokenizer hf --out hf.tok Apache-2.0 c.jsonl d.parquet b.txt
[ "$(value version)" = 2 ] || fail "hf: version $(value version)"
[ "$(value vocab_size)" = 512 ] || fail "hf: vocab_size $(value vocab_size), expected config.json's 512"
[ "$(value num_documents)" = 92 ] || fail "hf: $(value num_documents) documents, expected 2 + 40 + 50"
ok hf-info info hf.tok
[ "$(value num_documents)" = 92 ] || fail "info: num_documents $(value num_documents)"

# The oracle: tokenizers' and SentencePiece's own encode, document by document.
check_against_reference() {  # FILE KIND TOKENIZER SEPARATOR_ID
  "$py" - "$@" <<'PY'
import json, struct, sys
import numpy as np
import pyarrow.parquet as pq
path, kind, tokenizer, sep = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
raw = open(path, "rb").read()
magic, (version, width, vocab, _, n) = raw[:8], struct.unpack("<IIIIQ", raw[8:32])
assert magic == b"L2LTOK\0\0" and version == 2, (magic, version)
tokens = np.frombuffer(raw, dtype="<u2" if width == 2 else "<u4", count=n, offset=32)
at = 32 + n * width
ndocs = struct.unpack("<Q", raw[at:at + 8])[0]
starts = list(np.frombuffer(raw, dtype="<u8", count=ndocs, offset=at + 8)) + [n]
assert len(raw) == at + 8 + 8 * ndocs
docs = [open("a.txt").read()]
docs += [json.loads(l)["text"] for l in open("c.jsonl") if l.strip()]
docs += pq.read_table("d.parquet")["text"].to_pylist()
docs += [open("b.txt").read()]
if kind == "hf":
    from tokenizers import Tokenizer
    encode = lambda t: Tokenizer.from_file(tokenizer).encode(t).ids
else:
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    encode = sp.encode
assert ndocs == len(docs), (ndocs, len(docs))
for d, text in enumerate(docs):
    want = encode(text) + [sep]
    got = tokens[starts[d]:starts[d + 1]].tolist()
    assert got == want, f"document {d}: {got[:8]}... != reference {want[:8]}..."
PY
}
check_against_reference hf.tok hf hf/tokenizer.json 0 || fail "hf: token file differs from tokenizers' encode"

for w in 1 3; do
  ok "workers-$w" tokenize --tokenizer hf --out "w$w.tok" --workers "$w" a.txt c.jsonl d.parquet b.txt
  cmp -s hf.tok "w$w.tok" || fail "workers $w: output differs from the default worker count's"
done

ok sp tokenize --tokenizer sp.model --out sp.tok a.txt c.jsonl d.parquet b.txt
[ "$(value vocab_size)" = 300 ] || fail "sp: vocab_size $(value vocab_size)"
check_against_reference sp.tok sp sp.model 2 || fail "sp: token file differs from SentencePiece's encode"

# --- bad input: exit 2, one line naming the culprit, no output file
printf '{"text": "fine"}\n{"text": "cut\n' >broken.jsonl
printf '{"text": "fine"}\n{"body": "x"}\n' >nofield.jsonl
printf 'not a tokenizer' >junk.json
printf '\xff\xfe' >latin.txt
bad missing-input "input file nope.txt does not exist" o.tok tokenize --tokenizer hf --out o.tok a.txt nope.txt
bad not-json "broken.jsonl:2: not JSON" o.tok tokenize --tokenizer hf --out o.tok a.txt broken.jsonl
bad no-field "nofield.jsonl:2: no field 'text'" o.tok tokenize --tokenizer hf --out o.tok nofield.jsonl
bad not-utf8 "latin.txt: not UTF-8 (byte 0 is 0xff)" o.tok tokenize --tokenizer hf --out o.tok latin.txt
bad no-column "d.parquet: no column 'body'" o.tok \
  tokenize --tokenizer hf --out o.tok --field body d.parquet
bad bad-tokenizer "junk.json: the tokenizer does not load" o.tok \
  tokenize --tokenizer junk.json --out o.tok a.txt
bad no-tokenizer "tokenizer nothere.json does not exist" o.tok \
  tokenize --tokenizer nothere.json --out o.tok a.txt
bad above-vocab "a.txt: token id" o.tok tokenize --tokenizer hf --vocab-size 300 --out o.tok a.txt
bad no-separator "no end-of-document token known" o.tok \
  tokenize --tokenizer hf/tokenizer.json --out o.tok a.txt
printf '{"text": "x"}' >a.json
bad json-not-jsonl "a.json: a .json file; expected .jsonl" o.tok tokenize --tokenizer hf --out o.tok a.json
bad compressed "a.txt.gz: a compressed file" o.tok tokenize --tokenizer hf --out o.tok a.txt.gz
bad no-inputs "no input files given" o.tok tokenize --tokenizer hf --out o.tok
bad bad-workers "--workers value 0" o.tok tokenize --tokenizer hf --workers 0 --out o.tok a.txt
: >empty.txt
bad no-documents "no documents: every input is empty" o.tok \
  tokenize --tokenizer hf --separator none --out o.tok empty.txt
mkdir outdir
bad out-is-dir "--out outdir is a directory" "" tokenize --tokenizer hf --out outdir --force a.txt
cp hf.tok keep.tok
bad exists "keep.tok exists; pass --force" "" tokenize --tokenizer hf --out keep.tok a.txt
cmp -s hf.tok keep.tok || fail "exists: keep.tok was changed"
ok force tokenize --tokenizer hf --out keep.tok --force a.txt
[ "$(value num_documents)" = 1 ] || fail "force: keep.tok not replaced"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "tokenize: all checks passed"
