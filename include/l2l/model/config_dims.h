// The model section of a run configuration as the layers' dimensions: the
// one mapping from config::ModelConfig (what users write, with its kind
// defaults applied) to model::ModelDims (what the layers compute with).
#pragma once

#include "l2l/config/config.h"
#include "l2l/model/model.h"

namespace l2l::model {

ModelDims DimsFromConfig(const config::ModelConfig& m);

}  // namespace l2l::model
