// l2l-ckpt import: see hf_import.h. The weights are streamed from the
// safetensors files into ckpt::SaveStreamed, which asks each rank for its
// hyperslabs piece by piece: a piece is assembled from the pieces of the
// tensors it overlaps (converted to fp32), alignment padding and both AdamW
// moments are zeros.
#include "l2l/interop/hf_import.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "hf_weights.h"
#include "l2l/ckpt/checkpoint.h"
#include "l2l/ckpt/model_layers.h"
#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/core/fs.h"
#include "l2l/interop/hf_config.h"
#include "l2l/model/config_dims.h"

namespace l2l::interop {
namespace {

using fs::CopyFile;
using fs::Exists;
using fs::IsDir;

std::string BaseName(const std::string& path) {
  const std::string p = fs::WithoutTrailingSlashes(path);
  const size_t slash = p.find_last_of('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// Removes the temporary directory of a failed import: the files it writes
// (the checkpoint and its temporaries, latest, config.yaml, hf/...), then the
// directories. Nothing else is in it: the import created it.
void RemoveTree(const std::string& dir) {
  std::vector<std::string> names = {"step-00000000.h5", ".tmp-step-00000000.h5", "latest",
                                    ".tmp-latest", "config.yaml"};
  for (const std::string& n : names) ::unlink((dir + "/" + n).c_str());
  for (const std::string& n : HfSideFiles()) ::unlink((dir + "/hf/" + n).c_str());
  ::unlink((dir + "/hf/config.json").c_str());
  ::rmdir((dir + "/hf").c_str());
  ::rmdir(dir.c_str());
}

// A run config around the imported model: fine-tuning defaults a user edits
// (data, steps, batch), starting from the checkpoint.
config::Config FineTuneConfig(const config::ModelConfig& model, const std::string& out_dir,
                              int64_t mask_token_id) {
  config::Config c;
  c.model = model;
  if (model.kind == config::ModelKind::kBert && mask_token_id >= 0 && mask_token_id < model.vocab) {
    c.data.mask_token_id = static_cast<int>(mask_token_id);
  }
  const std::string name = BaseName(out_dir);
  c.data.path = "data/finetune.tok";
  c.data.eval_fraction = 0.01;
  c.train.steps = 1000;
  c.train.lr = 2e-5;
  c.train.warmup_steps = 100;
  c.train.schedule = config::Schedule::kCosine;
  c.train.min_lr_ratio = 0.1;
  c.train.weight_decay = 0.0;
  c.train.grad_clip = 1.0;
  c.train.global_batch = 32;
  c.train.micro_batch = 1;
  c.train.init_from = out_dir;
  c.train.eval_every_steps = 100;
  c.checkpoint.dir = "checkpoints/" + name + "-finetune";
  c.checkpoint.every_steps = 500;
  c.log.dir = "runs/" + name + "-finetune";
  return c;
}

}  // namespace

const std::vector<std::string>& HfSideFiles() {
  static const std::vector<std::string> files = {"generation_config.json",
                                                 "tokenizer.json",
                                                 "tokenizer_config.json",
                                                 "special_tokens_map.json",
                                                 "added_tokens.json",
                                                 "tokenizer.model",
                                                 "vocab.json",
                                                 "vocab.txt",
                                                 "merges.txt",
                                                 "chat_template.jinja",
                                                 "chat_template.json"};
  return files;
}

int64_t TokenizerMaskTokenId(const std::string& hf_dir) {
  std::string mask = "[MASK]";
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) {
    StatusOr<Json> j = ReadJsonFile(hf_dir + "/" + f);
    const Json* m = j.ok() ? j->Find("mask_token") : nullptr;
    if (m != nullptr && m->is_object()) m = m->Find("content");
    if (m != nullptr && m->is_string()) {
      mask = m->text;
      break;
    }
  }
  int64_t id = -1;
  if (StatusOr<Json> tok = ReadJsonFile(hf_dir + "/tokenizer.json"); tok.ok()) {
    if (const Json* added = tok->Find("added_tokens"); added != nullptr) {
      for (const Json& t : added->items) {
        const Json* content = t.Find("content");
        const Json* tid = t.Find("id");
        if (content != nullptr && content->is_string() && content->text == mask && tid != nullptr &&
            JsonCount(*tid, &id)) {
          return id;
        }
      }
    }
    const Json* model = tok->Find("model");
    const Json* vocab = model != nullptr ? model->Find("vocab") : nullptr;
    const Json* v = vocab != nullptr ? vocab->Find(mask) : nullptr;
    if (v != nullptr && JsonCount(*v, &id)) return id;
  }
  std::ifstream txt(hf_dir + "/vocab.txt");
  std::string line;
  for (int n = 0; std::getline(txt, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // a vocab.txt written on Windows
    if (line == mask) return n;
  }
  return -1;
}

StatusOr<HfImportReport> ImportHf(MPI_Comm comm_in, const std::string& hf_dir,
                                  const std::string& out_given, const HfImportOptions& options) {
  MpiComm comm(comm_in);
  const std::string out_dir = fs::WithoutTrailingSlashes(out_given);
  const double t0 = MPI_Wtime();
  HfImportReport report;
  if (out_dir.empty()) return comm.Agree(InvalidArgument("import: --out is empty"));
  // Rank 0's pid names the temporary directory of all ranks.
  std::string tmp = out_dir + ".tmp-" + std::to_string(::getpid());
  RETURN_IF_ERROR(comm.BroadcastString(&tmp, 0));
  {
    Status s;
    if (comm.rank() == 0) {
      if (!IsDir(hf_dir)) {
        s = NotFound(hf_dir + ": not a directory (expected a Hugging Face model directory)");
      } else if (Exists(out_dir)) {
        s = FailedPrecondition(out_dir +
                               ": already exists; import writes a new directory and "
                               "never replaces one");
      }
    }
    RETURN_IF_ERROR(comm.Agree(s));
  }
  // Every rank reads the (small) config and the headers; rank 0's view of
  // the directory decides the temporary name.
  StatusOr<config::ModelConfig> model =
      ModelConfigFromHfFile(hf_dir + "/config.json", options.seq_len);
  RETURN_IF_ERROR(comm.Agree(model.status()));
  // BERT's masked positions take the tokenizer's mask token; rank 0 reads
  // the tokenizer files (tokenizer.json can be tens of MB) and tells the rest.
  int64_t mask_token_id = -1;
  if (model->kind == config::ModelKind::kBert) {
    if (comm.rank() == 0) mask_token_id = TokenizerMaskTokenId(hf_dir);
    RETURN_IF_ERROR(comm.Broadcast(&mask_token_id, 1, CommDType::kI64, 0));
  }
  config::Config cfg = FineTuneConfig(*model, out_dir, mask_token_id);
  {
    // The generated config must be one l2l reads back as it is.
    StatusOr<config::Config> again = config::ParseConfig(config::ToYaml(cfg), "import", {});
    Status s = again.ok() ? OkStatus() : again.status();
    if (s.ok() && !(*again == cfg))
      s = Internal("import: the generated config does not round-trip");
    RETURN_IF_ERROR(comm.Agree(s));
  }
  const model::ModelDims dims = model::DimsFromConfig(cfg.model);
  RETURN_IF_ERROR(comm.Agree(model::ValidateModelDims(dims).WithContext(hf_dir + "/config.json")));
  StatusOr<internal::HfWeights> weights = internal::HfWeights::Open(hf_dir);
  RETURN_IF_ERROR(comm.Agree(weights.status()));
  RETURN_IF_ERROR(comm.Agree(weights->Bind(dims, &report.ignored)));

  const std::vector<ckpt::LayerInfo> layers = ckpt::LayerInfosOf(dims);
  // Per layer: the bound tensors it holds, in layout order.
  struct Piece {
    int64_t offset, elems;
    const internal::HfWeight* w;
  };
  std::vector<std::vector<Piece>> pieces(layers.size());
  for (size_t i = 0; i < weights->tensors().size(); ++i) {
    const HfTensor& t = weights->tensors()[i];
    const model::ParamLayout layout = model::LayoutForLayer(dims, t.layer);
    const model::TensorSpec& spec = *layout.Find(t.l2l);
    pieces[t.layer].push_back({spec.offset_elems, spec.shape.num_elements(), &weights->weight(i)});
    report.parameters += spec.shape.num_elements();
  }
  // Each rank writes an even split of every layer (any split gives the same file).
  std::vector<ckpt::LayerSlice> tiles;
  for (const ckpt::LayerInfo& l : layers) {
    const int64_t per = (l.size_elems + comm.size() - 1) / comm.size();
    const int64_t begin = std::min(l.size_elems, per * comm.rank());
    tiles.push_back(
        {begin, std::min(l.size_elems, begin + per) - begin, nullptr, nullptr, nullptr, true});
  }
  int64_t read_bytes = 0;
  const ckpt::SaveFill fill = [&](int layer, int dataset, int64_t offset, int64_t n,
                                  float* out) -> Status {
    std::fill(out, out + n, 0.0f);
    if (dataset != 0) return OkStatus();  // AdamW moments start at 0
    for (const Piece& p : pieces[layer]) {
      const int64_t lo = std::max(offset, p.offset), hi = std::min(offset + n, p.offset + p.elems);
      if (lo >= hi) continue;
      RETURN_IF_ERROR(
          p.w->file->ReadF32(*p.w->tensor, lo - p.offset, hi - lo, out + (lo - offset)));
      read_bytes += (hi - lo) * SafetensorsDTypeSizeBytes(p.w->tensor->dtype);
    }
    return OkStatus();
  };
  ckpt::Meta meta;
  meta.step = 0;
  meta.tokens_seen = 0;
  meta.seed = cfg.train.seed;
  meta.config_yaml = config::ToYaml(cfg);
  meta.sampler_state = "";  // weights only: nothing to resume
  {
    Status s;
    if (comm.rank() == 0) {
      std::error_code ec;
      const std::filesystem::path parent = std::filesystem::path(out_dir).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent, ec);
      if (::mkdir(tmp.c_str(), 0777) != 0) {
        s = IoError(tmp + ": cannot create (" + std::strerror(errno) + ")");
      }
    }
    RETURN_IF_ERROR(comm.Agree(s));
  }
  ckpt::IoStats io;
  Status saved = ckpt::SaveStreamed(comm.handle(), tmp, meta, layers, tiles, fill, 1, &io);
  // The side files and the config, then the directory under its name.
  Status finished = saved;
  if (saved.ok() && comm.rank() == 0) {
    const std::string side = tmp + "/hf";
    if (::mkdir(side.c_str(), 0777) != 0) {
      finished = IoError(side + ": cannot create (" + std::strerror(errno) + ")");
    }
    if (finished.ok()) finished = CopyFile(hf_dir + "/config.json", side + "/config.json");
    for (const std::string& name : HfSideFiles()) {
      if (!finished.ok()) break;
      const std::string from = hf_dir + "/" + name;
      if (!fs::IsFile(from)) continue;
      finished = CopyFile(from, side + "/" + name);
      if (finished.ok()) report.copied.push_back(name);
    }
    if (finished.ok()) {
      std::string head = "# l2l-ckpt import of " + hf_dir +
                         ": the model section is its config.json;\n"
                         "# data, train and exec are fine-tuning defaults to edit "
                         "(docs/interop.md);\n"
                         "# on a GPU: exec.device: cuda, exec.precision: bf16.\n";
      if (cfg.model.kind == config::ModelKind::kBert) {
        if (cfg.data.mask_token_id >= 0) {
          head += "# data.mask_token_id is the tokenizer's mask token.\n";
        } else if (mask_token_id >= 0) {
          head += "# the tokenizer's mask token (id " + std::to_string(mask_token_id) +
                  ") is not below model.vocab (" + std::to_string(cfg.model.vocab) +
                  "), so data.mask_token_id is unset: masked positions get the token file's "
                  "vocab_size, which must be below model.vocab.\n";
        } else {
          head +=
              "# no mask token in the tokenizer files: masked positions get the token "
              "file's vocab_size, which must be below model.vocab.\n";
        }
      }
      finished = fs::WriteFileDurably(tmp + "/config.yaml", head + config::ToYaml(cfg));
    }
    if (finished.ok()) finished = fs::SyncDir(side);
    if (finished.ok()) finished = fs::SyncDir(tmp);
    if (finished.ok()) finished = fs::RenameNoReplace(tmp, out_dir);
    // Best effort: OUT is complete and in place; a failed fsync of its
    // parent only weakens durability across a crash.
    if (finished.ok()) (void)fs::SyncDir(fs::ParentDir(out_dir));
  }
  finished = comm.Agree(finished);
  if (!finished.ok()) {
    if (comm.rank() == 0) RemoveTree(tmp);
    return finished;
  }
  int64_t total_read = read_bytes;
  MPI_Allreduce(MPI_IN_PLACE, &total_read, 1, MPI_INT64_T, MPI_SUM, comm.handle());
  report.checkpoint = ckpt::CheckpointPath(out_dir, 0);
  report.config = out_dir + "/config.yaml";
  report.bytes_read = total_read;
  report.bytes_written = io.bytes;
  report.seconds = MPI_Wtime() - t0;
  return report;
}

}  // namespace l2l::interop
