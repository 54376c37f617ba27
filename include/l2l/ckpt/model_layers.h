// The checkpoint's view of a model: each layer's flat size and tensor index,
// from the model's layouts (one place, shared by the trainer, import and
// export).
#pragma once

#include <string>
#include <vector>

#include "l2l/ckpt/checkpoint.h"
#include "l2l/model/model.h"

namespace l2l::ckpt {

std::vector<LayerInfo> LayerInfosOf(const model::ModelDims& d);

// OK when the layers a checkpoint file holds (`stored`, as Inspect reads
// them) are those of the model `d` its config describes; else DataLoss
// naming `path` and the first layer that differs (a file whose data does not
// fit its own config: never read it as that model).
Status CheckLayersMatch(const std::string& path, const std::vector<LayerInfo>& stored,
                        const model::ModelDims& d);

}  // namespace l2l::ckpt
