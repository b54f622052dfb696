// Model fingerprint: XXH3-128 over a canonical serialization (documented at
// Model::fingerprint() in model.h). Changing anything here changes every fingerprint, which
// invalidates all persisted state: bump the version string when doing so on purpose.
#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/str_format.h"
#include "engine/model/model.h"
#include "tbb/parallel_for.h"
#include "xxhash.h"

namespace mnemo::engine {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the fingerprint serialization assumes a little-endian host");

constexpr std::string_view kVersion = "mnemo.model-fingerprint.v1";

// Appends little-endian fields to a byte string.
class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U64(uint64_t v) { out_.append(reinterpret_cast<const char*>(&v), sizeof(v)); }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    out_.append(reinterpret_cast<const char*>(&bits), sizeof(bits));
  }
  void Str(std::string_view s) {
    U64(s.size());
    out_.append(s.data(), s.size());
  }
  void Hash(const XXH128_hash_t& h) {
    U64(h.high64);
    U64(h.low64);
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

void WriteConfig(const ModelConfig& c, Writer& w) {
  w.Str(ArchName(c.arch));
  for (int v : {c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff, c.vocab_size,
                c.context_length}) {
    w.I64(v);
  }
  const RopeConfig& r = c.rope;
  w.F32(r.base);
  w.I64(r.rotary_dims);
  w.Str(RopeStyleName(r.style));
  w.Str(RopeScalingKindName(r.scaling));
  w.F32(r.factor);
  w.I64(r.original_context);
  for (float v : {r.low_freq_factor, r.high_freq_factor, r.beta_fast, r.beta_slow, r.attn_factor}) {
    w.F32(v);
  }
  w.U8(r.has_freq_factors);
  w.F32(c.norm_eps);
  for (bool b : {c.tied_embeddings, c.qkv_bias, c.attn_output_bias, c.qk_norm}) w.U8(b);
  w.I64(c.sliding_window);
}

}  // namespace

std::string ComputeModelFingerprint(const ModelConfig& config,
                                    const std::vector<TensorRef>& tensors) {
  std::vector<const TensorRef*> order(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) order[i] = &tensors[i];
  std::sort(order.begin(), order.end(),
            [](const TensorRef* a, const TensorRef* b) { return a->name < b->name; });

  // The data hashes are independent: compute them in parallel (the bulk of the work).
  std::vector<XXH128_hash_t> data_hash(order.size());
  tbb::parallel_for(size_t{0}, order.size(), [&](size_t i) {
    data_hash[i] = XXH3_128bits(order[i]->data, order[i]->bytes);
  });

  Writer w;
  w.Str(kVersion);
  WriteConfig(config, w);
  w.U64(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorRef& t = *order[i];
    w.Str(t.name);
    w.Str(kernels::DTypeName(t.dtype));
    w.U64(t.shape.size());
    for (int64_t d : t.shape) w.I64(d);
    w.U64(t.bytes);
    w.Hash(data_hash[i]);
  }
  const XXH128_hash_t h = XXH3_128bits(w.bytes().data(), w.bytes().size());
  return absl::StrFormat("%016x%016x", h.high64, h.low64);
}

}  // namespace mnemo::engine
