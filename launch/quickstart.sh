#!/usr/bin/env bash
# quickstart.sh: from a clean clone to a training run.
#   1. installs dependencies and builds (launch/setup.sh),
#   2. makes a synthetic corpus with l2l-data (an order-1 Markov source over 16
#      symbols; its unigram entropy and entropy rate are printed),
#   3. trains configs/tiny-bert.yaml on 2 ranks (about two minutes on 2 cores).
# Extra arguments go to l2l-train, e.g. --set train.steps=50.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
launch/setup.sh
bin=${L2L_BUILD_DIR:-$root/build}/bin
mkdir -p data
if [ ! -f data/markov-v16.tok ]; then
  "$bin/l2l-data" synthetic --out data/markov-v16.tok --tokens 2000000 --vocab 16 --order 1 \
    --seed 1 --concentration 0.1 | tee data/markov-v16.txt
fi
echo "quickstart: training configs/tiny-bert.yaml on 2 ranks"
# --resume auto: a second quickstart continues the first one's checkpoints
# (a run never starts over in a directory holding checkpoints it did not
# resume from); remove checkpoints/tiny-bert to train from scratch again.
launch/mpirun.sh -n 2 -- "$bin/l2l-train" --config configs/tiny-bert.yaml --resume auto "$@"
echo "quickstart: metrics are in runs/tiny-bert/metrics.jsonl (one JSON object per step)"
