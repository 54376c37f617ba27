#!/usr/bin/env bash
# data_cli_test.sh L2L_DATA: drives the l2l-data tool end to end.
# Checks the outputs of each verb, and that every bad input gives exit code 2,
# exactly one line on stderr naming the culprit, and no output file.
set -uo pipefail
tool=${1:?usage: data_cli_test.sh path/to/l2l-data}
source "$(dirname "${BASH_SOURCE[0]}")/../lib/cli.sh"

# value KEY: the value of KEY=... in out.txt.
value() { sed -n "s/^$1=//p" out.txt; }

# --- good paths
ok help --help
grep -q "l2l-data synthetic" out.txt || fail "help: no usage text"

ok synthetic synthetic --out syn.tok --tokens 20000 --vocab 32 --order 1 --seed 3
rate=$(value entropy_rate_nats)
uni=$(value unigram_entropy_nats)
[ -n "$rate" ] && [ -n "$uni" ] || fail "synthetic: missing entropy lines: $(cat out.txt)"
# The entropy rate is a floor below the unigram entropy, which is below log(32).
awk -v r="$rate" -v u="$uni" 'BEGIN { exit !(r > 0 && r < u && u < log(32)) }' ||
  fail "synthetic: expected 0 < rate ($rate) < unigram ($uni) < log 32"
[ "$(value num_tokens)" = 20000 ] || fail "synthetic: num_tokens $(value num_tokens)"
[ ! -e syn.tok.tmp ] || fail "synthetic: left syn.tok.tmp"

ok info info syn.tok
[ "$(value version)" = 1 ] || fail "info: version $(value version)"
[ "$(value token_dtype)" = uint16 ] || fail "info: dtype $(value token_dtype)"
[ "$(value vocab_size)" = 32 ] || fail "info: vocab $(value vocab_size)"
[ "$(value num_tokens)" = 20000 ] || fail "info: num_tokens $(value num_tokens)"
[ "$(value unigram_entropy_nats)" = "$uni" ] || fail "info: unigram entropy differs from synthetic's"

# Same seed, same bytes.
ok synthetic-again synthetic --out syn2.tok --tokens 20000 --vocab 32 --order 1 --seed 3
cmp -s syn.tok syn2.tok || fail "synthetic: same seed gave different files"

printf 'abc' >a.txt
printf '\xc3\xa9\n' >b.txt
ok text text --out text.tok a.txt b.txt
ok text-info info text.tok
[ "$(value num_tokens)" = 6 ] || fail "text: expected 6 byte tokens, got $(value num_tokens)"
[ "$(value vocab_size)" = 256 ] || fail "text: vocab $(value vocab_size)"
# Header (32 bytes) + 6 uint16 tokens; 'a' is 0x61 0x00.
[ "$(wc -c <text.tok)" -eq 44 ] || fail "text: file is $(wc -c <text.tok) bytes, expected 44"
[ "$(od -An -tx1 -j32 -N2 text.tok | tr -d ' ')" = 6100 ] || fail "text: first token is not 'a'"

# --- bad input: exit 2, one line, no file
bad no-verb "missing verb" ""
bad unknown-verb "unknown verb 'frobnicate'" "" frobnicate
bad unknown-flag "unknown flag --bogus" out.tok synthetic --out out.tok --tokens 10 --bogus 1
bad missing-tokens "missing required flag --tokens" out.tok synthetic --out out.tok
bad bad-number "flag --tokens value '12x'" out.tok synthetic --out out.tok --tokens 12x
bad bad-vocab "flag --vocab value '1'" out.tok synthetic --out out.tok --tokens 10 --vocab 1
bad bad-concentration "flag --concentration value 'abc'" out.tok \
  synthetic --out out.tok --tokens 10 --concentration abc
bad table-too-big "exceeds the table limit" out.tok \
  synthetic --out out.tok --tokens 10 --vocab 256 --order 5
bad missing-input "input file nope.txt does not exist" out.tok text --out out.tok a.txt nope.txt
bad no-inputs "no input files" out.tok text --out out.tok
bad missing-dir "cannot create nodir/out.tok.tmp" nodir/out.tok text --out nodir/out.tok a.txt
bad info-missing "token file nope.tok does not exist" "" info nope.tok
mkfifo fifo.tok fifo.txt
# A FIFO would block open(2) forever: refused at once.
bad info-fifo "token file: fifo.tok: not a regular file (a FIFO)" "" info fifo.tok
bad text-fifo "fifo.txt: not a regular file (a FIFO)" out.tok text --out out.tok fifo.txt

# Corrupt files: wrong magic, truncated, token >= vocab.
cp text.tok magic.tok && printf 'X' | dd of=magic.tok bs=1 seek=0 conv=notrunc status=none
bad wrong-magic "magic.tok: magic is \"X2LTOK" "" info magic.tok
head -c 40 text.tok >short.tok
bad truncated "short.tok: file is 40 bytes, expected 44" "" info short.tok
# vocab_size := 97, so token 'a' (97) at byte offset 32 is out of range.
cp text.tok vocab.tok && printf '\x61\x00' | dd of=vocab.tok bs=1 seek=16 conv=notrunc status=none
bad token-range "vocab.tok: token 0 at byte offset 32 is 97, expected < vocab_size 97" "" \
  info vocab.tok

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "data_cli: all checks passed"
