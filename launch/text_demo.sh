#!/usr/bin/env bash
# text_demo.sh: a small llama learns this machine's own text.
#   1. builds l2l (launch/setup.sh) and the Python tools' venv (launch/pyenv.sh),
#   2. trains a byte-level BPE tokenizer (Hugging Face tokenizers, offline) on
#      the licence texts in /usr/share/common-licenses, GPL-2 held out,
#   3. tokenizes them with it (l2l-data tokenize): data/licenses/{train,heldout}.tok,
#   4. trains configs/tiny-llama-text.yaml on 2 ranks, evaluating on the held-out
#      text every 50 steps (about 1.5 minutes on 2 cores),
#   5. reports the final weights' held-out perplexity (l2l-train --eval-only)
#      and draws the run (l2l-plot): runs/tiny-llama-text/run.png.
# Extra arguments go to l2l-train, e.g. --set train.steps=50. A second run
# continues the first one's checkpoints; remove checkpoints/tiny-llama-text
# and runs/tiny-llama-text to start over.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
launch/setup.sh
python=$(launch/pyenv.sh)
bin=${L2L_BUILD_DIR:-$root/build}/bin
lic=/usr/share/common-licenses
out=data/licenses
mkdir -p "$out"
# Each licence once (GPL, LGPL and GFDL are links to their latest version).
mapfile -t train < <(find "$lic" -maxdepth 1 -type f ! -name GPL-2 | sort)
if [ ! -f "$out/tokenizer/tokenizer.json" ]; then
  "$python" python/l2l_bpe.py --vocab-size 1024 --out "$out/tokenizer" "${train[@]}"
fi
if [ ! -f "$out/train.tok" ]; then
  "$bin/l2l-data" tokenize --tokenizer "$out/tokenizer" --out "$out/train.tok" "${train[@]}"
fi
if [ ! -f "$out/heldout.tok" ]; then
  "$bin/l2l-data" tokenize --tokenizer "$out/tokenizer" --out "$out/heldout.tok" "$lic/GPL-2"
fi
echo "text_demo: training configs/tiny-llama-text.yaml on 2 ranks"
launch/mpirun.sh -n 2 -- "$bin/l2l-train" --config configs/tiny-llama-text.yaml --resume auto "$@"
echo "text_demo: held-out perplexity of the final weights"
launch/mpirun.sh -n 2 -- "$bin/l2l-train" --config configs/tiny-llama-text.yaml --eval-only \
  --resume auto "$@"
"$bin/l2l-plot" runs/tiny-llama-text --out runs/tiny-llama-text/run.png --force \
  --title "tiny-llama-text: a llama learning /usr/share/common-licenses"
echo "text_demo: the run's picture is runs/tiny-llama-text/run.png"
