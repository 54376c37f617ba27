// The presets under configs/ parse, and the ones with real shapes are the
// models they name: their parameter count (every tensor of every layer
// layout, tied tables once) equals transformers' for the same model, counted
// with transformers 5.24 on the meta device.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "l2l/config/config.h"
#include "l2l/model/config_dims.h"
#include "l2l/model/model.h"
#include "l2l/train/trainer.h"

namespace l2l::train {
namespace {

const std::string kDir = L2L_CONFIG_DIR;

int64_t ParameterCount(const model::ModelDims& d) {
  int64_t n = 0;
  for (int l = 0; l < model::NumLayers(d); ++l) {
    const model::ParamLayout layout = model::LayoutForLayer(d, l);
    for (const model::TensorSpec& t : layout.tensors()) {
      n += t.shape.num_elements();
    }
  }
  return n;
}

TEST(Presets, EveryPresetParses) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(kDir)) {
    if (e.path().extension() != ".yaml") continue;
    StatusOr<config::Config> c = config::LoadConfig(e.path().string(), {});
    EXPECT_TRUE(c.ok()) << c.status().message();
    if (c.ok()) {
      EXPECT_TRUE(model::ValidateModelDims(model::DimsFromConfig(c->model)).ok()) << e.path();
    }
    ++n;
  }
  EXPECT_GE(n, 11);
}

TEST(Presets, RealShapesHaveTheirModelsParameterCounts) {
  const std::map<std::string, int64_t> want = {
      {"gpt2", 124439808},        {"gpt2-xl", 1557611200},       {"bert-base", 109514298},
      {"bert-large", 335174458},  {"llama-3.2-1b", 1235814400},  {"llama-3-8b", 8030261248},
      {"qwen2.5-7b", 7615616512}, {"tinyllama-1.1b", 1100048384}};
  for (const auto& [name, count] : want) {
    StatusOr<config::Config> c = config::LoadConfig(kDir + "/" + name + ".yaml", {});
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_EQ(ParameterCount(model::DimsFromConfig(c->model)), count) << name;
  }
}

}  // namespace
}  // namespace l2l::train
