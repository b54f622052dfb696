// Glue between std::string_view and absl::string_view, which are distinct types in
// Debian's Abseil 20220623 (no implicit conversion either way). Convert at the boundary.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace mnemo {

inline absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view AsStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace mnemo
