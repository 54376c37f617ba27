// Transformer layers as pure functions over caller-owned memory (DESIGN §2
// `model`): a layer's parameters are one flat buffer laid out by LayoutFor,
// activations and scratch come from the caller (the device arena), and no
// function here owns or caches anything. The engine runs layer 0 (embedding),
// layers 1..num_blocks (transformer blocks) and layer num_blocks+1 (head, with
// the loss) in a relay; see docs/model.md for the tensor list.
//
// Thread safety: every function is reentrant; concurrent calls must not share
// output or workspace buffers. All functions block until done (CPU).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "l2l/core/shape.h"
#include "l2l/core/status.h"
#include "l2l/kernels/params.h"

namespace l2l::model {

// The architectures, each an exact twin of one transformers class
// (docs/model.md lists every tensor and the transformers tensor it is):
//   kBert  — BertForMaskedLM: learned positions and token types, embedding
//            layernorm, post-norm blocks with GELU MLPs, an MLM head
//            (dense, GELU, layernorm, decoder with bias).
//   kGpt2  — GPT2LMHeadModel: learned positions, pre-norm blocks with GELU
//            MLPs, a final layernorm, an LM head without bias. Conv1D
//            weights are stored (in, out) as transformers stores them.
//   kLlama — LlamaForCausalLM (also Mistral, Qwen2): no position table
//            (rotary embeddings), RMSNorm, pre-norm blocks with SwiGLU MLPs,
//            grouped-query attention, no biases (Qwen2: q/k/v biases), a
//            final RMSNorm and an LM head without bias.
// bert and llama store linear weights (out, in) as nn.Linear does; every
// decoder (tied or not) is (vocab, hidden), the embedding table's shape.
enum class Arch { kBert, kGpt2, kLlama };

struct ModelDims {
  Arch arch = Arch::kBert;
  int num_blocks = 0;
  int hidden = 0;         // H
  int heads = 0;          // H % heads == 0
  int kv_heads = 0;       // llama: key/value heads, divides heads; 0 = heads
  int ffn = 0;            // F, the MLP's inner width
  int vocab = 0;          // V
  int seq_len = 0;        // S: tokens per sequence the layers run on
  int max_positions = 0;  // P: rows of the position table (bert, gpt2); 0 = seq_len
  int type_vocab = 2;     // bert token types
  // bert, llama: the token id whose embedding row gets no gradient from the
  // lookup and starts at 0 (torch's padding_idx = config.pad_token_id); -1 =
  // none. The tied decoder still trains that row.
  int pad_token_id = -1;
  // Drop probability, in [0, 1): every dropout site for bert and gpt2; the
  // attention probabilities only for llama (transformers' attention_dropout).
  double dropout = 0.1;
  double norm_eps = 1e-5;                     // layernorm / RMSNorm epsilon
  kernels::Gelu gelu = kernels::Gelu::kTanh;  // bert, gpt2 MLP (and bert head)
  bool tie_embeddings = false;                // the decoder is layer 0's token embedding table
  bool attention_bias = false;                // llama: q, k, v biases (Qwen2)
  kernels::RopeParams rope;                   // llama
  double init_std = 0.02;                     // N(0, init_std) for every normal tensor...
  // ...except the residual output projections (attention out, MLP out), which
  // use init_std / sqrt(2 * num_blocks) when set (GPT-2's initialisation).
  bool scale_residual_init = false;
};

// Properties that follow from the architecture (one owner: the arch).
inline bool IsCausal(const ModelDims& d) { return d.arch != Arch::kBert; }
inline bool IsPostNorm(const ModelDims& d) { return d.arch == Arch::kBert; }
inline bool UsesRmsNorm(const ModelDims& d) { return d.arch == Arch::kLlama; }
inline bool HasPositionTable(const ModelDims& d) { return d.arch != Arch::kLlama; }
inline bool HasTokenTypes(const ModelDims& d) { return d.arch == Arch::kBert; }
inline int KvHeads(const ModelDims& d) { return d.kv_heads > 0 ? d.kv_heads : d.heads; }
inline int HeadDim(const ModelDims& d) { return d.hidden / d.heads; }
inline int MaxPositions(const ModelDims& d) {
  return d.max_positions > 0 ? d.max_positions : d.seq_len;
}
// Width of the fused [q | k | v] projection: H + 2 * kv_heads * head_dim.
inline int64_t QkvWidth(const ModelDims& d) {
  return d.hidden + 2 * int64_t{KvHeads(d)} * HeadDim(d);
}
// The orientation of the blocks' linear weights (the head's decoder is always
// (vocab, hidden) = kOutIn).
inline kernels::WeightLayout LinearLayoutOf(const ModelDims& d) {
  return d.arch == Arch::kGpt2 ? kernels::WeightLayout::kInOut : kernels::WeightLayout::kOutIn;
}
const char* ArchName(Arch arch);  // "bert", "gpt2", "llama"

// InvalidArgument naming the first bad field (non-positive sizes, hidden not a
// multiple of heads, kv_heads not dividing heads, an odd llama head dimension,
// seq_len above max_positions, dropout outside [0, 1)). The layer functions
// CHECK the same conditions.
Status ValidateModelDims(const ModelDims& d);

// Layer 0 = embedding, 1..num_blocks = blocks, num_blocks+1 = head.
inline int NumLayers(const ModelDims& d) { return d.num_blocks + 2; }
enum class LayerKind { kEmbedding, kBlock, kHead };
LayerKind KindOf(const ModelDims& d, int layer);  // CHECKs 0 <= layer < NumLayers(d)
const char* LayerKindName(LayerKind kind);        // "embedding", "block", "head"

// Every tensor starts at a multiple of this many elements, and a layout's
// size_elems() is a multiple too (padding elements are 0 and get 0 gradient).
inline constexpr int64_t kParamAlignElems = 64;

enum class Init { kNormal, kZeros, kOnes };  // normal: N(0, TensorSpec::init_std)

struct TensorSpec {
  std::string name;      // e.g. "attn.q.weight"
  Shape shape;           // row-major, as the transformers tensor (see LinearLayoutOf)
  int64_t offset_elems;  // from the start of the layer's flat buffer
  Init init;
  double init_std = 0;  // kNormal only
  // Decayed under train.weight_decay_on: matrices (2-D weights and
  // embeddings; biases and norm gains are not).
  bool matrix() const { return shape.rank() >= 2; }
};

// Where a tensor starts: at the next kParamAlignElems boundary, or right
// after the previous tensor (kPacked), so that tensors one fused GEMM reads as
// one matrix ([q; k; v], [gate; up]) are contiguous.
enum class Placement { kAligned, kPacked };

// The named tensors of one layer inside its flat buffer, in a fixed order.
class ParamLayout {
 public:
  // Appends a tensor. Names must be unique.
  void Add(std::string name, Shape shape, Init init, double init_std = 0,
           Placement placement = Placement::kAligned);

  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  int64_t size_elems() const { return size_elems_; }    // padded to kParamAlignElems
  const TensorSpec* Find(std::string_view name) const;  // nullptr if absent
  // Offset of a tensor that must exist (CHECK).
  int64_t OffsetOf(std::string_view name) const;

 private:
  std::vector<TensorSpec> tensors_;
  int64_t end_elems_ = 0;   // end of the last tensor
  int64_t size_elems_ = 0;  // end_elems_ rounded up to kParamAlignElems
};

ParamLayout LayoutFor(const ModelDims& d, LayerKind kind);
inline ParamLayout LayoutForLayer(const ModelDims& d, int layer) {
  return LayoutFor(d, KindOf(d, layer));
}

// Writes elements [begin, end) of layer `layer`'s flat fp32 buffer to
// out[0, end-begin). Each element is a pure function of (seed, layer, tensor
// index, element index in tensor) via
// init_std * NormalFromKey(HashKeys(seed, RngPurpose::kInit, layer, tensor_index, i))
// — never of rank or world size; alignment padding is 0. Lets each rank
// initialise only its own shard. CHECKs 0 <= begin <= end <= size_elems.
void InitParamRange(const ModelDims& d, int layer, uint64_t seed, int64_t begin_elem,
                    int64_t end_elem, float* out);

struct StepContext {
  uint64_t seed = 0;
  int64_t step = 0;
  int layer = 0;  // the layer being run: part of the dropout keys
  bool training = true;
  const uint64_t* sample_keys = nullptr;  // [rows]: keys dropout per row (e.g. global sample index)
  // [rows, S] position ids in [0, seq_len), in the layer's memory (device
  // memory on the GPU), or nullptr: token s of a row is at position s. Set
  // when positions restart per document (data.doc_positions: restart); read
  // by the position table (bert, gpt2) and rotary embeddings (llama).
  const int32_t* positions = nullptr;
};

// Dropout is on iff ctx.training && d.dropout > 0 (then sample_keys must be
// set). A mask element is kept iff
//   UniformFloat(HashKeys(seed, RngPurpose::kDropout, step, layer, sample_key,
//                         site, element_index_within_row)) >= p,
// kept values scaled by 1/(1-p). `site` enumerates the dropout sites of a
// layer (below); element_index_within_row indexes the site's per-sequence
// tensor: (s * H + c) for activations [S, H], ((h * S + i) * S + j) for
// attention probabilities [heads, S, S]. So a recompute with the same ctx
// reproduces the masks exactly.
// Dropout sites (the heads have no dropout; llama has only the attention
// probabilities):
inline constexpr int kEmbeddingDropoutSite = 0;  // embedding output (after bert's layernorm)
inline constexpr int kAttnProbsDropoutSite = 0;  // block: attention probabilities
inline constexpr int kAttnOutDropoutSite = 1;    // block: attention projection output
inline constexpr int kMlpOutDropoutSite = 2;     // block: MLP output

// The head computes vocab logits for at most this many token rows at a time,
// so its workspace does not grow with rows * seq_len * vocab.
inline constexpr int kHeadLogitRows = 2048;

// Workspace sizes in elements of T (valid for T = float and double; the double
// variant uses at most as many elements), for `rows` sequences of seq_len
// tokens. O(rows * one layer's activations); the head's logits are capped at
// kHeadLogitRows x vocab.
int64_t EmbeddingWorkspaceElems(const ModelDims& d, int rows);
int64_t BlockWorkspaceElems(const ModelDims& d, int rows);
int64_t HeadWorkspaceElems(const ModelDims& d, int rows);

// All activations are [rows, seq_len, hidden] row-major. params = the layer's
// flat buffer laid out by LayoutFor. dparams are ACCUMULATED (+=) so
// micro-batches sum; input gradients (dx) are written. Outputs must not alias
// inputs. workspace holds the *WorkspaceElems(d, rows) elements; its contents
// on entry and exit are unspecified.

// bert:  out = Dropout(LN(tok_emb[tokens] + pos_emb[pos] + type_emb[token_types]))
// gpt2:  out = Dropout(tok_emb[tokens] + pos_emb[pos])
// (pos = ctx.positions, or s when that is nullptr)
// llama: out = tok_emb[tokens]
// tokens [rows, S] in [0, vocab). token_types [rows, S] in [0, type_vocab)
// (bert; nullptr means all 0; ignored otherwise).
template <typename T>
void EmbeddingForward(const ModelDims& d, const StepContext& ctx, const T* params,
                      const int32_t* tokens, const int32_t* token_types, int rows, T* out,
                      T* workspace);
// Recomputes the forward, back-propagates dout [rows, S, H] into dparams.
template <typename T>
void EmbeddingBackward(const ModelDims& d, const StepContext& ctx, const T* params,
                       const int32_t* tokens, const int32_t* token_types, int rows, const T* dout,
                       T* dparams, T* workspace);

// One transformer block, x -> y, both [rows, S, H]. attn_mask [rows, S]
// (1 = real token; keys with 0 are not attended to) may be nullptr (all real).
template <typename T>
void BlockForward(const ModelDims& d, const StepContext& ctx, const T* params, const T* x,
                  const uint8_t* attn_mask /*[rows,S], 1 = real token*/, int rows, T* y,
                  T* workspace);
// Recomputes the forward from x (same masks), then back-propagates dy: writes
// dx, accumulates dparams. dx must not alias x or dy.
template <typename T>
void BlockBackward(const ModelDims& d, const StepContext& ctx, const T* params, const T* x,
                   const uint8_t* attn_mask, int rows, const T* dy, T* dx, T* dparams,
                   T* workspace);

// The token rows of a micro-batch that carry a target, in ascending order,
// and their targets: what the head decodes. Pointers are in the memory the
// layer runs in (device memory on the GPU); count is known on the host.
struct TargetRows {
  const int32_t* rows = nullptr;     // (count) token row index in [0, rows * S)
  const int32_t* targets = nullptr;  // (count) in [0, vocab)
  int64_t count = 0;
};

// Host helper: fills rows / row_targets (n entries of room each) with the
// tokens of targets (n) that are not kNoTarget, in order; returns the count,
// or InvalidArgument naming the first target outside [0, vocab).
StatusOr<int64_t> CompactTargets(const int32_t* targets, int64_t n, int vocab, int32_t* rows,
                                 int32_t* row_targets);

struct HeadResult {
  double loss_sum = 0;  // summed cross-entropy (nats) over targets != -1
  int64_t count = 0;    // number of such targets
};

// Forward + loss + backward in one pass (the head is the last layer: its
// forward and backward are adjacent). Logits are computed only for token rows
// whose target != -1 (gathered), at most kHeadLogitRows at a time.
// targets [rows, S] in [0, vocab) or -1. grad_scale multiplies dL/dlogits (the
// engine passes 1/global_target_count so the loss is a global mean). dx
// [rows, S, H] (written; rows without a target get 0) and dparams
// (accumulated) may each be nullptr; both nullptr = eval (forward + loss only).
// With d.tie_embeddings the decoder weight is layer 0's tok_emb:
// embedding_params is layer 0's flat buffer and embedding_grads (null when
// dparams is) its gradient buffer, into which the decoder's gradient is
// accumulated (+=); both are ignored (may be null) otherwise.
template <typename T>
HeadResult HeadForwardBackward(const ModelDims& d, const StepContext& ctx, const T* params,
                               const T* embedding_params, const T* x,
                               const int32_t* targets /*[rows,S], -1 = none*/, int rows,
                               double grad_scale, T* dx, T* dparams, T* embedding_grads,
                               T* workspace);

// The head's logits for every token: logits [rows, S, V] from x [rows, S, H]
// (no dropout; embedding_params as above). For checks against transformers
// and for inference; the workspace is HeadWorkspaceElems(d, rows).
template <typename T>
void HeadLogits(const ModelDims& d, const T* params, const T* embedding_params, const T* x,
                int rows, T* logits, T* workspace);

}  // namespace l2l::model
