// The data module in one include: token files, the sampler, synthetic corpora.
#pragma once

#include "l2l/data/markov.h"
#include "l2l/data/sampler.h"
#include "l2l/data/token_file.h"
