// l2l-train: train a model layer to layer.
//
//   mpirun -np N l2l-train --config FILE [--set key=value]... [--resume auto|PATH]
//                          [--init-from PATH] [--eval-only] [--print-config]
//
// Every rank parses the same arguments and config; failures are agreed across
// ranks, printed once (rank 0) as one line, and exit with code 2 on every
// rank.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "l2l/comm/mpi_comm.h"
#include "l2l/config/config.h"
#include "l2l/train/signals.h"
#include "l2l/train/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: l2l-train --config FILE [--set key=value]... [--resume auto|PATH] [--init-from PATH]\n"
    "                 [--eval-only] [--print-config]\n"
    "  --config FILE      YAML configuration (see docs/config.md)\n"
    "  --set key=value    override one key, e.g. --set model.layers=48 (repeatable)\n"
    "  --resume auto|PATH continue from a checkpoint: auto = the latest in checkpoint.dir\n"
    "                     (or start fresh if there is none); any world size with the same\n"
    "                     global batch\n"
    "  --init-from PATH   fine-tune: start from a checkpoint's weights (file or directory,\n"
    "                     e.g. one made by l2l-ckpt import) with fresh optimizer state at\n"
    "                     step 0 (sets train.init_from; a checkpoint --resume loads wins)\n"
    "  --eval-only        with --resume or --init-from: the mean loss and perplexity of\n"
    "                     those weights over the whole eval set once (data.eval_path, or\n"
    "                     data.path's held-out share), the same at any world size; trains\n"
    "                     nothing, writes nothing\n"
    "  --print-config     print the effective configuration as YAML and exit\n"
    "SIGTERM or SIGUSR1 on any rank: all ranks finish the step, save, and exit 0.\n";

struct Args {
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;
  bool has_resume = false;
  std::string init_from;
  bool has_init_from = false;
  bool print_config = false;
  bool eval_only = false;
  bool help = false;
};

l2l::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> l2l::StatusOr<std::string> {
      if (i + 1 >= argc) return l2l::InvalidArgument(std::string(flag) + " needs a value");
      return std::string(argv[++i]);
    };
    if (arg == "--config") {
      ASSIGN_OR_RETURN(a.config, value("--config"));
    } else if (arg.rfind("--config=", 0) == 0) {
      a.config = arg.substr(9);
    } else if (arg == "--set") {
      ASSIGN_OR_RETURN(std::string v, value("--set"));
      a.overrides.push_back(v);
    } else if (arg.rfind("--set=", 0) == 0) {
      a.overrides.push_back(arg.substr(6));
    } else if (arg == "--resume") {
      ASSIGN_OR_RETURN(a.resume, value("--resume"));
      a.has_resume = true;
    } else if (arg.rfind("--resume=", 0) == 0) {
      a.resume = arg.substr(9);
      a.has_resume = true;
    } else if (arg == "--init-from") {
      ASSIGN_OR_RETURN(a.init_from, value("--init-from"));
      a.has_init_from = true;
    } else if (arg.rfind("--init-from=", 0) == 0) {
      a.init_from = arg.substr(12);
      a.has_init_from = true;
    } else if (arg == "--eval-only") {
      a.eval_only = true;
    } else if (arg == "--print-config") {
      a.print_config = true;
    } else if (arg == "--help" || arg == "-h") {
      a.help = true;
    } else {
      return l2l::InvalidArgument("unknown argument '" + arg + "' (see --help)");
    }
  }
  if (!a.help && a.config.empty()) return l2l::InvalidArgument("--config FILE is required");
  // An empty value is a mistake (an unset shell variable), never "no resume":
  // training from scratch would then save over the checkpoints it meant to continue.
  if (a.has_resume && a.resume.empty()) {
    return l2l::InvalidArgument("--resume needs 'auto' or a checkpoint path, got an empty one");
  }
  if (a.has_init_from && a.init_from.empty()) {
    return l2l::InvalidArgument("--init-from needs a checkpoint path, got an empty one");
  }
  if (a.eval_only && !a.has_resume && !a.has_init_from) {
    return l2l::InvalidArgument(
        "--eval-only needs the weights to evaluate: --resume auto|PATH or --init-from PATH");
  }
  return a;
}

// --eval-only: the weights of the checkpoint `args` names, over the eval set.
l2l::Status EvalOnly(const Args& args, const l2l::config::Config& cfg, l2l::MpiRuntime& mpi,
                     l2l::MpiComm& comm) {
  using l2l::train::Trainer;
  ASSIGN_OR_RETURN(auto trainer, Trainer::Create(cfg, &comm, mpi.local_size(), mpi.local_rank(),
                                                 Trainer::Purpose::kEvaluate));
  if (args.has_resume) {
    RETURN_IF_ERROR(trainer->Resume(args.resume));
    if (!trainer->resumed()) {
      return l2l::NotFound("--eval-only --resume " + args.resume + ": no checkpoint in " +
                           cfg.checkpoint.dir + " to evaluate");
    }
  } else {
    RETURN_IF_ERROR(trainer->InitFrom(args.init_from));
  }
  ASSIGN_OR_RETURN(const l2l::train::EvalSummary r, trainer->EvaluateAll());
  if (comm.rank() == 0) {
    const std::string set = cfg.data.eval_path.empty()
                                ? cfg.data.path + " (its held-out share, data.eval_fraction)"
                                : cfg.data.eval_path;
    // A fine-tune's source (--init-from) has no step of this run's.
    const std::string at =
        args.has_resume ? " at step " + std::to_string(trainer->step()) : std::string();
    std::printf("l2l: eval-only: %s%s over %s\n", trainer->last_checkpoint().c_str(), at.c_str(),
                set.c_str());
    std::printf(
        "eval_samples=%lld\neval_batches=%lld\neval_targets=%lld\neval_loss=%.9g\n"
        "perplexity=%.9g\n",
        static_cast<long long>(r.samples), static_cast<long long>(r.batches),
        static_cast<long long>(r.targets), r.loss, std::exp(r.loss));
  }
  return l2l::OkStatus();
}

l2l::Status Main(int argc, char** argv, l2l::MpiRuntime& mpi, l2l::MpiComm& comm) {
  auto args = ParseArgs(argc, argv);
  RETURN_IF_ERROR(comm.Agree(args.status()));
  if (args->help) {
    if (comm.rank() == 0) std::fputs(kUsage, stdout);
    return l2l::OkStatus();
  }
  auto cfg = l2l::config::LoadConfig(args->config, args->overrides);
  RETURN_IF_ERROR(comm.Agree(cfg.status()));
  if (args->has_init_from) cfg->train.init_from = args->init_from;
  if (args->print_config) {
    if (comm.rank() == 0) std::fputs(l2l::config::ToYaml(*cfg).c_str(), stdout);
    return l2l::OkStatus();
  }
  if (args->eval_only) return EvalOnly(*args, *cfg, mpi, comm);
  ASSIGN_OR_RETURN(auto trainer,
                   l2l::train::Trainer::Create(*cfg, &comm, mpi.local_size(), mpi.local_rank()));
  if (!args->resume.empty()) RETURN_IF_ERROR(trainer->Resume(args->resume));
  // A run that resumed its own checkpoint continues it; otherwise a
  // fine-tune starts from the given weights.
  if (!trainer->resumed() && !cfg->train.init_from.empty()) {
    RETURN_IF_ERROR(trainer->InitFrom(cfg->train.init_from));
  }
  RETURN_IF_ERROR(trainer->Run());
  if (trainer->stopped_by_signal()) {
    if (comm.rank() == 0) {
      std::printf("l2l: stop requested by signal: saved %s at step %lld, exiting\n",
                  trainer->last_checkpoint().c_str(), static_cast<long long>(trainer->step()));
    }
    return l2l::OkStatus();
  }
  if (comm.rank() == 0) {
    std::printf("l2l: done, %lld steps; metrics in %s/metrics.jsonl\n",
                static_cast<long long>(trainer->step()), cfg->log.dir.c_str());
  }
  return l2l::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  l2l::train::InstallStopSignalHandlers();
  int code = 0;
  {
    l2l::MpiComm comm;
    const l2l::Status s = Main(argc, argv, mpi, comm);
    if (s.code() == l2l::StatusCode::kInternal) {
      // A communicator or library failure may be local to this rank, with
      // the others blocked in a collective: abort the job (DESIGN §7).
      l2l::MpiRuntime::AbortJob(
          "l2l-train: rank " + std::to_string(comm.rank()) + ": " + s.message(), 1);
    }
    if (!s.ok()) {
      // Every other error was agreed across ranks: one line, from rank 0.
      if (comm.rank() == 0) {
        std::fprintf(stderr, "l2l-train: %s\n", s.message().c_str());
        std::fflush(stderr);
      }
      code = l2l::ExitCodeFor(s);
    }
  }
  return code;
}
