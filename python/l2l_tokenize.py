"""l2l-data tokenize / sft: text and chat examples to an l2l token file, by the model's tokenizer.

`sft` (run_sft) renders JSONL examples with the tokenizer's chat template
(transformers' apply_chat_template) and marks the assistant's tokens in the
file's loss mask; the rest of this text is about `tokenize`.

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
import signal
import struct
import sys
import time
from array import array

MAGIC = b"L2LTOK\0\0"
VERSION_DOCUMENTS = 2
FLAG_LOSS_MASK = 1  # a loss mask (one uint8 per token) follows the document index
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

    def encode(self, chunk):
        """Ids of each (where, text) of `chunk`."""
        texts = [text for _, text in chunk]
        if self.kind == "sentencepiece":
            return self._sp.encode(texts)
        return [e.ids for e in self._hf.encode_batch(texts)]


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


_TOKENIZE, _SFT = "tokenize", "sft"


def _worker_init(spec):
    global _worker_tokenizer
    # Parallelism comes from the worker processes; one thread each.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    kind, path = spec
    # The parent handles a stop: it removes its file and terminates the pool
    # (SIGTERM, which must end a worker quietly, without the parent's handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_tokenizer = Tokenizer(path) if kind == _TOKENIZE else ChatTokenizer(path)


def _worker_encode(chunk):
    return _worker_tokenizer.encode(chunk)


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
                except (ValueError, RecursionError) as e:
                    raise Bad(f"{where}: not JSON ({_one_line(e) if isinstance(e, ValueError) else 'nested too deeply'})")
                yield where, record if self.field is None else self._field(record, where)

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
            size += len(text) if isinstance(text, str) else 1024  # an sft record: a guess
            if len(chunk) >= CHUNK_DOCS or size >= CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
    if chunk:
        yield chunk


# --- output


class TokenFileWriter:
    """Streams a version-2 token file to a private temporary beside `path`."""

    def __init__(self, path, vocab_size, force, loss_mask=False):
        self.path = path
        self.loss_mask = array("B") if loss_mask else None  # one 0/1 per token (flag 1)
        self.vocab_size = vocab_size
        self.width = 2 if vocab_size <= MAX_UINT16_VOCAB else 4
        if os.path.isdir(path):
            raise Bad(f"--out {path} is a directory")
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

    def add(self, ids, mask=None):
        self.starts.append(self.num_tokens)
        if self.loss_mask is not None:
            self.loss_mask.extend(mask)
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
        if self.loss_mask is not None:
            self.loss_mask.tofile(self.f)
        self.f.seek(0)
        flags = FLAG_LOSS_MASK if self.loss_mask is not None else 0
        self.f.write(MAGIC + struct.pack("<IIIIQ", VERSION_DOCUMENTS, self.width,
                                         self.vocab_size, flags, self.num_tokens))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.rename(self.tmp, self.path)

    def summary(self):
        """The written file's key=value lines, as l2l-data info names them."""
        return (f"file={self.path}\nversion={VERSION_DOCUMENTS}\n"
                f"token_dtype={'uint16' if self.width == 2 else 'uint32'}\n"
                f"vocab_size={self.vocab_size}\nnum_tokens={self.num_tokens}\n"
                f"num_documents={len(self.starts)}\n")

    def abandon(self):
        try:
            self.f.close()  # may fail flushing (disk full): remove the file anyway
        except OSError:
            pass
        finally:
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
    add_common_flags(p, "tokenize", "IN")
    p.add_argument("--separator", default=None,
                   help="token appended after each document (default: the tokenizer's EOS, else "
                   "its separator); 'none' appends nothing")
    return check_common_flags(p.parse_args(argv), "tokenize", "IN...")


def add_common_flags(p, verb, metavar):
    """The flags tokenize and sft share, and one-line errors."""
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: the number of cores); output does not depend on it")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="the model's vocabulary (default: config.json vocab_size beside the "
                   "tokenizer, else the tokenizer's own size)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("inputs", nargs="*", metavar=metavar)

    # argparse exits 2 with usage text; l2l wants one line.
    def error(message):
        raise Bad(f"{verb}: {message}")

    p.error = error


def check_common_flags(args, verb, what):
    if not args.inputs:
        raise Bad(f"{verb}: no input files given ({what})")
    if args.workers < 1:
        raise Bad(f"{verb}: flag --workers value {args.workers}, expected >= 1")
    if args.vocab_size is not None and not 1 <= args.vocab_size <= 2**32 - 1:
        raise Bad(f"{verb}: flag --vocab-size value {args.vocab_size}, expected in [1, 2^32)")
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
    inputs, progress = open_inputs(args, args.field)
    writer = TokenFileWriter(args.out, vocab, args.force)

    def emit(where, ids):
        if sep is not None and (not ids or ids[-1] != sep):
            ids = list(ids) + [sep]
        if not ids:
            return  # an empty document without a separator adds nothing
        check_ids(where, ids, vocab, vocab_from)
        writer.add(ids)

    def check():
        if not writer.starts:
            raise Bad("no documents: every input is empty (an empty file without a separator "
                      "adds nothing)")

    pipeline(inputs, args.workers, (_TOKENIZE, args.tokenizer), tok.encode, emit, writer, progress,
             check)
    print(writer.summary() + f"separator={'none' if sep is None else sep}\ntokenizer={tok.path}")


def open_inputs(args, field):
    """The inputs (none of them --out) and the progress bar over them."""
    out_abs = os.path.abspath(args.out)
    inputs = [Input(path, field) for path in args.inputs]
    for inp in inputs:
        if os.path.abspath(inp.path) == out_abs:
            raise Bad(f"{inp.path}: is both an input and --out")
    progress = Progress(inputs, args.progress == "always" or
                        (args.progress == "auto" and sys.stderr.isatty()))
    return inputs, progress


def check_ids(where, ids, vocab, vocab_from):
    top = max(ids)
    if top >= vocab:
        raise Bad(f"{where}: token id {top} is >= the vocabulary size {vocab} ({vocab_from})")


def pipeline(inputs, workers, worker_spec, encode_here, emit, writer, progress, check=None):
    """Encodes the inputs' documents in order and hands each to emit(where, result).

    `encode_here(items)` encodes a list of items in this process (workers == 1);
    with more workers, processes made by _worker_init(worker_spec) run
    _worker_encode. Results come back in input order whatever the worker count.
    Runs check() (which may raise Bad), then commits the writer; abandons it
    (no file left) on any error.
    """
    pool = None
    try:
        if workers > 1:
            # Not "fork": this process has threads by now (pyarrow starts
            # some at import), and a child forked while one of them holds a
            # lock (malloc's, say) can hang on it forever. The fork server is
            # a fresh single-threaded process that forks the workers.
            pool = multiprocessing.get_context("forkserver").Pool(
                workers, initializer=_worker_init, initargs=(worker_spec,))
        pending = collections.deque()  # (chunk, AsyncResult or results), in input order

        def drain(limit):
            while len(pending) > limit:
                chunk, result = pending.popleft()
                try:
                    encoded = result.get() if pool else result
                except Bad:
                    raise
                except Exception as e:
                    raise Bad(f"{chunk[0][0]}: a worker failed to encode ({_one_line(e)})")
                for (where, _), item in zip(chunk, encoded):
                    emit(where, item)
                progress.update(writer.num_tokens)

        for chunk in chunks(inputs):
            pending.append((chunk, pool.apply_async(_worker_encode, (chunk,)) if pool
                            else encode_here(chunk)))
            drain(2 * workers)
        drain(0)
        if pool:
            pool.close()
            pool.join()
            pool = None
        progress.finish(writer.num_tokens)
        if check:
            check()
        writer.commit()
    except BaseException:
        if pool:
            pool.terminate()
        writer.abandon()
        raise


# --- sft: chat examples, the loss on the assistant's tokens only


class ChatTokenizer:
    """transformers' tokenizer of a model directory, for apply_chat_template."""

    def __init__(self, spec):
        if not os.path.isdir(spec):
            raise Bad(f"--tokenizer {spec}: expected a model directory (tokenizer files with a "
                      "chat template)")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found"
        try:
            from transformers import AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(spec)
        except Exception as e:
            raise Bad(f"{spec}: the tokenizer does not load ({_one_line(e)})")
        if not getattr(self.tok, "chat_template", None):
            raise Bad(f"{spec}: the tokenizer has no chat template (tokenizer_config.json "
                      "chat_template or chat_template.jinja)")
        self.config = _read_json_if_present(os.path.join(spec, "config.json"))

    def vocab_size(self):
        return len(self.tok)

    def ids(self, messages, where, generation_prompt=False):
        try:
            out = self.tok.apply_chat_template(messages, tokenize=True,
                                               add_generation_prompt=generation_prompt)
        except Exception as e:
            raise Bad(f"{where}: the chat template fails on this example ({_one_line(e)})")
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    def render(self, where, record):
        """(ids, mask): the conversation's tokens, 1 where the assistant speaks."""
        messages = sft_messages(where, record)
        full = self.ids(messages, where)
        mask = [0] * len(full)
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            # The assistant's tokens are what its message adds to the prompt that
            # asks for it; both must be prefixes of the whole conversation.
            prompt = self.ids(messages[:i], where, generation_prompt=True) if i else []
            upto = self.ids(messages[:i + 1], where)
            if upto[:len(prompt)] != prompt or full[:len(upto)] != upto:
                raise Bad(f"{where}: the chat template does not render message {i} as a prefix of "
                          "the conversation, so its tokens cannot be told apart")
            mask[len(prompt):len(upto)] = [1] * (len(upto) - len(prompt))
        return full, mask

    def encode(self, chunk):
        return [self.render(where, record) for where, record in chunk]


def sft_messages(where, record):
    if not isinstance(record, dict):
        raise Bad(f"{where}: expected a JSON object with prompt/response or messages")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise Bad(f"{where}: field 'messages' is not a non-empty list")
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and
                    isinstance(m.get("content"), str)):
                raise Bad(f"{where}: messages[{i}] is not an object with string role and content")
        if not any(m["role"] == "assistant" for m in messages):
            raise Bad(f"{where}: no message has role 'assistant' (nothing to learn)")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    for key in ("prompt", "response"):
        if not isinstance(record.get(key), str):
            raise Bad(f"{where}: no string field '{key}' (expected prompt/response or messages)")
    messages = [{"role": "user", "content": record["prompt"]},
                {"role": "assistant", "content": record["response"]}]
    if isinstance(record.get("system"), str):
        messages.insert(0, {"role": "system", "content": record["system"]})
    return messages


def parse_sft_args(argv):
    p = argparse.ArgumentParser(
        prog="l2l-data sft",
        description="Render instruction examples (.jsonl of {prompt, response} or {messages}) "
        "with the tokenizer's chat template into a version-2 token file whose loss mask marks "
        "the assistant's tokens (docs/data-format.md).")
    p.add_argument("--tokenizer", required=True, help="a Hugging Face model or tokenizer directory")
    p.add_argument("--out", required=True)
    p.add_argument("--seq-len", type=int, required=True,
                   help="the model's seq_len: an example may have seq_len + 1 tokens")
    p.add_argument("--too-long", choices=("error", "skip", "truncate"), default="error",
                   help="an example over seq_len + 1 tokens: stop (default), skip it, or cut it")
    add_common_flags(p, "sft", "IN.jsonl")
    args = check_common_flags(p.parse_args(argv), "sft", "IN.jsonl...")
    if args.seq_len < 1:
        raise Bad(f"sft: flag --seq-len value {args.seq_len}, expected >= 1")
    for path in args.inputs:
        if not path.endswith(".jsonl"):
            raise Bad(f"{path}: expected a .jsonl file of examples")
    return args


def run_sft(argv):
    args = parse_sft_args(argv)
    chat = ChatTokenizer(args.tokenizer)
    vocab, vocab_from = resolve_vocab(chat, args.vocab_size)
    inputs, progress = open_inputs(args, None)
    writer = TokenFileWriter(args.out, vocab, args.force, loss_mask=True)
    limit = args.seq_len + 1
    counts = {"skipped_too_long": 0, "truncated": 0, "skipped_no_response_left": 0}

    def emit(where, item):
        ids, mask = item
        if len(ids) > limit:
            if args.too_long == "error":
                raise Bad(f"{where}: the example has {len(ids)} tokens, more than --seq-len + 1 = "
                          f"{limit}; pass --too-long skip or --too-long truncate")
            if args.too_long == "skip":
                counts["skipped_too_long"] += 1
                return
            ids, mask = ids[:limit], mask[:limit]
            # Only tokens after the first are predicted: a response must remain there.
            if not any(mask[1:]):
                counts["skipped_no_response_left"] += 1
                return
            counts["truncated"] += 1
        check_ids(where, ids, vocab, vocab_from)
        writer.add(ids, mask)

    def check():
        if not writer.starts:
            raise Bad(f"no examples left to write ({', '.join(f'{k}={v}' for k, v in counts.items())})")

    pipeline(inputs, args.workers, (_SFT, args.tokenizer), chat.encode, emit, writer, progress,
             check)
    print(writer.summary() + f"loss_tokens={sum(writer.loss_mask)}\n" +
          "".join(f"{k}={v}\n" for k, v in counts.items()), end="")


def _stop(signum, frame):
    raise KeyboardInterrupt  # unwinds through pipeline(), which removes its file


def main():
    signal.signal(signal.SIGTERM, _stop)
    try:
        verb, argv = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
        if verb == "tokenize":
            run(argv)
        elif verb == "sft":
            run_sft(argv)
        else:
            raise Bad(f"l2l_tokenize.py: the first argument is tokenize or sft, got '{verb}'")
    except Bad as e:
        sys.stderr.write(f"l2l-data: {e}\n")
        sys.exit(2)
    except OSError as e:  # writing the output (disk full, a read-only directory)
        where = f" {e.filename}" if e.filename else ""
        sys.stderr.write(f"l2l-data: cannot write{where}: {e.strerror or e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("l2l-data: stopped by a signal; no output written\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
