// libFuzzer target for the server's request parsing (engine/server/request_fields.cc): any
// bytes as a request body. The body is parsed as JSON the way Call::Body does (invalid JSON
// and invalid UTF-8 are refused, never a crash), then every generating endpoint's readers run
// on it (ReadGenerationFields for chat and for completions, ReadMessages). Invariants: a
// refused field names itself (param non-empty, message starting with it, status 400); an
// accepted request is within the documented ranges. Built and run by tools/fuzz.sh
// server_request; not part of the CMake build.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "engine/server/internal/common.h"

namespace {

using mnemo::server::FieldReader;
using mnemo::server::Json;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "server_request_fuzz invariant broken: %s\n", what.c_str());
  std::abort();
}

void CheckError(const FieldReader& f) {
  if (f.ok()) return;
  const auto& e = f.error();
  if (e.status != 400 || e.param.empty() || e.message.rfind(e.param, 0) != 0) {
    Fail("a refused field must be a 400 whose message starts with its param: " + e.message);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    (void)mnemo::server::ValidUtf8(body);
    return 0;
  }
  for (bool completions : {false, true}) {
    FieldReader f(j);
    const mnemo::server::GenerationFields g = mnemo::server::ReadGenerationFields(f, completions);
    CheckError(f);
    if (f.ok()) {
      const auto& s = g.params.sampling;
      if (!(s.temperature >= 0 && s.temperature <= 2) || !(s.top_p > 0 && s.top_p <= 1) ||
          g.n < 1 || g.n > 16 || s.top_logprobs < 0 || s.top_logprobs > 20 ||
          g.params.stop.stop_strings.size() > 4) {
        Fail("accepted fields out of range");
      }
    }
  }
  FieldReader f(j);
  const auto messages = mnemo::server::ReadMessages(f, "messages");
  CheckError(f);
  if (f.ok() && messages.empty()) Fail("accepted messages must not be empty");
  for (const auto& m : messages) {
    if (m.role != "system" && m.role != "user" && m.role != "assistant") Fail("bad role " + m.role);
  }
  return 0;
}
