// Invariant checks for every module (Debian's Abseil 20220623 has no absl/check.h).
//
// MNEMO_CHECK(cond) << "message": aborts with file:line, the condition and the message
// when cond is false, in every build. MNEMO_DCHECK: the same, in debug builds only
// (the condition is still compiled, never evaluated, in release builds).
// Use them for invariants of our own code; bad input is an error Status, never a CHECK.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace mnemo::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* cond) {
    stream_ << file << ":" << line << ": check failed: " << cond << " ";
  }
  [[noreturn]] ~CheckFailure() {
    std::string s = stream_.str();
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Makes `cond ? (void)0 : Voidify() & stream` well-formed.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace mnemo::internal

#define MNEMO_CHECK(cond)                 \
  (cond) ? static_cast<void>(0)           \
         : ::mnemo::internal::Voidify() & \
               ::mnemo::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#ifdef NDEBUG
#define MNEMO_DCHECK(cond) true ? static_cast<void>(0) : ::mnemo::internal::Voidify() & std::cerr
#include <iostream>
#else
#define MNEMO_DCHECK(cond) MNEMO_CHECK(cond)
#endif
