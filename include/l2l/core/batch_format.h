// The encodings a micro-batch carries across modules: written by the sampler
// (data), carried by the relay (sched), read by the layers (model) and the
// kernels. One owner for each, here.
#pragma once

#include <cstdint>

namespace l2l {

// The attention mask byte, one per token.
// kMaskReal: the token is real; a key without it is never attended (padding).
// kMaskDocStart: the token starts a document (data.doc_attention: within).
// Under a causal mask, query i attends only keys j >= the last document start
// at or before i, so documents packed into one row never see each other;
// without a causal mask the bit is ignored.
inline constexpr uint8_t kMaskReal = 1;
inline constexpr uint8_t kMaskDocStart = 2;

// The target id of a token without a loss (MLM: not masked; a prompt token of
// an SFT example; padding): the cross-entropy skips it.
inline constexpr int32_t kNoTarget = -1;

}  // namespace l2l
