// "It learns": small models trained on synthetic Markov corpora whose
// entropy rate is known exactly, so the loss has a floor to be measured
// against (issue: the L2L engine). Single rank, CPU backend.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <string>

#include "l2l/comm/mpi_comm.h"
#include "l2l/data/data.h"
#include "l2l/train/trainer.h"

namespace l2l::train {
namespace {

struct Corpus {
  std::string path;
  double entropy_rate = 0;
  double unigram_entropy = 0;
};

Corpus MakeCorpus(const std::string& name, int order, int64_t tokens) {
  Corpus c;
  c.path = "learning_test_" + name + ".tok";
  data::MarkovSource src({/*vocab=*/16, order, /*seed=*/3, /*concentration=*/0.1});
  EXPECT_TRUE(data::WriteTokenFile(c.path, 16, src.Generate(tokens)).ok());
  c.entropy_rate = src.EntropyRateNats();
  auto file = data::TokenFile::Open(c.path);
  EXPECT_TRUE(file.ok());
  c.unigram_entropy = data::UnigramEntropyNats(*file).value();
  return c;
}

config::Config SmallModel(config::ModelKind kind, const std::string& data_path) {
  config::Config c;
  c.model.kind = kind;
  c.model.layers = 2;
  c.model.hidden = 64;
  c.model.heads = 4;
  c.model.ffn = 256;
  c.model.vocab = kind == config::ModelKind::kBert ? 17 : 16;
  c.model.seq_len = 32;
  config::ApplyModelDefaults(&c.model);
  c.model.dropout = 0.0;
  c.data.path = data_path;
  c.data.eval_fraction = 0.02;
  c.train.seed = 5;
  c.train.lr = 3e-3;
  c.train.warmup_steps = 20;
  c.train.weight_decay = 0.0;
  c.train.beta2 = 0.98;
  c.train.global_batch = 32;
  c.train.micro_batch = 8;
  c.train.eval_batches = 8;
  c.log.dir = "learning_test_runs";
  c.checkpoint.dir = "learning_test_ckpt";
  c.checkpoint.at_end = false;  // evaluated in memory
  return c;
}

double TrainAndEvaluate(const config::Config& cfg) {
  MpiComm comm;
  auto trainer = Trainer::Create(cfg, &comm, 1);
  EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
  if (!trainer.ok()) return 1e9;
  EXPECT_TRUE((*trainer)->Run().ok());
  auto eval = (*trainer)->Evaluate();
  EXPECT_TRUE(eval.ok());
  return eval.ok() ? *eval : 1e9;
}

// A causal model reaches the entropy rate of an order-2 source: it must learn
// to attend to the previous two tokens.
TEST(Learning, GptReachesTheEntropyRateOfAnOrder2Source) {
  const Corpus corpus = MakeCorpus("order2", 2, 1000000);
  config::Config cfg = SmallModel(config::ModelKind::kGpt, corpus.path);
  cfg.train.steps = 1200;
  const double eval = TrainAndEvaluate(cfg);
  std::printf("gpt: eval loss %.4f nats, source entropy rate %.4f, gap %.4f (limit 0.15)\n", eval,
              corpus.entropy_rate, eval - corpus.entropy_rate);
  EXPECT_LT(eval - corpus.entropy_rate, 0.15);
}

// The same for Llama (RMSNorm, rotary positions, SwiGLU, grouped-query
// attention, tied embeddings): it has no position table, so attending to the
// previous two tokens must come from the rotary embeddings.
TEST(Learning, LlamaReachesTheEntropyRateOfAnOrder2Source) {
  const Corpus corpus = MakeCorpus("order2-llama", 2, 1000000);
  config::Config cfg = SmallModel(config::ModelKind::kLlama, corpus.path);
  cfg.model.kv_heads = 2;
  cfg.model.ffn = 176;  // SwiGLU's three matrices: about the GELU MLP's parameters
  cfg.model.tie_embeddings = true;
  cfg.train.steps = 1200;
  const double eval = TrainAndEvaluate(cfg);
  std::printf("llama: eval loss %.4f nats, source entropy rate %.4f, gap %.4f (limit 0.15)\n", eval,
              corpus.entropy_rate, eval - corpus.entropy_rate);
  EXPECT_LT(eval - corpus.entropy_rate, 0.15);
}

// A BERT model's masked-token loss falls far below what token frequencies
// alone give (the unigram entropy): it uses both sides' context.
TEST(Learning, BertMlmFallsWellBelowTheUnigramEntropy) {
  const Corpus corpus = MakeCorpus("order1", 1, 500000);
  config::Config cfg = SmallModel(config::ModelKind::kBert, corpus.path);
  cfg.model.pad_token_id = -1;  // token 0 is a symbol of the synthetic corpus, not padding
  // Post-norm (BERT's own placement) leaves its plateau later than pre-norm.
  cfg.train.steps = 600;
  const double eval = TrainAndEvaluate(cfg);
  std::printf("bert: MLM eval loss %.4f nats, unigram entropy %.4f, entropy rate %.4f\n", eval,
              corpus.unigram_entropy, corpus.entropy_rate);
  EXPECT_LT(eval, corpus.unigram_entropy - 0.5);
}

}  // namespace
}  // namespace l2l::train
