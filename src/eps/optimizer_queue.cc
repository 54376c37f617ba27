#include "l2l/eps/optimizer_queue.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "l2l/core/check.h"

namespace l2l::eps {

OptimizerQueue::OptimizerQueue(int num_threads, int num_layers) : pending_(num_layers, 0) {
  L2L_CHECK_GE(num_threads, 1);
  for (int i = 0; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

OptimizerQueue::~OptimizerQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void OptimizerQueue::Submit(int layer, int64_t n, std::function<void(int64_t, int64_t)> fn) {
  L2L_CHECK(layer >= 0 && layer < static_cast<int>(pending_.size()));
  std::vector<Task> chunks;
  if (n == 0) {
    chunks.push_back({layer, [fn] { fn(0, 0); }});
  }
  for (int64_t b = 0; b < n; b += kChunkElems) {
    const int64_t e = std::min(n, b + kChunkElems);
    chunks.push_back({layer, [fn, b, e] { fn(b, e); }});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_[layer] += static_cast<int64_t>(chunks.size());
    pending_total_ += static_cast<int64_t>(chunks.size());
    for (auto& c : chunks) tasks_.push_back(std::move(c));
  }
  work_cv_.notify_all();
}

void OptimizerQueue::SubmitTask(int layer, std::function<void()> fn) {
  L2L_CHECK(layer >= 0 && layer < static_cast<int>(pending_.size()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++pending_[layer];
    ++pending_total_;
    tasks_.push_back({layer, std::move(fn)});
  }
  work_cv_.notify_one();
}

void OptimizerQueue::WorkerLoop() {
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stop_ and drained
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task.run();
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_[task.layer];
      --pending_total_;
    }
    done_cv_.notify_all();
  }
}

void OptimizerQueue::WaitLayer(int layer) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_[layer] == 0; });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool OptimizerQueue::Pending(int layer) {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_[layer] > 0;
}

void OptimizerQueue::WaitAll() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_total_ == 0; });
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double OptimizerQueue::TakeWaitSeconds() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(wait_seconds_, 0.0);
}

double OptimizerQueue::PeekWaitSeconds() {
  std::lock_guard<std::mutex> lock(mu_);
  return wait_seconds_;
}

int DefaultOptimizerThreads(int ranks_on_node) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_on_node) - 1);
}

}  // namespace l2l::eps
