// l2l-ckpt: look inside, check, import and export l2l checkpoints
// (docs/checkpoint-format.md, docs/interop.md).
//
//   l2l-ckpt inspect FILE|DIR
//   l2l-ckpt verify FILE|DIR
//   l2l-ckpt import HF_DIR --out CKPT_DIR [--seq-len N]        (also under mpirun)
//   l2l-ckpt export FILE|DIR --out OUT [--format safetensors|hf] [--dtype fp32|bf16]
//                   [--model-type llama|mistral|qwen2] [--max-shard-size BYTES]
//   l2l-ckpt logits FILE|DIR --ids 1,2,3[/4,5,6] --out LOGITS.safetensors
//   l2l-ckpt dump FILE|DIR --tensor NAME [--part master|adam_m|adam_v]
//
// A DIR means the checkpoint its `latest` file names. Every verb but import
// runs on one rank (MPI is initialised for parallel HDF5; the file is opened
// on MPI_COMM_SELF). Any failure prints one line on stderr and exits 2 (1 for
// an internal error). Outputs are written under a temporary name, checked,
// then renamed; an existing output is never replaced.
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/ckpt/model_layers.h"
#include "l2l/ckpt/reader.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/core/byte_size.h"
#include "l2l/core/dtype.h"
#include "l2l/core/fs.h"
#include "l2l/core/status.h"
#include "l2l/interop/hf_export.h"
#include "l2l/interop/hf_import.h"
#include "l2l/interop/safetensors.h"
#include "l2l/model/config_dims.h"
#include "l2l/model/model.h"
#include "verb_args.h"

namespace l2l::ckpt {
namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  l2l-ckpt inspect FILE|DIR\n"
    "      print the metadata, the config and every layer's tensors with totals\n"
    "  l2l-ckpt verify FILE|DIR\n"
    "      check completeness, shapes and every dataset's checksum; prints 'ok: FILE'\n"
    "  l2l-ckpt import HF_DIR --out CKPT_DIR [--seq-len N]\n"
    "      a Hugging Face model directory (config.json + safetensors; gpt2, bert, llama,\n"
    "      mistral, qwen2) as a new l2l checkpoint directory with a config.yaml to\n"
    "      fine-tune from (train.init_from); runs under mpirun too (parallel writes)\n"
    "  l2l-ckpt export FILE|DIR --out OUT [--format safetensors|hf] [--dtype fp32|bf16]\n"
    "                  [--model-type llama|mistral|qwen2] [--max-shard-size BYTES]\n"
    "      safetensors: the master weights under l2l's names in one file OUT;\n"
    "      hf: a Hugging Face model directory OUT that transformers loads\n"
    "      (config.json, weights under transformers' names, shards above 5GB,\n"
    "      tokenizer files of the imported model); both re-read and checked\n"
    "  l2l-ckpt logits FILE|DIR --ids IDS --out LOGITS.safetensors\n"
    "      the model's logits on token ids (comma-separated; '/' between sequences\n"
    "      of equal length), as a safetensors tensor \"logits\" [rows, len, vocab]\n"
    "  l2l-ckpt dump FILE|DIR --tensor NAME [--part master|adam_m|adam_v]\n"
    "      print one tensor (export name, e.g. blocks.0.attn.qkv.weight), one value a line\n"
    "A DIR means the checkpoint named by DIR/latest. Failures print one line on stderr\n"
    "and exit 2.\n";

using Args = tools::VerbArgs;
using interop::EncodeSafetensorsHeader;
using interop::ReadSafetensorsHeader;
using interop::SafetensorsDType;
using interop::SafetensorsDTypeName;
using interop::SafetensorsHeader;
using interop::SafetensorsTensor;

StatusOr<Args> ParseArgs(const std::string& verb, const std::vector<std::string>& argv,
                         const std::set<std::string>& known) {
  return tools::ParseVerbArgs("l2l-ckpt", verb, argv, known);
}

// The single FILE|DIR operand, resolved to a checkpoint file.
StatusOr<std::string> Input(const std::string& verb, const Args& args) {
  if (args.positional.empty()) return InvalidArgument(verb + ": missing FILE|DIR");
  if (args.positional.size() > 1) {
    return InvalidArgument(verb + ": unexpected argument '" + args.positional[1] + "'");
  }
  return ResolveCheckpoint(args.positional[0]);
}

std::string LayerLabel(int num_layers, int layer) {
  if (layer == 0) return "embedding";
  if (layer == num_layers - 1) return "head";
  return "block " + std::to_string(layer - 1);
}

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Inspect, then the layers the file holds checked against the model its
// own config describes: a missing layer group (a deleted head), an extra or
// resized one is DataLoss, never reported as a smaller model. `dims`, when
// given, receives the model.
StatusOr<Summary> InspectChecked(const std::string& path, model::ModelDims* dims = nullptr) {
  ASSIGN_OR_RETURN(Summary s, Inspect(path));
  StatusOr<config::Config> cfg = config::ParseConfig(s.meta.config_yaml, path, {});
  if (!cfg.ok())
    return DataLoss(path + ": its /meta config does not parse: " + cfg.status().message());
  const model::ModelDims d = model::DimsFromConfig(cfg->model);
  RETURN_IF_ERROR(CheckLayersMatch(path, s.layers, d));
  if (dims != nullptr) *dims = d;
  return s;
}

Status RunInspect(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("inspect", argv, {}));
  ASSIGN_OR_RETURN(std::string path, Input("inspect", args));
  ASSIGN_OR_RETURN(Summary s, InspectChecked(path));
  const int L = static_cast<int>(s.layers.size());
  std::printf("file: %s\n", s.path.c_str());
  std::printf("format: %s version %d\n", kFormatName, s.format_version);
  std::printf("step: %lld\n", static_cast<long long>(s.meta.step));
  std::printf("tokens_seen: %lld\n", static_cast<long long>(s.meta.tokens_seen));
  std::printf("world_size: %d\n", s.meta.world_size);
  std::printf("seed: %llu\n", static_cast<unsigned long long>(s.meta.seed));
  std::printf("sampler_state: %s\n", s.meta.sampler_state.c_str());
  std::printf("config:\n");
  size_t start = 0;
  while (start < s.meta.config_yaml.size()) {
    size_t end = s.meta.config_yaml.find('\n', start);
    if (end == std::string::npos) end = s.meta.config_yaml.size();
    std::printf("  %s\n", s.meta.config_yaml.substr(start, end - start).c_str());
    start = end + 1;
  }
  std::printf("layers: %d\n", L);
  for (int l = 0; l < L; ++l) {
    const LayerInfo& info = s.layers[l];
    int64_t params = 0;
    for (const TensorEntry& t : info.tensors) params += Elements(t.shape);
    std::printf("layer %d (%s): %zu tensors, %lld parameters, flat size %lld\n", l,
                LayerLabel(L, l).c_str(), info.tensors.size(), static_cast<long long>(params),
                static_cast<long long>(info.size_elems));
    for (const TensorEntry& t : info.tensors) {
      std::printf("  %-32s %-16s %lld\n", t.name.c_str(), ShapeText(t.shape).c_str(),
                  static_cast<long long>(Elements(t.shape)));
    }
  }
  const int64_t master_bytes = s.flat_elems * static_cast<int64_t>(sizeof(float));
  std::printf("total parameters: %lld\n", static_cast<long long>(s.num_parameters));
  std::printf("total bytes: master %lld (%s), master + AdamW moments %lld (%s), file %lld (%s)\n",
              static_cast<long long>(master_bytes), FormatBytes(master_bytes).c_str(),
              static_cast<long long>(3 * master_bytes), FormatBytes(3 * master_bytes).c_str(),
              static_cast<long long>(s.file_bytes), FormatBytes(s.file_bytes).c_str());
  return OkStatus();
}

Status RunVerify(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("verify", argv, {}));
  ASSIGN_OR_RETURN(std::string path, Input("verify", args));
  RETURN_IF_ERROR(InspectChecked(path).status());
  RETURN_IF_ERROR(Verify(path));
  std::printf("ok: %s\n", path.c_str());
  return OkStatus();
}

// ---- export

// The safetensors entries of a checkpoint, in index order.
std::vector<SafetensorsTensor> ExportEntries(const Summary& s, SafetensorsDType dtype) {
  std::vector<SafetensorsTensor> out;
  const int L = static_cast<int>(s.layers.size());
  for (int l = 0; l < L; ++l) {
    for (const TensorEntry& t : s.layers[l].tensors) {
      out.push_back({.name = ExportTensorName(L, l, t.name), .dtype = dtype, .shape = t.shape});
    }
  }
  return out;
}

std::vector<uint16_t> ToBF16(const float* x, int64_t n) {
  std::vector<uint16_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = F32ToBF16(x[i]);
  return out;
}

Status WriteExport(const std::string& ckpt, const Summary& s, const std::string& header,
                   SafetensorsDType dtype, const std::string& tmp) {
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return IoError(tmp + ": cannot create (" + std::strerror(errno) + ")");
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (int l = 0; ok && l < static_cast<int>(s.layers.size()); ++l) {
    auto layer = ReadLayer(ckpt, l, LayerParts::kMasterOnly);
    if (!layer.ok()) {
      std::fclose(f);
      return layer.status();
    }
    for (const TensorEntry& t : layer->info.tensors) {
      const float* x = layer->master.data() + t.offset_elems;
      const int64_t n = Elements(t.shape);
      if (dtype == SafetensorsDType::kF32) {
        ok = ok && std::fwrite(x, sizeof(float), n, f) == static_cast<size_t>(n);
      } else {
        const std::vector<uint16_t> h = ToBF16(x, n);
        ok = ok && std::fwrite(h.data(), sizeof(uint16_t), n, f) == static_cast<size_t>(n);
      }
    }
  }
  ok = (std::fflush(f) == 0) && ok;
  ok = (::fsync(fileno(f)) == 0) && ok;
  const std::string err = ok ? "" : std::strerror(errno);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return IoError(tmp + ": write failed (" + err + ")");
  return OkStatus();
}

// Re-reads the written file and compares every tensor with the checkpoint:
// bitwise for F32, == F32ToBF16(x) for BF16.
Status CheckExport(const std::string& ckpt, const Summary& s,
                   const std::vector<SafetensorsTensor>& expected, const std::string& tmp) {
  ASSIGN_OR_RETURN(SafetensorsHeader h, ReadSafetensorsHeader(tmp));
  if (h.tensors != expected) return Internal(tmp + ": the written header differs from the plan");
  std::ifstream in(tmp, std::ios::binary);
  size_t next = 0;
  for (int l = 0; l < static_cast<int>(s.layers.size()); ++l) {
    ASSIGN_OR_RETURN(LayerData layer, ReadLayer(ckpt, l, LayerParts::kMasterOnly));
    for (const TensorEntry& t : layer.info.tensors) {
      const SafetensorsTensor& e = h.tensors[next++];
      const float* x = layer.master.data() + t.offset_elems;
      const int64_t n = Elements(t.shape);
      std::string bytes(static_cast<size_t>(e.end_bytes - e.begin_bytes), '\0');
      in.seekg(h.data_start_bytes + e.begin_bytes);
      if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) {
        return IoError(tmp + ": cannot read back tensor '" + e.name + "'");
      }
      bool same;
      if (e.dtype == SafetensorsDType::kF32) {
        same = std::memcmp(bytes.data(), x, bytes.size()) == 0;
      } else {
        const std::vector<uint16_t> want = ToBF16(x, n);
        same = std::memcmp(bytes.data(), want.data(), bytes.size()) == 0;
      }
      if (!same) return Internal(tmp + ": tensor '" + e.name + "' differs from the checkpoint");
    }
  }
  return OkStatus();
}

Status RunExportHf(const Args& args, const std::string& out, SafetensorsDType dtype) {
  if (args.positional.size() != 1) return InvalidArgument("export: expected one FILE|DIR");
  interop::HfExportOptions o;
  o.dtype = dtype;
  if (args.flags.count("--model-type")) o.model_type = args.flags.at("--model-type");
  if (args.flags.count("--max-shard-size")) {
    ASSIGN_OR_RETURN(o.max_shard_bytes, ParseByteSize(args.flags.at("--max-shard-size")));
    if (o.max_shard_bytes < 1) return InvalidArgument("export: --max-shard-size must be > 0");
  }
  ASSIGN_OR_RETURN(interop::HfExportReport r, interop::ExportHf(args.positional[0], out, o));
  std::printf("wrote %s: %s, %lld tensors, %s, %lld data bytes in %d weight file(s)\n", out.c_str(),
              r.model_type.c_str(), static_cast<long long>(r.tensors), SafetensorsDTypeName(dtype),
              static_cast<long long>(r.data_bytes), r.shards);
  const bool tokenizer =
      std::any_of(r.side_files.begin(), r.side_files.end(),
                  [](const std::string& f) { return f != "generation_config.json"; });
  if (r.side_dir.empty()) {
    std::printf(
        "no hf/ directory found (the checkpoint is neither an import nor fine-tuned from one, "
        "through train.init_from): config.json is made from the model section alone and no "
        "tokenizer files were copied; copy them into %s yourself\n",
        out.c_str());
  } else {
    std::printf("config.json based on %s/config.json", r.side_dir.c_str());
    if (!r.side_files.empty()) std::printf("; copied from there:");
    for (const std::string& f : r.side_files) std::printf(" %s", f.c_str());
    std::printf("\n");
    if (!tokenizer) {
      std::printf("no tokenizer files in %s: copy them into %s yourself\n", r.side_dir.c_str(),
                  out.c_str());
    }
  }
  std::printf("export verified: %lld tensors\n", static_cast<long long>(r.tensors));
  return OkStatus();
}

Status RunExport(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args,
                   ParseArgs("export", argv,
                             {"--out", "--format", "--dtype", "--model-type", "--max-shard-size"}));
  auto flag = [&](const std::string& name, const std::string& def) {
    auto it = args.flags.find(name);
    return it == args.flags.end() ? def : it->second;
  };
  const std::string out = fs::WithoutTrailingSlashes(flag("--out", ""));
  if (out.empty()) return InvalidArgument("export: missing required flag --out OUT");
  const std::string format = flag("--format", "safetensors");
  if (format != "safetensors" && format != "hf") {
    return InvalidArgument("export: --format '" + format + "', expected safetensors or hf");
  }
  if (format != "hf" &&
      (args.flags.count("--model-type") || args.flags.count("--max-shard-size"))) {
    return InvalidArgument("export: --model-type and --max-shard-size go with --format hf");
  }
  if (fs::Exists(out)) {
    return FailedPrecondition(out + ": already exists; export never replaces a file");
  }
  const std::string dtype_text = flag("--dtype", "fp32");
  SafetensorsDType dtype;
  if (dtype_text == "fp32") {
    dtype = SafetensorsDType::kF32;
  } else if (dtype_text == "bf16") {
    dtype = SafetensorsDType::kBF16;
  } else {
    return InvalidArgument("export: --dtype '" + dtype_text + "', expected fp32 or bf16");
  }
  if (format == "hf") return RunExportHf(args, out, dtype);
  ASSIGN_OR_RETURN(std::string path, Input("export", args));
  ASSIGN_OR_RETURN(Summary s, InspectChecked(path));
  std::vector<SafetensorsTensor> entries = ExportEntries(s, dtype);
  std::set<std::string> names;
  for (const SafetensorsTensor& e : entries) {
    if (!names.insert(e.name).second) {
      return DataLoss(path + ": two tensors export to the same name '" + e.name + "'");
    }
  }
  const std::string header = EncodeSafetensorsHeader(
      &entries, {{"format", "pt"}, {"l2l_step", std::to_string(s.meta.step)}});
  const std::string tmp = out + ".tmp-" + std::to_string(::getpid());
  Status st = WriteExport(path, s, header, dtype, tmp);
  if (st.ok()) st = CheckExport(path, s, entries, tmp);
  if (st.ok()) st = fs::RenameNoReplace(tmp, out);  // never replaces an OUT that appeared
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  const int64_t bytes = entries.empty() ? 0 : entries.back().end_bytes;
  std::printf("wrote %s: %zu tensors, %s, %lld data bytes\n", out.c_str(), entries.size(),
              SafetensorsDTypeName(dtype), static_cast<long long>(bytes));
  std::printf("export verified: %zu tensors\n", entries.size());
  return OkStatus();
}

Status RunImport(const std::vector<std::string>& argv, const MpiRuntime& mpi) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("import", argv, {"--out", "--seq-len"}));
  if (args.positional.size() != 1) return InvalidArgument("import: expected one HF_DIR");
  if (!args.flags.count("--out") || args.flags.at("--out").empty()) {
    return InvalidArgument("import: missing required flag --out CKPT_DIR");
  }
  interop::HfImportOptions o;
  if (args.flags.count("--seq-len")) {
    const std::string& v = args.flags.at("--seq-len");
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > (1 << 24)) {
      return InvalidArgument("import: --seq-len '" + v + "', expected a positive integer");
    }
    o.seq_len = static_cast<int>(n);
  }
  MpiComm comm;
  ASSIGN_OR_RETURN(interop::HfImportReport r,
                   interop::ImportHf(comm.handle(), args.positional[0], args.flags.at("--out"), o));
  if (mpi.world_rank() == 0) {
    std::printf(
        "imported %s: %lld parameters, %s read, %s written in %.2f s (%.2f GB/s), %d rank(s)\n",
        args.positional[0].c_str(), static_cast<long long>(r.parameters),
        FormatBytes(r.bytes_read).c_str(), FormatBytes(r.bytes_written).c_str(), r.seconds,
        r.seconds > 0 ? (r.bytes_read + r.bytes_written) / r.seconds / 1e9 : 0.0, mpi.world_size());
    for (const std::string& n : r.ignored)
      std::printf("ignored non-parameter tensor %s\n", n.c_str());
    std::printf("checkpoint: %s\nconfig: %s (edit data and train, then l2l-train --config it)\n",
                r.checkpoint.c_str(), r.config.c_str());
    if (!r.copied.empty()) {
      std::printf("kept for export:");
      for (const std::string& f : r.copied) std::printf(" %s", f.c_str());
      std::printf("\n");
    }
  }
  return OkStatus();
}

// "1,2,3/4,5,6" -> rows of ids.
StatusOr<std::vector<std::vector<int32_t>>> ParseIds(const std::string& text) {
  std::vector<std::vector<int32_t>> rows(1);
  std::string cur;
  const auto push = [&]() -> Status {
    char* end = nullptr;
    const long v = std::strtol(cur.c_str(), &end, 10);
    if (cur.empty() || *end != '\0' || v < 0 || v > INT32_MAX) {
      return InvalidArgument("logits: --ids: '" + cur + "' is not a token id");
    }
    rows.back().push_back(static_cast<int32_t>(v));
    cur.clear();
    return OkStatus();
  };
  for (char c : text) {
    if (c == ',' || c == '/') {
      RETURN_IF_ERROR(push());
      if (c == '/') rows.emplace_back();
    } else if (c != ' ') {
      cur += c;
    }
  }
  RETURN_IF_ERROR(push());
  for (const auto& r : rows) {
    if (r.size() != rows[0].size()) {
      return InvalidArgument("logits: --ids: every sequence needs the same length");
    }
  }
  return rows;
}

Status RunLogits(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("logits", argv, {"--ids", "--out"}));
  if (!args.flags.count("--ids") || !args.flags.count("--out")) {
    return InvalidArgument("logits: needs --ids IDS and --out LOGITS.safetensors");
  }
  const std::string out = args.flags.at("--out");
  if (fs::Exists(out)) {
    return FailedPrecondition(out + ": already exists; logits never replaces a file");
  }
  ASSIGN_OR_RETURN(const auto rows, ParseIds(args.flags.at("--ids")));
  ASSIGN_OR_RETURN(std::string path, Input("logits", args));
  model::ModelDims d;
  ASSIGN_OR_RETURN(Summary s, InspectChecked(path, &d));
  d.seq_len = static_cast<int>(rows[0].size());  // positions beyond the table: refused here
  RETURN_IF_ERROR(model::ValidateModelDims(d).WithContext("logits: --ids"));
  std::vector<int32_t> ids, types;
  for (const auto& r : rows) {
    for (int32_t id : r) {
      if (id >= d.vocab) {
        return InvalidArgument("logits: --ids: token " + std::to_string(id) + " >= vocab " +
                               std::to_string(d.vocab));
      }
      ids.push_back(id);
      types.push_back(0);
    }
  }
  const int R = static_cast<int>(rows.size());
  const int L = d.num_blocks;
  std::vector<std::vector<float>> w;
  for (int l = 0; l < model::NumLayers(d); ++l) {
    ASSIGN_OR_RETURN(LayerData layer, ReadLayer(path, l, LayerParts::kMasterOnly));
    w.push_back(std::move(layer.master));
  }
  const int64_t N = int64_t{R} * d.seq_len, H = d.hidden, V = d.vocab;
  std::vector<float> ws(
      std::max({model::EmbeddingWorkspaceElems(d, R), model::BlockWorkspaceElems(d, R),
                model::HeadWorkspaceElems(d, R)}));
  std::vector<float> x(N * H), y(N * H), logits(N * V);
  std::vector<uint8_t> mask(N, 1);
  const model::StepContext ctx{
      .seed = 0, .step = 0, .layer = 0, .training = false, .sample_keys = nullptr};
  model::EmbeddingForward(d, ctx, w[0].data(), ids.data(), types.data(), R, x.data(), ws.data());
  for (int l = 1; l <= L; ++l) {
    model::BlockForward(d, ctx, w[l].data(), x.data(), mask.data(), R, y.data(), ws.data());
    std::swap(x, y);
  }
  model::HeadLogits(d, w[L + 1].data(), w[0].data(), x.data(), R, logits.data(), ws.data());
  std::vector<SafetensorsTensor> entries = {
      {.name = "logits", .dtype = SafetensorsDType::kF32, .shape = {R, d.seq_len, d.vocab}}};
  const std::string header = EncodeSafetensorsHeader(&entries, {{"format", "pt"}});
  const std::string tmp = out + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(logits.data()),
            static_cast<std::streamsize>(logits.size() * sizeof(float)));
    f.flush();
    if (!f) {
      ::unlink(tmp.c_str());
      return IoError(tmp + ": write failed");
    }
  }
  if (Status moved = fs::RenameNoReplace(tmp, out); !moved.ok()) {
    ::unlink(tmp.c_str());
    return moved;
  }
  std::printf("wrote %s: logits [%d, %d, %d]\n", out.c_str(), R, d.seq_len, d.vocab);
  return OkStatus();
}

Status RunDump(const std::vector<std::string>& argv) {
  ASSIGN_OR_RETURN(Args args, ParseArgs("dump", argv, {"--tensor", "--part"}));
  auto it = args.flags.find("--tensor");
  if (it == args.flags.end() || it->second.empty()) {
    return InvalidArgument("dump: missing required flag --tensor NAME");
  }
  const std::string name = it->second;
  const std::string part = args.flags.count("--part") ? args.flags.at("--part") : "master";
  if (part != "master" && part != "adam_m" && part != "adam_v") {
    return InvalidArgument("dump: --part '" + part + "', expected master, adam_m or adam_v");
  }
  ASSIGN_OR_RETURN(std::string path, Input("dump", args));
  ASSIGN_OR_RETURN(Summary s, InspectChecked(path));
  const int L = static_cast<int>(s.layers.size());
  for (int l = 0; l < L; ++l) {
    for (const TensorEntry& t : s.layers[l].tensors) {
      if (ExportTensorName(L, l, t.name) != name) continue;
      const LayerParts parts = part == "master" ? LayerParts::kMasterOnly : LayerParts::kAll;
      ASSIGN_OR_RETURN(LayerData layer, ReadLayer(path, l, parts));
      const std::vector<float>& v = part == "master"   ? layer.master
                                    : part == "adam_m" ? layer.adam_m
                                                       : layer.adam_v;
      for (int64_t i = 0; i < Elements(t.shape); ++i) {
        std::printf("%.9g\n", static_cast<double>(v[t.offset_elems + i]));
      }
      return OkStatus();
    }
  }
  return NotFound(path + ": no tensor '" + name + "' (names as in export, e.g. " +
                  (L > 0 && !s.layers[0].tensors.empty()
                       ? ExportTensorName(L, 0, s.layers[0].tensors[0].name)
                       : std::string("embedding.tok_emb")) +
                  ")");
}

Status Main(int argc, char** argv, const MpiRuntime& mpi) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return InvalidArgument("missing command; run l2l-ckpt --help");
  const std::string verb = args[0];
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::fputs(kUsage, stdout);
    return OkStatus();
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (verb == "import") return RunImport(rest, mpi);
  if (mpi.world_size() != 1) {
    return InvalidArgument("l2l-ckpt " + verb + " runs on one rank, not " +
                           std::to_string(mpi.world_size()) + " (only import runs under mpirun)");
  }
  if (verb == "inspect") return RunInspect(rest);
  if (verb == "verify") return RunVerify(rest);
  if (verb == "export") return RunExport(rest);
  if (verb == "dump") return RunDump(rest);
  if (verb == "logits") return RunLogits(rest);
  return InvalidArgument("unknown command '" + verb + "'; run l2l-ckpt --help");
}

}  // namespace
}  // namespace l2l::ckpt

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  const l2l::Status s = l2l::ckpt::Main(argc, argv, mpi);
  std::fflush(stdout);
  if (!s.ok()) {
    if (mpi.world_rank() == 0) {
      std::fprintf(stderr, "l2l-ckpt: %s\n", s.message().c_str());
      std::fflush(stderr);
    }
    return l2l::ExitCodeFor(s);
  }
  return 0;
}
