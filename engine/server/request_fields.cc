// Request fields (engine/server/internal/common.h): errors in OpenAI's shape, field
// validation that names the field, the generation fields and chat messages. Pure functions
// of the request JSON (the request fuzz target, tests/fuzz/server_request_fuzz.cc, links
// only this file).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/server/internal/common.h"

namespace mnemo::server {

// ---------------------------------------------------------------------------------------
// Errors

ApiError BadRequest(std::string message, std::string param) {
  return {.status = 400, .message = std::move(message), .param = std::move(param)};
}

ApiError NotFound(std::string message) {
  return {.status = 404, .type = "not_found_error", .message = std::move(message)};
}

ApiError FromStatus(const absl::Status& status, std::string param) {
  ApiError e{.message = std::string(AsStd(status.message())), .param = std::move(param)};
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404;
      e.type = "not_found_error";
      break;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      e.status = 409;
      e.type = "conflict_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "service_unavailable";
      break;
    case absl::StatusCode::kCancelled:
      e.status = 499;
      e.type = "cancelled";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.status = 403;
      e.type = "permission_error";
      break;
    default:
      e.status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

Json ErrorBody(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", e.param.empty() ? Json(nullptr) : Json(e.param)},
            {"code", e.code.empty() ? Json(nullptr) : Json(e.code)}}}};
}

// ---------------------------------------------------------------------------------------
// Fields

const Json* FieldReader::Raw(std::string_view name) const {
  auto it = obj_.find(std::string(name));
  if (it == obj_.end() || it->is_null()) return nullptr;
  return &*it;
}

void FieldReader::Fail(std::string_view name, std::string message) {
  if (error_) return;
  error_ = BadRequest(absl::StrCat(Param(name), ": ", message), Param(name));
}

std::optional<std::string> FieldReader::String(std::string_view name) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_string()) {
    Fail(name, absl::StrCat("must be a string, got ", v->type_name()));
    return std::nullopt;
  }
  return v->get<std::string>();
}

std::optional<int64_t> FieldReader::Int(std::string_view name, int64_t min, int64_t max) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) {
    Fail(name, absl::StrCat("must be an integer, got ", v->type_name()));
    return std::nullopt;
  }
  // Unsigned values above INT64_MAX are out of range whatever max is.
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    Fail(name, absl::StrCat("must be in [", min, ", ", max, "]"));
    return std::nullopt;
  }
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max) {
    Fail(name, absl::StrCat("must be in [", min, ", ", max, "], got ", x));
    return std::nullopt;
  }
  return x;
}

std::optional<double> FieldReader::Number(std::string_view name, double min, double max) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_number()) {
    Fail(name, absl::StrCat("must be a number, got ", v->type_name()));
    return std::nullopt;
  }
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < min || x > max) {
    Fail(name, absl::StrCat("must be in [", min, ", ", max, "], got ", v->dump()));
    return std::nullopt;
  }
  return x;
}

std::optional<bool> FieldReader::Bool(std::string_view name) {
  const Json* v = Raw(name);
  if (!ok() || v == nullptr) return std::nullopt;
  if (!v->is_boolean()) {
    Fail(name, absl::StrCat("must be a boolean, got ", v->type_name()));
    return std::nullopt;
  }
  return v->get<bool>();
}

void FieldReader::OnlyKnown(std::initializer_list<std::string_view> known) {
  if (!ok()) return;
  for (auto it = obj_.begin(); it != obj_.end(); ++it) {
    bool found = false;
    for (std::string_view k : known) found |= it.key() == k;
    if (!found) {
      Fail(it.key(), "unknown field");
      return;
    }
  }
}

GenerationFields ReadGenerationFields(FieldReader& f, bool completions_logprobs) {
  GenerationFields g;
  engine::SamplingParams& s = g.params.sampling;
  engine::StopParams& stop = g.params.stop;
  s.penalty_last_n = 0;  // OpenAI has no repetition penalty
  if (auto t = f.Number("temperature", 0.0, 2.0)) s.temperature = static_cast<float>(*t);
  if (const Json* tp = f.Raw("top_p"); tp != nullptr && f.ok()) {
    auto p = f.Number("top_p", 0.0, 1.0);
    if (p && *p == 0.0) f.Fail("top_p", "must be in (0, 1], got 0");
    if (p && *p > 0.0) s.top_p = static_cast<float>(*p);
  }
  if (auto seed = f.Int("seed", INT64_MIN, INT64_MAX)) s.seed = static_cast<uint64_t>(*seed);
  for (const char* name : {"max_tokens", "max_completion_tokens", "max_output_tokens"}) {
    if (auto m = f.Int(name, 1, 1 << 30)) {
      stop.max_tokens = static_cast<int>(*m);
      break;
    }
  }
  if (auto ignore = f.Bool("ignore_eos")) stop.ignore_eos = *ignore;
  if (auto p = f.Number("presence_penalty", -2.0, 2.0)) s.presence_penalty = static_cast<float>(*p);
  if (auto p = f.Number("frequency_penalty", -2.0, 2.0)) {
    s.frequency_penalty = static_cast<float>(*p);
  }
  if (const Json* stops = f.Raw("stop"); stops != nullptr && f.ok()) {
    if (stops->is_string()) {
      stop.stop_strings.push_back(stops->get<std::string>());
    } else if (stops->is_array() && stops->size() <= 4) {
      for (const Json& x : *stops) {
        if (!x.is_string()) {
          f.Fail("stop", "must be a string or an array of up to 4 strings");
          break;
        }
        stop.stop_strings.push_back(x.get<std::string>());
      }
    } else {
      f.Fail("stop", "must be a string or an array of up to 4 strings");
    }
    for (const std::string& x : stop.stop_strings) {
      if (x.empty()) f.Fail("stop", "stop strings must not be empty");
    }
  }
  if (const Json* bias = f.Raw("logit_bias"); bias != nullptr && f.ok()) {
    if (!bias->is_object()) {
      f.Fail("logit_bias", "must be an object mapping token ids to biases");
    } else {
      for (auto it = bias->begin(); it != bias->end() && f.ok(); ++it) {
        const std::string& key = it.key();
        const bool digits =
            !key.empty() && key.size() <= 9 &&
            std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
        const int64_t id = digits ? std::stoll(key) : -1;  // the engine checks the vocabulary
        if (id < 0) {
          f.Fail("logit_bias", absl::StrCat("key \"", key, "\" is not a token id"));
          break;
        }
        if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < -100 ||
            it->get<double>() > 100) {
          f.Fail("logit_bias", absl::StrCat("the bias of token ", key, " must be in [-100, 100]"));
          break;
        }
        s.logit_bias.emplace_back(static_cast<engine::TokenId>(id), it->get<float>());
      }
    }
  }
  if (completions_logprobs) {
    if (auto lp = f.Int("logprobs", 0, 5)) {
      g.logprobs = true;
      s.top_logprobs = static_cast<int>(*lp);
    }
  } else {
    if (auto lp = f.Bool("logprobs")) g.logprobs = *lp;
    if (auto top = f.Int("top_logprobs", 0, engine::kMaxTopLogprobs)) {
      if (!g.logprobs) f.Fail("top_logprobs", "needs logprobs: true");
      s.top_logprobs = static_cast<int>(*top);
    }
  }
  if (auto n = f.Int("n", 1, 16)) g.n = static_cast<int>(*n);
  if (auto st = f.Bool("stream")) g.stream = *st;
  if (const Json* so = f.Raw("stream_options"); so != nullptr && f.ok()) {
    if (!so->is_object()) {
      f.Fail("stream_options", "must be an object");
    } else {
      FieldReader sf(*so, "stream_options.");
      if (auto u = sf.Bool("include_usage")) g.include_usage = *u;
      if (!sf.ok()) f.Fail("stream_options", sf.error().message);
    }
  }
  if (auto u = f.String("user")) g.user = *u;
  return g;
}

std::vector<engine::ChatMessage> ReadMessages(FieldReader& f, std::string_view name) {
  std::vector<engine::ChatMessage> out;
  const Json* v = f.Raw(name);
  if (!f.ok()) return out;
  if (v == nullptr || !v->is_array() || v->empty()) {
    f.Fail(name, "must be a non-empty array of messages");
    return out;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const Json& m = (*v)[i];
    const std::string at = absl::StrCat(AsAbsl(name), "[", i, "]");
    if (!m.is_object()) {
      f.Fail(at, "must be an object with role and content");
      return {};
    }
    FieldReader mf(m);
    std::optional<std::string> role = mf.String("role");
    if (!mf.ok() || !role) {
      f.Fail(absl::StrCat(at, ".role"), "must be a string");
      return {};
    }
    if (*role == "developer") role = "system";
    if (*role != "system" && *role != "user" && *role != "assistant") {
      f.Fail(absl::StrCat(at, ".role"),
             absl::StrCat("must be system, developer, user or assistant, got \"", *role, "\""));
      return {};
    }
    std::string content;
    const Json* c = mf.Raw("content");
    if (c != nullptr && c->is_string()) {
      content = c->get<std::string>();
    } else if (c != nullptr && c->is_array()) {
      for (const Json& part : *c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          f.Fail(absl::StrCat(at, ".content"),
                 "content parts must be {\"type\": \"text\", \"text\": string}");
          return {};
        }
        content += part["text"].get<std::string>();
      }
    } else {
      f.Fail(absl::StrCat(at, ".content"), "must be a string or an array of text parts");
      return {};
    }
    out.push_back({std::move(*role), std::move(content)});
  }
  return out;
}

bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0;
    if ((c >> 5) == 0x6) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c >> 4) == 0xE) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c >> 3) == 0x1E) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 0x2) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    const uint32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace mnemo::server
