// Test-only: the committed transformers fixtures (tests/fixtures/hf, made by
// tests/fixtures/make_hf_fixtures.py) loaded into l2l's layouts through the
// name map, with their inputs and expected outputs, and the comparison of a
// model's gradients with transformers'. Shared by hf_fixture_test.cc (the
// layer functions) and hf_fixture_exec_test.cc (the layer executors, CPU and
// CUDA).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "l2l/interop/hf_config.h"
#include "l2l/interop/hf_names.h"
#include "l2l/interop/safetensors.h"
#include "l2l/model/config_dims.h"
#include "l2l/model/model.h"

namespace l2l::interop::testing {

using model::ModelDims;

// The fixtures: $L2L_FIXTURE_DIR when set (a bundle run elsewhere), else the
// source tree's.
inline const std::string kDir = [] {
  const char* env = std::getenv("L2L_FIXTURE_DIR");
  return std::string(env != nullptr && *env != '\0' ? env : L2L_FIXTURE_DIR);
}();
constexpr int kRows = 2, kSeq = 12;  // make_hf_fixtures.py's B and S

inline double RelMaxErr(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(double(got[i]) - want[i]));
    den = std::max(den, std::abs(double(want[i])));
  }
  return den == 0 ? num : num / den;
}

inline std::vector<float> F32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.Find(name);
  EXPECT_NE(t, nullptr) << f.path() << ": no tensor " << name;
  if (t == nullptr) return {};
  int64_t n = 1;
  for (int64_t d : t->shape) n *= d;
  std::vector<float> v(n);
  EXPECT_TRUE(f.ReadF32(*t, 0, n, v.data()).ok());
  return v;
}

inline std::vector<int32_t> I32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.Find(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<int32_t> v(int64_t{kRows} * kSeq);
  EXPECT_TRUE(f.ReadI32(*t, 0, static_cast<int64_t>(v.size()), v.data()).ok());
  return v;
}

struct Fixture {
  ModelDims d;
  std::vector<std::vector<float>> params;  // per layer, l2l layout
};

// config.json -> dims, model.safetensors -> layer buffers through the name map.
inline Fixture Load(const std::string& name) {
  Fixture fx;
  const std::string dir = kDir + "/" + name;
  StatusOr<config::ModelConfig> cfg = ModelConfigFromHfFile(dir + "/config.json", kSeq);
  EXPECT_TRUE(cfg.ok()) << cfg.status().message();
  fx.d = model::DimsFromConfig(*cfg);
  StatusOr<SafetensorsFile> w = SafetensorsFile::Open(dir + "/model.safetensors");
  EXPECT_TRUE(w.ok()) << w.status().message();
  size_t mapped = 0;
  for (int l = 0; l < model::NumLayers(fx.d); ++l) {
    const model::ParamLayout layout = model::LayoutForLayer(fx.d, l);
    fx.params.emplace_back(layout.size_elems(), 0.0f);
    for (const HfTensor& t : HfTensorsOfLayer(fx.d, l)) {
      const model::TensorSpec* spec = layout.Find(t.l2l);
      const SafetensorsTensor* st = w->Find(t.hf);
      EXPECT_NE(st, nullptr) << name << ": model.safetensors lacks " << t.hf;
      if (st == nullptr) continue;
      std::vector<int64_t> want;
      for (int i = 0; i < spec->shape.rank(); ++i) want.push_back(spec->shape.dim(i));
      EXPECT_EQ(st->shape, want) << name << ": " << t.hf << " vs l2l " << t.l2l;
      EXPECT_TRUE(w->ReadF32(*st, 0, spec->shape.num_elements(),
                             fx.params.back().data() + spec->offset_elems)
                      .ok());
      ++mapped;
    }
  }
  // Every tensor of the file is one of l2l's (tied aliases are not stored).
  EXPECT_EQ(mapped, w->header().tensors.size()) << name << ": unmapped tensors in the file";
  return fx;
}

// The inputs of a fixture and what transformers computed from them.
struct Expected {
  std::optional<SafetensorsFile> file;  // l2l_expected.safetensors (the gradients)
  std::vector<int32_t> ids, types, targets;
  std::vector<uint8_t> mask;
  std::vector<float> logits;
  float loss = 0;
  int64_t target_count = 0;
};

inline Expected LoadExpected(const std::string& name) {
  StatusOr<SafetensorsFile> e =
      SafetensorsFile::Open(kDir + "/" + name + "/l2l_expected.safetensors");
  EXPECT_TRUE(e.ok()) << e.status().message();
  Expected x;
  x.ids = I32(*e, "input_ids");
  x.types = I32(*e, "token_type_ids");
  x.targets = I32(*e, "targets");
  const std::vector<int32_t> mask = I32(*e, "attention_mask");
  x.mask.assign(mask.begin(), mask.end());
  x.logits = F32(*e, "logits");
  x.loss = F32(*e, "loss")[0];
  for (int32_t t : x.targets) x.target_count += t != kNoTarget;
  x.file.emplace(std::move(e).value());
  return x;
}

// Every l2l tensor's gradient (grads: per layer, l2l layout) against
// transformers' "grad.<name>", to `tol` relative (max-norm per tensor). BERT's
// key bias is 0 in exact arithmetic (softmax ignores a shift of all of a
// query's scores): both sides hold rounding noise, far below the query bias's.
inline void ExpectGradientsMatch(const model::ModelDims& d, const SafetensorsFile& e,
                                 const std::vector<std::vector<float>>& grads, double tol) {
  int checked = 0;
  for (const HfTensor& t : HfTensorsOf(d)) {
    const model::ParamLayout layout = model::LayoutForLayer(d, t.layer);
    const model::TensorSpec* spec = layout.Find(t.l2l);
    const std::vector<float> want = F32(e, "grad." + t.hf);
    ASSERT_EQ(static_cast<int64_t>(want.size()), spec->shape.num_elements()) << t.hf;
    const float* got = grads[t.layer].data() + spec->offset_elems;
    if (d.arch == model::Arch::kBert && t.l2l == "attn.k.bias") {
      std::string q_name = t.hf;
      q_name.replace(q_name.find("key"), 3, "query");
      const std::vector<float> q = F32(e, "grad." + q_name);
      double qmax = 0, noise = 0;
      for (float v : q) qmax = std::max(qmax, double(std::abs(v)));
      for (int64_t i = 0; i < spec->shape.num_elements(); ++i) {
        noise = std::max({noise, double(std::abs(got[i])), double(std::abs(want[i]))});
      }
      EXPECT_LT(noise, std::max(1e-4, tol) * qmax) << t.hf;
    } else {
      EXPECT_LT(RelMaxErr(got, want.data(), spec->shape.num_elements()), tol)
          << "gradient of " << t.hf << " (l2l " << t.l2l << ")";
    }
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

// Logits [rows, S, V] of the model `params` (per layer, l2l layout) on the
// fixture's inputs, through the CPU layer functions, eval mode.
inline std::vector<float> ForwardLogits(const model::ModelDims& d,
                                        const std::vector<std::vector<float>>& params,
                                        const Expected& x) {
  const int64_t N = int64_t{kRows} * kSeq, H = d.hidden;
  const model::StepContext ctx{
      .seed = 0, .step = 0, .layer = 0, .training = false, .sample_keys = nullptr};
  std::vector<float> ws(
      std::max({model::EmbeddingWorkspaceElems(d, kRows), model::BlockWorkspaceElems(d, kRows),
                model::HeadWorkspaceElems(d, kRows)}));
  std::vector<float> a(N * H), b(N * H), logits(N * d.vocab);
  model::EmbeddingForward(d, ctx, params[0].data(), x.ids.data(), x.types.data(), kRows, a.data(),
                          ws.data());
  for (int l = 1; l <= d.num_blocks; ++l) {
    model::BlockForward(d, ctx, params[l].data(), a.data(), x.mask.data(), kRows, b.data(),
                        ws.data());
    std::swap(a, b);
  }
  model::HeadLogits(d, params[d.num_blocks + 1].data(), params[0].data(), a.data(), kRows,
                    logits.data(), ws.data());
  return logits;
}

// The fixture directories, sorted.
inline std::vector<std::string> FixtureNames() {
  return {"bert",        "gpt2",    "llama-gqa-tied", "llama-gqa-untied",
          "llama3-rope", "mistral", "qwen2-bias"};
}

}  // namespace l2l::interop::testing
