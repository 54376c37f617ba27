// The attention mask byte: one per token of a micro-batch, written by the
// sampler (data), carried by the relay, read by the attention kernels.
#pragma once

#include <cstdint>

namespace l2l {

// kMaskReal: the token is real; a key without it is never attended (padding).
// kMaskDocStart: the token starts a document (data.doc_attention: within).
// Under a causal mask, query i attends only keys j >= the last document start
// at or before i, so documents packed into one row never see each other;
// without a causal mask the bit is ignored.
inline constexpr uint8_t kMaskReal = 1;
inline constexpr uint8_t kMaskDocStart = 2;

}  // namespace l2l
