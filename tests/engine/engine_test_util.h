// Helpers of the Engine tests: test models, turns, from-scratch references, engines.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/generate.h"
#include "engine/model/model.h"
#include "engine/model/test_model.h"
#include "kernels/attention.h"
#include "kernels/half.h"
#include "tests/test_util.h"

namespace mnemo::engine {

inline std::unique_ptr<Model> OpenOrDie(const std::string& path) {
  auto m = Model::Open(path);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

inline std::unique_ptr<Model> TestModel(Architecture arch, int context_length = 1024) {
  static std::atomic<int> counter{0};
  const std::string path =
      absl::StrCat(testing::MakeTempDir(), "/e", counter.fetch_add(1), ".gguf");
  TestModelOptions o;
  o.arch = arch;
  o.dtype = kernels::DType::kF16;
  o.context_length = context_length;
  EXPECT_TRUE(WriteTestModel(o, path).ok());
  return OpenOrDie(path);
}

inline TurnParams UserTurn(std::string text, int max_tokens) {
  TurnParams p;
  p.messages.push_back({.role = "user", .content = std::move(text)});
  p.sampling.temperature = 0.0f;
  p.stop.max_tokens = max_tokens;
  return p;
}

inline TurnParams TokenTurn(std::vector<TokenId> ids, int max_tokens) {
  TurnParams p;
  p.tokens = std::move(ids);
  p.sampling.temperature = 0.0f;
  p.stop.max_tokens = max_tokens;
  return p;
}

inline TurnResult Await(absl::StatusOr<StreamPtr> stream) {
  EXPECT_TRUE(stream.ok()) << stream.status();
  if (!stream.ok()) return TurnResult{.status = stream.status()};
  return (*stream)->Wait();
}

// Greedy ids of an independent Generator over `prompt` (the issue-3 path, itself checked
// against the float64 reference): what recomputing the whole conversation gives.
inline std::vector<TokenId> FromScratch(const Model& model, const std::vector<TokenId>& prompt,
                                        int max_tokens, const StopParams& stop = {}) {
  auto gen = Generator::Create(model, {.threads = testing::TestKernelThreads()});
  EXPECT_TRUE(gen.ok()) << gen.status();
  GenerateRequest r;
  r.prompt_ids = prompt;
  r.sampling.temperature = 0.0f;
  r.stop = stop;
  r.stop.max_tokens = max_tokens;
  auto out = (*gen)->Generate(r);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? out->ids : std::vector<TokenId>{};
}

inline std::unique_ptr<Engine> MakeEngine(const Model& model, EngineOptions o = {}) {
  o.threads = testing::TestKernelThreads();
  if (o.kv_budget_bytes == (uint64_t{1} << 30)) o.kv_budget_bytes = 64 << 20;
  auto e = Engine::Create(model, o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

inline std::string NewSession(Engine& e, std::string_view tenant, SessionParams p = {}) {
  auto info = e.CreateSession(tenant, p);
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? info->id : "";
}

inline std::vector<TokenId> Tokens(Engine& e, std::string_view tenant, const std::string& id) {
  auto t = e.SessionTokens(tenant, id);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::vector<TokenId>{};
}

inline SessionInfo Info(Engine& e, std::string_view tenant, const std::string& id) {
  auto info = e.GetSession(tenant, id);
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? *info : SessionInfo{};
}

// The first byte where `a` and `b` differ (the shorter length if one is a prefix); -1 when
// equal. (Comparing KV bytes with EXPECT_EQ would print megabytes on a failure.)
inline int64_t FirstDiff(const std::string& a, const std::string& b) {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  if (ia == a.end() && ib == b.end()) return -1;
  return ia - a.begin();
}

inline std::string KvBytes(Engine& e, std::string_view tenant, const std::string& id) {
  auto b = e.SessionKvBytes(tenant, id);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : "";
}

// The KV layout of `model`'s sessions (f16, 16-token blocks: the engine's defaults).
inline kernels::KvLayout LayoutOf(const Model& model) {
  const ModelConfig& c = model.config();
  return {.n_layers = c.n_layers,
          .n_kv_heads = c.n_kv_heads,
          .head_dim = c.head_dim,
          .block_tokens = 16,
          .dtype = kernels::DType::kF16};
}

// Head `h`'s row of token `p` (layer, K or V) from SessionKvBytes's blocks.
inline std::vector<float> Row(const std::string& kv, const kernels::KvLayout& lay, int layer,
                              int is_v, int h, int64_t p) {
  const auto* elems = reinterpret_cast<const uint16_t*>(kv.data()) +
                      (p / lay.block_tokens) * lay.block_elems() +
                      lay.ElemOffset(layer, is_v, h, static_cast<int>(p % lay.block_tokens));
  std::vector<float> out(static_cast<size_t>(lay.head_dim));
  for (int d = 0; d < lay.head_dim; ++d) out[static_cast<size_t>(d)] = kernels::F16ToF32(elems[d]);
  return out;
}

// Two sessions' KV (SessionKvBytes) over their first n tokens, layer 0 — whose keys depend
// only on the token and its position — and every layer's first `sinks` keys: the largest
// |a - b| of a key relative to its row's largest element, and the rows whose values or sink
// keys differ in any bit.
struct KvAgreement {
  double worst_key = 0.0;
  int64_t value_mismatches = 0;
  int64_t sink_mismatches = 0;
};
inline KvAgreement CompareLayerZero(const std::string& a, const std::string& b,
                                    const kernels::KvLayout& lay, int64_t n, int64_t sinks) {
  KvAgreement out;
  for (int64_t p = 0; p < n; ++p) {
    for (int h = 0; h < lay.n_kv_heads; ++h) {
      const std::vector<float> ka = Row(a, lay, 0, 0, h, p);
      const std::vector<float> kb = Row(b, lay, 0, 0, h, p);
      float scale = 0.0f;
      for (float x : kb) scale = std::max(scale, std::fabs(x));
      for (int d = 0; d < lay.head_dim; ++d) {
        out.worst_key =
            std::max(out.worst_key, static_cast<double>(std::fabs(ka[d] - kb[d]) / scale));
      }
      out.value_mismatches += Row(a, lay, 0, 1, h, p) != Row(b, lay, 0, 1, h, p);
      for (int layer = 0; p < sinks && layer < lay.n_layers; ++layer) {
        out.sink_mismatches += Row(a, lay, layer, 0, h, p) != Row(b, lay, layer, 0, h, p);
      }
    }
  }
  return out;
}

// A session of tenant "t" holding `tokens` with their KV (a turn that samples nothing).
inline std::string SessionWithKv(Engine& e, const std::vector<TokenId>& tokens) {
  const std::string id = NewSession(e, "t");
  const TurnResult r = Await(e.Continue("t", id, TokenTurn(tokens, 0)));
  EXPECT_TRUE(r.status.ok()) << r.status;
  return id;
}

// Compacted session `id` (tenant "t", all n tokens with KV) against a session computed afresh
// from its tokens: layer 0's keys equal within two f16 roundings and the f32 rotation, its
// values and every layer's first `sinks` keys bit for bit. Returns the fresh session's id.
inline std::string ExpectKeysAtTheirNewPositions(Engine& e, const Model& model,
                                                 const std::string& id, int64_t n, int64_t sinks) {
  const std::string direct = SessionWithKv(e, Tokens(e, "t", id));
  const KvAgreement a =
      CompareLayerZero(KvBytes(e, "t", id), KvBytes(e, "t", direct), LayoutOf(model), n, sinks);
  EXPECT_LT(a.worst_key, 2e-3) << "re-rotated keys vs keys at the new positions";
  EXPECT_EQ(a.value_mismatches, 0);
  EXPECT_EQ(a.sink_mismatches, 0);
  return direct;
}

}  // namespace mnemo::engine
