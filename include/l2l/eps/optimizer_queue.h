// OptimizerQueue: CPU worker threads that run per-layer optimizer work as
// soon as it is submitted (the "eager" of the eager parameter server), while
// the relay thread goes on.
//
// Work is submitted per layer as a range [0, n) split into fixed chunks; a
// layer is "ready" when every chunk submitted for it has finished. The relay
// calls WaitLayer(l) before it reads layer l's shard again (the next step's
// gather), so it waits only for the layer it needs.
//
// Thread safety: Submit/WaitLayer/WaitAll are called from one thread (the
// relay); the chunk functions run on the workers and must touch only their
// own range. The first exception-free contract: chunk functions must not throw.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace l2l::eps {

class OptimizerQueue {
 public:
  // Elements per chunk: large enough to amortise the hand-off, small enough
  // that several threads share one layer.
  static constexpr int64_t kChunkElems = 1 << 16;

  OptimizerQueue(int num_threads, int num_layers);
  ~OptimizerQueue();
  OptimizerQueue(const OptimizerQueue&) = delete;
  OptimizerQueue& operator=(const OptimizerQueue&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()); }

  // Runs fn(begin, end) over chunks covering [0, n); `layer` stays not-ready
  // until all of them finish. n == 0 submits one call fn(0, 0).
  void Submit(int layer, int64_t n, std::function<void(int64_t, int64_t)> fn);
  // Runs fn() once as a single task for `layer`.
  void SubmitTask(int layer, std::function<void()> fn);
  void WaitLayer(int layer);
  // Whether `layer` has unfinished work now (does not wait).
  bool Pending(int layer);
  void WaitAll();

  // Seconds the relay thread spent blocked in WaitLayer/WaitAll since the
  // last call (the metrics' optimizer_wait_s).
  double TakeWaitSeconds();
  // The same total without resetting it.
  double PeekWaitSeconds();

 private:
  struct Task {
    int layer;
    std::function<void()> run;
  };
  void WorkerLoop();

  std::mutex mu_;
  std::condition_variable work_cv_;  // workers wait for tasks
  std::condition_variable done_cv_;  // relay waits for layers
  std::deque<Task> tasks_;
  std::vector<int64_t> pending_;  // per layer: submitted and unfinished tasks
  int64_t pending_total_ = 0;
  bool stop_ = false;
  double wait_seconds_ = 0;
  std::vector<std::thread> workers_;
};

// Default worker count when exec.optimizer_threads is 0: the cores of this
// node divided among its ranks, less one for the relay thread, at least 1.
int DefaultOptimizerThreads(int ranks_on_node);

}  // namespace l2l::eps
