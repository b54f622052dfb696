// The facts `mnemo inspect` reports about a model, as JSON (the text output is printed
// from the same object, so the two cannot disagree).
#pragma once

#include <string>

#include "engine/model/model.h"
#include "nlohmann/json.hpp"

namespace mnemo::cli {

// Keys: path, format, file_bytes, gguf_version (GGUF only), config{...}, tokenizer{...},
// chat_template{family, present}, fingerprint, tensors[{name, shape, dtype, bytes}] (when
// with_tensors), totals{tensors, params, bytes, by_dtype{dtype: {tensors, params, bytes}}}.
nlohmann::json InspectJson(const engine::Model& model, const std::string& path, bool with_tensors);

}  // namespace mnemo::cli
