// The trainer's metrics: metrics.jsonl, one JSON object per step.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "l2l/train/trainer.h"

namespace l2l::train {

Status Trainer::OpenMetrics() {
  if (comm_->rank() != 0) return OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(cfg_.log.dir, ec);
  const std::string path = cfg_.log.dir + "/metrics.jsonl";
  metrics_ = std::fopen(path.c_str(), "a");
  if (metrics_ == nullptr) {
    return IoError("log.dir: cannot write " + path + " (" +
                   (ec ? ec.message() : std::string(std::strerror(errno))) + ")");
  }
  return OkStatus();
}

void Trainer::WriteRecord(const StepRecord& r) {
  if (metrics_ == nullptr) return;
  std::fprintf(metrics_,
               "{\"step\": %lld, \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": %.9g, "
               "\"tokens\": %lld, \"step_s\": %.6f, \"tokens_per_s\": %.3f, "
               "\"device_peak_bytes\": %lld, \"host_eps_bytes\": %lld, \"compute_s\": %.6f, "
               "\"gather_wait_s\": %.6f, \"optimizer_wait_s\": %.6f, \"gathers\": %lld",
               static_cast<long long>(r.step), r.loss, r.lr, r.grad_norm,
               static_cast<long long>(r.tokens), r.step_s, r.tokens_per_s,
               static_cast<long long>(r.device_peak_bytes),
               static_cast<long long>(r.host_eps_bytes), r.compute_s, r.gather_wait_s,
               r.optimizer_wait_s, static_cast<long long>(r.gathers));
  if (r.eval_loss) std::fprintf(metrics_, ", \"eval_loss\": %.9g", *r.eval_loss);
  if (r.ckpt_save) {
    std::fprintf(metrics_, ", \"ckpt_save_s\": %.6f, \"ckpt_save_gb_per_s\": %.4f",
                 r.ckpt_save->seconds, r.ckpt_save->gb_per_s());
  }
  if (r.ckpt_load) {
    std::fprintf(metrics_, ", \"ckpt_load_s\": %.6f, \"ckpt_load_gb_per_s\": %.4f",
                 r.ckpt_load->seconds, r.ckpt_load->gb_per_s());
  }
  std::fprintf(metrics_, "}\n");
  std::fflush(metrics_);
}

}  // namespace l2l::train
