"""l2l-data tokenize: text corpora to an l2l token file, by the model's own tokenizer.

Run through `l2l-data tokenize` (which execs this in the project venv,
launch/pyenv.sh). Tokenization is done by the reference libraries, never
re-implemented: Hugging Face `tokenizers` for a tokenizer.json, SentencePiece
for a tokenizer.model. Output is a version-2 token file (docs/data-format.md):
the tokens, then where each document starts.

Documents: a plain text file (.txt, or any name but .jsonl, .parquet, .json
and compressed ones) is one document; each line of a .jsonl file is one (its
--field, default "text"); each row of a .parquet file is one (column --field).
Each document is encoded with the tokenizer's own special tokens (its
post-processor: BOS for Llama, [CLS] ... [SEP] for BERT), then the separator
(EOS) is appended unless the encoding already ends with it. Output is the same
bytes for any --workers: documents are encoded independently and written in
input order.

Any bad input prints one line `l2l-data: ...` naming the file (and line or
row) on stderr and exits 2; the output is written to a temporary file renamed
into place at the end, so nothing partial is left. An existing --out is not
replaced without --force.
"""

import argparse
import collections
import json
import multiprocessing
import os
import struct
import sys
import time
from array import array

MAGIC = b"L2LTOK\0\0"
VERSION_DOCUMENTS = 2
MAX_UINT16_VOCAB = 65536
CHUNK_DOCS = 256  # documents per worker task
CHUNK_BYTES = 1 << 20  # ... or this much text, whichever comes first


class Bad(Exception):
    """Bad input: one line on stderr, exit 2."""


# --- the tokenizer


class Tokenizer:
    """A loaded tokenizer: encode(texts) -> lists of ids, plus its metadata.

    `spec` is a tokenizer.json, a SentencePiece .model, or a directory holding
    one of them (a Hugging Face model directory; then its config.json and
    tokenizer_config.json name the vocabulary size and the EOS token).
    """

    def __init__(self, spec):
        self.spec = spec
        self.config = {}
        self.tok_config = {}
        path = spec
        if os.path.isdir(spec):
            self.config = _read_json_if_present(os.path.join(spec, "config.json"))
            self.tok_config = _read_json_if_present(os.path.join(spec, "tokenizer_config.json"))
            for name in ("tokenizer.json", "tokenizer.model"):
                if os.path.isfile(os.path.join(spec, name)):
                    path = os.path.join(spec, name)
                    break
            else:
                raise Bad(f"{spec}: no tokenizer.json or tokenizer.model in this directory")
        elif not os.path.exists(spec):
            raise Bad(f"tokenizer {spec} does not exist")
        self.path = path
        self.kind = "sentencepiece" if path.endswith(".model") else "tokenizers"
        try:
            if self.kind == "sentencepiece":
                import sentencepiece

                self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
            else:
                from tokenizers import Tokenizer as HfTokenizer

                self._hf = HfTokenizer.from_file(path)
        except Exception as e:  # the libraries raise their own types
            raise Bad(f"{path}: the tokenizer does not load ({_one_line(e)})")

    def vocab_size(self):
        if self.kind == "sentencepiece":
            return self._sp.get_piece_size()
        return self._hf.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token):
        if self.kind == "sentencepiece":
            i = self._sp.piece_to_id(token)
            return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i
        return self._hf.token_to_id(token)

    def default_separator(self):
        """(id, where it came from) of the end-of-document token, or None."""
        for key in ("eos_token", "sep_token"):
            token = self.tok_config.get(key)
            if isinstance(token, dict):
                token = token.get("content")
            if isinstance(token, str) and self.token_to_id(token) is not None:
                return self.token_to_id(token), f"tokenizer_config.json {key} {token!r}"
            if key == "eos_token":
                eos = self.config.get("eos_token_id")
                if isinstance(eos, list) and eos:
                    eos = eos[0]
                if isinstance(eos, int) and not isinstance(eos, bool) and eos >= 0:
                    return eos, "config.json eos_token_id"
        if self.kind == "sentencepiece" and self._sp.eos_id() >= 0:
            return self._sp.eos_id(), "the SentencePiece model's eos id"
        return None

    def encode(self, texts):
        if self.kind == "sentencepiece":
            return self._sp.encode(list(texts))
        return [e.ids for e in self._hf.encode_batch(list(texts))]


def _read_json_if_present(path):
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise Bad(f"{path}: not readable JSON ({_one_line(e)})")
    if not isinstance(value, dict):
        raise Bad(f"{path}: expected a JSON object")
    return value


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


# --- workers: each loads the tokenizer once

_worker_tokenizer = None


def _worker_init(spec):
    global _worker_tokenizer
    # Parallelism comes from the worker processes; one thread each.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = Tokenizer(spec)


def _worker_encode(texts):
    return _worker_tokenizer.encode(texts)


# --- inputs: (where, text) documents in order


class Input:
    """One input file; documents() yields (where, text) and tracks progress."""

    def __init__(self, path, field):
        self.path = path
        self.field = field
        ext = os.path.splitext(path)[1].lower()
        if ext in (".gz", ".bz2", ".xz", ".zst", ".zip"):
            raise Bad(f"{path}: a compressed file; decompress it first (.txt, .jsonl, .parquet)")
        if ext == ".json":
            raise Bad(f"{path}: a .json file; expected .jsonl (one JSON object per line), "
                      ".parquet or plain text")
        self.ext = ext if ext in (".jsonl", ".parquet") else ".txt"  # any other name: plain text
        if not os.path.exists(path):
            raise Bad(f"input file {path} does not exist")
        if not os.path.isfile(path):
            raise Bad(f"input file {path}: not a regular file")
        self.size = os.path.getsize(path)
        self.done_bytes = 0  # progress, in units of this file's size

    def documents(self):
        try:
            if self.ext == ".txt":
                yield from self._txt()
            elif self.ext == ".jsonl":
                yield from self._jsonl()
            else:
                yield from self._parquet()
        except OSError as e:
            raise Bad(f"input file {self.path}: {e.strerror or _one_line(e)}")
        self.done_bytes = self.size

    def _decode(self, raw, where):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Bad(f"{where}: not UTF-8 (byte {e.start} is 0x{raw[e.start]:02x})")

    def _txt(self):
        with open(self.path, "rb") as f:
            raw = f.read()
        yield self.path, self._decode(raw, self.path)

    def _jsonl(self):
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                self.done_bytes += len(raw)
                where = f"{self.path}:{number}"
                line = self._decode(raw, where)
                if not line.strip():
                    continue  # blank lines (a trailing newline) hold no document
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise Bad(f"{where}: not JSON ({_one_line(e)})")
                yield where, self._field(record, where)

    def _parquet(self):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as e:
            raise Bad(f"{self.path}: not a readable parquet file ({_one_line(e)})")
        if self.field not in pf.schema_arrow.names:
            raise Bad(f"{self.path}: no column '{self.field}' (columns: "
                      f"{', '.join(pf.schema_arrow.names)})")
        rows = max(1, pf.metadata.num_rows)
        row = 0
        for batch in pf.iter_batches(columns=[self.field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                where = f"{self.path}: row {row}"
                if not isinstance(value, str):
                    raise Bad(f"{where}: column '{self.field}' is "
                              f"{'null' if value is None else type(value).__name__}, expected a string")
                row += 1
                self.done_bytes = self.size * row // rows
                yield where, value

    def _field(self, record, where):
        if not isinstance(record, dict):
            raise Bad(f"{where}: expected a JSON object with field '{self.field}'")
        if self.field not in record:
            raise Bad(f"{where}: no field '{self.field}'")
        value = record[self.field]
        if not isinstance(value, str):
            raise Bad(f"{where}: field '{self.field}' is {type(value).__name__}, expected a string")
        return value


def chunks(inputs):
    """Lists of (where, text), a few hundred documents or about 1 MiB each."""
    chunk, size = [], 0
    for inp in inputs:
        for where, text in inp.documents():
            chunk.append((where, text))
            size += len(text)
            if len(chunk) >= CHUNK_DOCS or size >= CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


# --- output


class TokenFileWriter:
    """Streams a version-2 token file to a private temporary beside `path`."""

    def __init__(self, path, vocab_size, force):
        self.path = path
        self.vocab_size = vocab_size
        self.width = 2 if vocab_size <= MAX_UINT16_VOCAB else 4
        if os.path.exists(path) and not force:
            raise Bad(f"{path} exists; pass --force to replace it")
        self.tmp = f"{path}.tmp.{os.getpid()}"
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise Bad(f"cannot create {self.tmp}: {e.strerror}")
        self.f = os.fdopen(fd, "wb")
        self.f.write(b"\0" * 32)  # the header, written last
        self.num_tokens = 0
        self.starts = array("Q")

    def add(self, ids):
        self.starts.append(self.num_tokens)
        a = array("H" if self.width == 2 else "I", ids)
        if sys.byteorder != "little":
            a.byteswap()
        a.tofile(self.f)
        self.num_tokens += len(ids)

    def commit(self):
        index = array("Q", self.starts)
        if sys.byteorder != "little":
            index.byteswap()
        self.f.write(struct.pack("<Q", len(self.starts)))
        index.tofile(self.f)
        self.f.seek(0)
        self.f.write(MAGIC + struct.pack("<IIIIQ", VERSION_DOCUMENTS, self.width,
                                         self.vocab_size, 0, self.num_tokens))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.rename(self.tmp, self.path)

    def abandon(self):
        self.f.close()
        try:
            os.remove(self.tmp)
        except OSError:
            pass


# --- progress


class Progress:
    """A one-line progress bar on stderr (a terminal only): share, rate, ETA."""

    def __init__(self, inputs, enabled):
        self.inputs = inputs
        self.total = max(1, sum(i.size for i in inputs))
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, tokens, force=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        done = min(self.total, sum(i.done_bytes for i in self.inputs))
        elapsed = max(1e-9, now - self.start)
        share = done / self.total
        eta = (elapsed / share - elapsed) if share > 0 else 0
        bar = "#" * int(30 * share)
        sys.stderr.write(f"\rtokenize [{bar:<30}] {100 * share:5.1f}%  "
                         f"{done / elapsed / 1e6:7.2f} MB/s  {tokens / elapsed / 1e6:6.2f} M tok/s  "
                         f"ETA {int(eta) // 60}:{int(eta) % 60:02d} ")
        sys.stderr.flush()

    def finish(self, tokens):
        if self.enabled:
            self.update(tokens, force=True)
            sys.stderr.write("\n")


# --- main


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="l2l-data tokenize",
        description="Tokenize .txt/.jsonl/.parquet inputs with the model's tokenizer into a "
        "version-2 l2l token file (docs/data-format.md).")
    p.add_argument("--tokenizer", required=True,
                   help="tokenizer.json, a SentencePiece .model, or a Hugging Face model directory")
    p.add_argument("--out", required=True, help="the token file to write")
    p.add_argument("--field", default="text", help="JSONL field / parquet column (default text)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: the number of cores); output does not depend on it")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="the model's vocabulary (default: config.json vocab_size beside the "
                   "tokenizer, else the tokenizer's own size)")
    p.add_argument("--separator", default=None,
                   help="token appended after each document (default: the tokenizer's EOS, else "
                   "its separator); 'none' appends nothing")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("inputs", nargs="*", metavar="IN")

    # argparse exits 2 with usage text; l2l wants one line.
    def error(message):
        raise Bad(f"tokenize: {message}")

    p.error = error
    args = p.parse_args(argv)
    if not args.inputs:
        raise Bad("tokenize: no input files given (IN...)")
    if args.workers < 1:
        raise Bad(f"tokenize: flag --workers value {args.workers}, expected >= 1")
    if args.vocab_size is not None and not 1 <= args.vocab_size <= 2**32 - 1:
        raise Bad(f"tokenize: flag --vocab-size value {args.vocab_size}, expected in [1, 2^32)")
    return args


def resolve_vocab(tok, flag):
    if flag is not None:
        return flag, "--vocab-size"
    v = tok.config.get("vocab_size")
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v, "config.json vocab_size"
    return tok.vocab_size(), "the tokenizer's vocabulary"


def resolve_separator(tok, flag):
    if flag == "none":
        return None, "none"
    if flag is not None:
        i = tok.token_to_id(flag)
        if i is None:
            raise Bad(f"--separator {flag!r}: not a token of {tok.path}")
        return i, f"--separator {flag!r}"
    found = tok.default_separator()
    if found is None:
        raise Bad(f"{tok.path}: no end-of-document token known (no eos_token or sep_token in "
                  "tokenizer_config.json, no eos_token_id in config.json); pass --separator "
                  "TOKEN or --separator none")
    return found


def run(argv):
    args = parse_args(argv)
    tok = Tokenizer(args.tokenizer)
    vocab, vocab_from = resolve_vocab(tok, args.vocab_size)
    sep, sep_from = resolve_separator(tok, args.separator)
    if sep is not None and sep >= vocab:
        raise Bad(f"separator id {sep} ({sep_from}) is >= the vocabulary size {vocab} ({vocab_from})")
    out_abs = os.path.abspath(args.out)
    inputs = [Input(path, args.field) for path in args.inputs]
    for inp in inputs:
        if os.path.abspath(inp.path) == out_abs:
            raise Bad(f"{inp.path}: is both an input and --out")

    progress = Progress(inputs, args.progress == "always" or
                        (args.progress == "auto" and sys.stderr.isatty()))
    writer = TokenFileWriter(args.out, vocab, args.force)
    pool = None
    try:
        if args.workers > 1:
            pool = multiprocessing.get_context("fork").Pool(
                args.workers, initializer=_worker_init, initargs=(args.tokenizer,))
        pending = collections.deque()  # (chunk, AsyncResult or ids), in input order

        def drain(limit):
            while len(pending) > limit:
                chunk, result = pending.popleft()
                try:
                    encoded = result.get() if pool else result
                except Exception as e:
                    raise Bad(f"{chunk[0][0]}: a worker failed to encode ({_one_line(e)})")
                for (where, _), ids in zip(chunk, encoded):
                    if sep is not None and (not ids or ids[-1] != sep):
                        ids = list(ids) + [sep]
                    if not ids:
                        continue  # an empty document without a separator adds nothing
                    top = max(ids)
                    if top >= vocab:
                        raise Bad(f"{where}: token id {top} is >= the vocabulary size {vocab} "
                                  f"({vocab_from})")
                    writer.add(ids)
                progress.update(writer.num_tokens)

        for chunk in chunks(inputs):
            texts = [text for _, text in chunk]
            pending.append((chunk, pool.apply_async(_worker_encode, (texts,)) if pool
                            else tok.encode(texts)))
            drain(2 * args.workers)
        drain(0)
        if pool:
            pool.close()
            pool.join()
            pool = None
        progress.finish(writer.num_tokens)
        writer.commit()
    except BaseException:
        if pool:
            pool.terminate()
        writer.abandon()
        raise
    print(f"file={args.out}\nversion={VERSION_DOCUMENTS}\n"
          f"token_dtype={'uint16' if writer.width == 2 else 'uint32'}\nvocab_size={vocab}\n"
          f"num_tokens={writer.num_tokens}\nnum_documents={len(writer.starts)}\n"
          f"separator={'none' if sep is None else sep}\ntokenizer={tok.path}")


def main():
    try:
        run(sys.argv[1:])
    except Bad as e:
        sys.stderr.write(f"l2l-data: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
