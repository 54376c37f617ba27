# Shared helpers for the end-to-end tool tests; source after setting `tool`
# (the binary under test). Creates and enters a scratch directory removed on
# exit, and counts failures in `failures`.
#
#   ok NAME ARGS...                    exit 0, empty stderr; stdout in out.txt
#   bad NAME TEXT OUTFILE ARGS...      exit 2, empty stdout, exactly one stderr
#                                      line containing TEXT, and neither
#                                      OUTFILE nor OUTFILE.tmp* left behind
#                                      (OUTFILE "" = no output file involved)
#   flip_byte VALUES FILE              flips one bit inside the tensor whose
#                                      first four float32 values are the lines
#                                      of VALUES (`l2l-ckpt dump | head -4`),
#                                      found by their bytes, unique in FILE
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

ok() {
  local name=$1
  shift
  "$tool" "$@" >out.txt 2>err.txt
  local rc=$?
  [ "$rc" -eq 0 ] || fail "$name: exit $rc, expected 0 (stderr: $(cat err.txt))"
  [ ! -s err.txt ] || fail "$name: unexpected stderr: $(cat err.txt)"
}

bad() {
  local name=$1 text=$2 outfile=$3
  shift 3
  "$tool" "$@" >out.txt 2>err.txt
  local rc=$?
  [ "$rc" -eq 2 ] || fail "$name: exit $rc, expected 2 (stderr: $(cat err.txt))"
  [ ! -s out.txt ] || fail "$name: unexpected stdout: $(cat out.txt)"
  [ "$(wc -l <err.txt)" -eq 1 ] || fail "$name: expected one stderr line, got: $(cat err.txt)"
  grep -qF -- "$text" err.txt || fail "$name: stderr '$(cat err.txt)' does not contain '$text'"
  if [ -n "$outfile" ]; then
    [ ! -e "$outfile" ] || fail "$name: left $outfile behind"
    ! compgen -G "$outfile.tmp*" >/dev/null || fail "$name: left $(compgen -G "$outfile.tmp*") behind"
  fi
}

flip_byte() {
  python3 - "$1" "$2" <<'EOF'
import struct, sys
vals = [float(l) for l in open(sys.argv[1])]
pattern = struct.pack("<4f", *vals)
data = bytearray(open(sys.argv[2], "rb").read())
at = data.find(pattern)
assert at >= 0 and data.find(pattern, at + 1) < 0, "pattern not unique"
data[at + 5] ^= 0x40
open(sys.argv[2], "wb").write(data)
EOF
}
