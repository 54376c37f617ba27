#include "l2l/eps/optimizer_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace l2l::eps {
namespace {

// Every element of [0, n) is visited exactly once, in chunks no larger than
// kChunkElems, and WaitLayer returns only after all of them.
TEST(OptimizerQueue, SubmitCoversTheRangeInChunksAndWaitLayerSeesAll) {
  OptimizerQueue q(3, 2);
  const int64_t n = 5 * OptimizerQueue::kChunkElems + 17;
  std::vector<std::atomic<int>> hits(n);
  std::atomic<int64_t> max_chunk{0};
  q.Submit(1, n, [&](int64_t b, int64_t e) {
    int64_t m = max_chunk.load();
    while (e - b > m && !max_chunk.compare_exchange_weak(m, e - b)) {
    }
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  q.WaitLayer(1);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
  EXPECT_LE(max_chunk.load(), OptimizerQueue::kChunkElems);
}

// WaitLayer(a) does not wait for layer b's work: a slow layer-1 task is still
// running when layer 0 is reported done.
TEST(OptimizerQueue, WaitLayerWaitsOnlyForItsLayer) {
  OptimizerQueue q(2, 2);
  std::atomic<bool> release{false}, layer1_done{false};
  q.SubmitTask(1, [&] {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    layer1_done = true;
  });
  std::atomic<bool> layer0_done{false};
  q.SubmitTask(0, [&] { layer0_done = true; });
  q.WaitLayer(0);
  EXPECT_TRUE(layer0_done.load());
  EXPECT_FALSE(layer1_done.load());
  release = true;
  q.WaitAll();
  EXPECT_TRUE(layer1_done.load());
  EXPECT_GE(q.TakeWaitSeconds(), 0.0);
  EXPECT_EQ(q.TakeWaitSeconds(), 0.0);  // taken
}

TEST(OptimizerQueue, EmptyRangeStillRunsOnceAndDestructorDrains) {
  std::atomic<int> calls{0};
  {
    OptimizerQueue q(1, 1);
    q.Submit(0, 0, [&](int64_t b, int64_t e) {
      EXPECT_EQ(b, 0);
      EXPECT_EQ(e, 0);
      calls.fetch_add(1);
    });
    for (int i = 0; i < 10; ++i) q.SubmitTask(0, [&] { calls.fetch_add(1); });
  }  // the destructor finishes queued work before joining
  EXPECT_EQ(calls.load(), 11);
}

}  // namespace
}  // namespace l2l::eps
