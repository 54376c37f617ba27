#include "l2l/ckpt/model_layers.h"

namespace l2l::ckpt {

std::vector<LayerInfo> LayerInfosOf(const model::ModelDims& d) {
  std::vector<LayerInfo> layers;
  for (int l = 0; l < model::NumLayers(d); ++l) {
    const model::ParamLayout layout = model::LayoutForLayer(d, l);
    LayerInfo info;
    info.size_elems = layout.size_elems();
    for (const model::TensorSpec& t : layout.tensors()) {
      TensorEntry e;
      e.name = t.name;
      e.offset_elems = t.offset_elems;
      for (int i = 0; i < t.shape.rank(); ++i) e.shape.push_back(t.shape.dim(i));
      info.tensors.push_back(std::move(e));
    }
    layers.push_back(std::move(info));
  }
  return layers;
}

Status CheckLayersMatch(const std::string& path, const std::vector<LayerInfo>& stored,
                        const model::ModelDims& d) {
  const std::vector<LayerInfo> want = LayerInfosOf(d);
  if (want.size() != stored.size()) {
    return DataLoss(path + ": " + std::to_string(stored.size()) +
                    " layers, its config's model has " + std::to_string(want.size()));
  }
  for (size_t l = 0; l < want.size(); ++l) {
    if (want[l].size_elems != stored[l].size_elems || want[l].tensors != stored[l].tensors) {
      return DataLoss(path + ": layer " + std::to_string(l) +
                      "'s tensor index differs from the layout of its config's model");
    }
  }
  return OkStatus();
}

}  // namespace l2l::ckpt
