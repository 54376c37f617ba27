#!/usr/bin/env bash
# ckpt_cli_test.sh L2L_CKPT CKPT_MAKE_FIXTURE MPIEXEC: drives l2l-ckpt end to end
# on a checkpoint of a small BERT (2 blocks, hidden 24, ffn 40, vocab 37,
# seq_len 12) written by 2 ranks. Checks inspect / verify / export / dump
# output, that the exported safetensors file holds exactly the checkpoint's
# master weights (read back by an independent stdlib-Python parser, and by
# the `safetensors` package when it is installed), and that every bad input
# gives exit code 2, one line on stderr, nothing on stdout and no output file.
set -uo pipefail
tool=${1:?usage: ckpt_cli_test.sh L2L_CKPT CKPT_MAKE_FIXTURE MPIEXEC}
fixture=${2:?missing CKPT_MAKE_FIXTURE}
mpiexec=${3:?missing MPIEXEC}
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cli.sh"

has() { grep -qF -- "$1" out.txt || fail "$2: output lacks '$1'"; }

"$mpiexec" 2 "$fixture" --dir ck --step 10 >fixture.txt 2>&1 || {
  cat fixture.txt >&2
  echo "FAIL: ckpt_make_fixture could not write the fixture" >&2
  exit 1
}
file=ck/step-00000010.h5

# --- inspect
ok help --help
has "l2l-ckpt export FILE|DIR --out" help
ok inspect-dir inspect ck
has "file: $file" inspect
has "format: l2l-checkpoint version 1" inspect
has "step: 10" inspect
has "tokens_seen: 960" inspect  # 10 steps x 8 samples x 12 tokens
has "world_size: 2" inspect
has "seed: 7" inspect
has "    hidden: 24" inspect  # the config YAML, indented
has "layers: 4" inspect
has "layer 1 (block 0): 16 tensors, 4480 parameters" inspect
grep -qE '^  attn\.k\.weight +\[24, 24\] +576$' out.txt || fail "inspect: no attn.k.weight line"
# BERT ties the decoder to tok_emb: the head keeps only its bias.
has "layer 3 (head): 5 tensors, 685 parameters" inspect
# embedding (37+12+2)*24 + 2*24 = 1272; block 4480; head 24*24+24+48+37 = 685
has "total parameters: 10917" inspect
has "total bytes: master " inspect
ok inspect-file inspect "$file"
has "file: $file" inspect-file

# --- verify
ok verify verify ck
[ "$(cat out.txt)" = "ok: $file" ] || fail "verify: printed '$(cat out.txt)'"
ok verify-file verify "$file"

# --- export
ok export-fp32 export ck --out w32.safetensors
has "export verified: 42 tensors" export-fp32
! compgen -G "w32.safetensors.tmp*" >/dev/null || fail "export-fp32: left a temporary file"
ok export-bf16 export ck --out w16.safetensors --format safetensors --dtype bf16
has "export verified: 42 tensors" export-bf16

# Dumps of a few tensors (all layers' kinds) as the reference values.
tensors="embedding.tok_emb blocks.0.attn.q.weight blocks.1.mlp.fc2.bias head.decoder.bias"
for t in $tensors; do
  ok "dump-$t" dump ck --tensor "$t"
  cp out.txt "dump-$t.txt"
done
ok dump-moment dump ck --tensor head.ln.bias --part adam_v
[ "$(wc -l <out.txt)" -eq 24 ] || fail "dump-moment: expected 24 values"

# Independent reader: the Python standard library only.
python3 - "$tensors" <<'EOF' || fail "stdlib safetensors check"
import json, struct, sys

def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 8 == 0, "header not padded to 8 bytes"
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    assert meta == {"format": "pt", "l2l_step": "10"}, meta
    body = data[8 + n:]
    end = 0
    for name, e in header.items():  # in file order: contiguous
        b, t = e["data_offsets"]
        assert b == end, (name, b, end)
        end = t
    assert end == len(body), "data section size"
    return header, body

h32, b32 = load("w32.safetensors")
h16, b16 = load("w16.safetensors")
assert list(h32) == list(h16), "the two exports name different tensors"
assert len(h32) == 42, len(h32)
want_names = ["embedding.tok_emb", "embedding.pos_emb", "embedding.type_emb",
              "embedding.ln.gain", "embedding.ln.bias", "blocks.0.attn.q.weight"]
assert list(h32)[:6] == want_names, list(h32)[:6]
assert list(h32)[-1] == "head.decoder.bias"
assert h32["blocks.1.attn.v.weight"]["shape"] == [24, 24]

def bf16(x):  # round to nearest even, as l2l::F32ToBF16
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF

for name in sys.argv[1].split():
    ref = [float(line) for line in open("dump-%s.txt" % name)]
    e32, e16 = h32[name], h16[name]
    assert e32["dtype"] == "F32" and e16["dtype"] == "BF16"
    n = 1
    for d in e32["shape"]:
        n *= d
    assert n == len(ref), (name, n, len(ref))
    got32 = struct.unpack("<%df" % n, b32[e32["data_offsets"][0]:e32["data_offsets"][1]])
    got16 = struct.unpack("<%dH" % n, b16[e16["data_offsets"][0]:e16["data_offsets"][1]])
    for i in range(n):
        want = struct.unpack("<f", struct.pack("<f", ref[i]))[0]  # exact: %.9g round-trips
        assert got32[i] == want, (name, i, got32[i], want)
        assert got16[i] == bf16(want), (name, i, got16[i], bf16(want))
print("stdlib check ok")
EOF

# The real safetensors package, when installed.
if python3 -c "import safetensors, numpy" 2>/dev/null; then
  python3 - "$tensors" <<'EOF' || fail "python safetensors check"
import sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

w = load_file("w32.safetensors")
assert len(w) == 35
for name in sys.argv[1].split():
    ref = np.array([float(l) for l in open("dump-%s.txt" % name)], dtype=np.float32)
    got = w[name].reshape(-1)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), ref.view(np.uint32)), name
assert w["head.decoder.weight"].shape == (24, 37)
with safe_open("w16.safetensors", "numpy") as f:  # bf16: numpy has no dtype; check the header
    assert len(list(f.keys())) == 35
    assert f.metadata() == {"format": "pt", "l2l_step": "10"}
print("python safetensors check ok")
EOF
else
  echo "SKIP: python3 safetensors/numpy not installed; checked with the stdlib parser only"
fi

# --- bad input
bad no-verb "missing command" ""
bad unknown-verb "unknown command 'frob'" "" frob ck
bad unknown-flag "unknown flag --bogus for 'inspect'" "" inspect ck --bogus 1
bad no-operand "verify: missing FILE|DIR" "" verify
bad missing-file "nope.h5: no such file" "" verify nope.h5
mkdir empty
bad no-latest "empty: no checkpoint (no 'latest' file)" "" inspect empty
printf 'model: bert\n' >text.h5
bad not-hdf5 "text.h5: not an HDF5 file" "" verify text.h5
head -c 5000 "$file" >trunc.h5
bad truncated "trunc.h5: file is truncated or corrupt (HDF5 could not open it)" "" verify trunc.h5
# Flip one byte inside blocks.0.mlp.fc1.weight (layer 1's master dataset),
# found by the bytes of its first four values.
"$tool" dump ck --tensor blocks.0.mlp.fc1.weight | head -4 >fc1.txt
cp "$file" flipped.h5
flip_byte fc1.txt flipped.h5 || fail "could not flip a byte"
bad flipped "flipped.h5: dataset /layers/00001/master checksum mismatch (stored 0x" "" \
  verify flipped.h5
bad export-flipped "checksum mismatch" out.safetensors export flipped.h5 --out out.safetensors
bad export-no-out "export: missing required flag --out" "" export ck
bad export-dtype "--dtype 'fp16', expected fp32 or bf16" x.safetensors \
  export ck --out x.safetensors --dtype fp16
bad export-format "--format 'gguf', expected safetensors or hf" x.safetensors \
  export ck --out x.safetensors --format gguf
bad export-no-dir "nodir/x.safetensors.tmp-" nodir/x.safetensors \
  export ck --out nodir/x.safetensors
echo "not ours" >theirs.safetensors
"$tool" export ck --out theirs.safetensors >out.txt 2>err.txt
[ $? -eq 2 ] && grep -qF "theirs.safetensors: already exists; export never replaces a file" err.txt ||
  fail "export-existing: $(cat err.txt)"
[ "$(cat theirs.safetensors)" = "not ours" ] || fail "export-existing: replaced the user's file"
! compgen -G "theirs.safetensors.tmp*" >/dev/null || fail "export-existing: left a temporary file"
# A deleted layer group (the head, the last one) leaves a file that looks like
# a smaller model: every reader checks the layers against the file's config.
cp "$(ls ck/step-*.h5 | tail -1)" headless.h5
"$mpiexec" 1 "$fixture" --drop-dataset headless.h5 --name /layers/00003 >/dev/null 2>&1 ||
  fail "could not drop the head layer"
for verb in verify inspect; do
  bad "$verb-headless" "headless.h5: 3 layers, its config's model has 4" "" $verb headless.h5
done
bad export-headless "headless.h5: 3 layers, its config's model has 4" h.safetensors \
  export headless.h5 --out h.safetensors

# Export over the checkpoint it reads (or over `latest`): refused, untouched.
own=$(ls ck/step-*.h5 | tail -1)
sum=$(md5sum "$own" ck/latest)
"$tool" export ck --out "$own" >out.txt 2>err.txt
[ $? -eq 2 ] && grep -qF "$own: already exists; export never replaces a file" err.txt ||
  fail "export-over-input: $(cat err.txt)"
"$tool" export ck --out ck/latest >out.txt 2>err.txt
[ $? -eq 2 ] || fail "export-over-latest: exit $?"
[ "$sum" = "$(md5sum "$own" ck/latest)" ] || fail "export-over-input: the checkpoint changed"
! compgen -G "ck/*.tmp*" >/dev/null || fail "export-over-input: left a temporary file"
bad export-truncated "file is truncated or corrupt" x.safetensors export trunc.h5 --out x.safetensors
bad dump-unknown "no tensor 'blocks.9.x'" "" dump ck --tensor blocks.9.x
bad dump-part "--part 'grad', expected master, adam_m or adam_v" "" \
  dump ck --tensor head.ln.bias --part grad

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "ckpt_cli: all checks passed"
