// Status plumbing shared by the model-loading sources (model config, safetensors, Model,
// test-model writer). Internal to engine/model.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"

// Returns from the calling function when `expr` (an absl::Status) is not OK.
#define MNEMO_MODEL_RETURN_IF_ERROR(expr)                      \
  do {                                                         \
    ::absl::Status mnemo_model_status_ = (expr);               \
    if (!mnemo_model_status_.ok()) return mnemo_model_status_; \
  } while (0)

#define MNEMO_MODEL_CONCAT_INNER(a, b) a##b
#define MNEMO_MODEL_CONCAT(a, b) MNEMO_MODEL_CONCAT_INNER(a, b)

// `lhs = value of expr` (an absl::StatusOr), or returns its error status.
#define MNEMO_MODEL_ASSIGN_OR_RETURN(lhs, expr) \
  MNEMO_MODEL_ASSIGN_OR_RETURN_IMPL(MNEMO_MODEL_CONCAT(mnemo_model_or_, __LINE__), lhs, expr)
#define MNEMO_MODEL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                      \
  if (!tmp.ok()) return std::move(tmp).status();          \
  lhs = std::move(tmp).value()

namespace mnemo::engine::model_internal {

inline absl::Status InvalidArgument(std::string_view msg) {
  return absl::InvalidArgumentError(AsAbsl(msg));
}

// The same status with `prefix` prepended to its message ("prefix: message").
inline absl::Status Annotate(const absl::Status& s, std::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(AsAbsl(prefix), ": ", s.message()));
}

}  // namespace mnemo::engine::model_internal
