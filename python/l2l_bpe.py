"""Train a byte-level BPE tokenizer (Hugging Face tokenizers, offline) on text files.

    python l2l_bpe.py --vocab-size N --out DIR IN...

Writes DIR/tokenizer.json and DIR/tokenizer_config.json (eos_token
<|endoftext|>, id 0), the layout `l2l-data tokenize --tokenizer DIR` and
transformers read. Used by launch/text_demo.sh; deterministic for the same
inputs in the same order. Bad input: one line on stderr, exit 2.
"""

import argparse
import json
import os
import sys

EOS = "<|endoftext|>"


def main():
    p = argparse.ArgumentParser(prog="l2l_bpe.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--out", required=True, help="directory to write (must not hold a tokenizer)")
    p.add_argument("inputs", nargs="+", metavar="IN")
    args = p.parse_args()

    def bad(message):
        sys.stderr.write(f"l2l_bpe.py: {message}\n")
        sys.exit(2)

    if not 257 <= args.vocab_size <= 1 << 20:
        bad(f"--vocab-size {args.vocab_size}, expected in [257, 2^20] (256 bytes + {EOS})")
    for path in args.inputs:
        if not os.path.isfile(path):
            bad(f"input file {path} does not exist or is not a regular file")
    target = os.path.join(args.out, "tokenizer.json")
    config = os.path.join(args.out, "tokenizer_config.json")
    for path in (target, config):
        if os.path.exists(path):
            bad(f"{path} exists; remove it to train a new tokenizer")

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    try:
        tok.train(args.inputs, trainer)
        os.makedirs(args.out, exist_ok=True)
        tok.save(target)
        with open(config, "w") as f:
            json.dump({"eos_token": EOS, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
    except Exception as e:  # tokenizers' own errors (input not UTF-8, ...) or a write
        for path in (target, config):
            if os.path.exists(path):
                os.remove(path)
        bad(f"training the tokenizer failed: {' '.join(str(e).split())}")
    print(f"tokenizer={target}\nvocab_size={tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
