// Small rules shared by the GGUF and Hugging Face config readers. Internal to engine/model.
#pragma once

#include <cmath>
#include <cstdint>

namespace mnemo::engine::model_internal {

// YaRN's default magnitude scale for a context extension `factor` (HF get_mscale,
// llama.cpp rope_yarn): 0.1 * ln(factor) + 1 for factor > 1, else 1.
inline double YarnDefaultMscale(double factor) {
  return factor > 1.0 ? 0.1 * std::log(factor) + 1.0 : 1.0;
}

// A special-token id as stored in a file, or -1 when it is unset or out of range (as
// llama.cpp does, a bad special id is ignored rather than fatal: files in the wild store
// u32 -1 and ids past the vocabulary).
inline int32_t SpecialId(int64_t id, int vocab_size) {
  return (id >= 0 && id < vocab_size) ? static_cast<int32_t>(id) : -1;
}

}  // namespace mnemo::engine::model_internal
