#include "cache/state_manifest.h"

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "cache/internal/le_bytes.h"
#include "cache/state_format_generated.h"
#include "flatbuffers/flatbuffers.h"
#include "kernels/dtype.h"
#include "kernels/kv_compress.h"

namespace mnemo::cache {
namespace {

constexpr char kManifestMagic[8] = {'M', 'N', 'E', 'M', 'O', 'M', 'A', 'N'};
// A block larger than this is refused (SmolLM2-135M's is 360 KiB).
constexpr int64_t kMaxBlockBytes = int64_t{1} << 30;

using state_internal::GetLe32;
using state_internal::GetLe64;
using state_internal::PutLe32;
using state_internal::PutLe64;

std::string_view View(const flatbuffers::String* s) {
  return s == nullptr ? std::string_view() : std::string_view(s->data(), s->size());
}

// Element i of a vector of structs, copied out. The FlatBuffers 2.0.8 verifier checks a
// struct vector's alignment only to 4 bytes, so in a hostile buffer an 8-byte struct may be
// misaligned: never call its accessors in place.
template <typename T>
T StructAt(const flatbuffers::Vector<const T*>& v, flatbuffers::uoffset_t i) {
  T out;
  std::memcpy(static_cast<void*>(&out), v.Data() + size_t{i} * sizeof(T), sizeof(T));
  return out;
}

template <typename T, typename F>
void ForEachStruct(const flatbuffers::Vector<const T*>* v, F f) {
  if (v == nullptr) return;
  for (flatbuffers::uoffset_t i = 0; i < v->size(); ++i) f(StructAt(*v, i));
}

absl::Status Invalid(auto&&... parts) {
  return absl::InvalidArgumentError(absl::StrCat("session record: ", parts...));
}

absl::Status ValidateLayout(const kernels::KvLayout& l) {
  if (l.n_layers <= 0 || l.n_kv_heads <= 0 || l.head_dim <= 0 || l.block_tokens <= 0) {
    return Invalid("layout sizes must be > 0 (n_layers ", l.n_layers, ", n_kv_heads ", l.n_kv_heads,
                   ", head_dim ", l.head_dim, ", block_tokens ", l.block_tokens, ")");
  }
  if (l.dtype != kernels::DType::kF16 && l.dtype != kernels::DType::kBF16) {
    return Invalid("layout dtype ", AsAbsl(kernels::DTypeName(l.dtype)), " is not f16 or bf16");
  }
  // Each factor is < 2^31, so the product of two fits; check step by step.
  int64_t bytes = int64_t{l.n_layers} * 2 * l.n_kv_heads;
  for (const int64_t f : {int64_t{l.block_tokens}, int64_t{l.head_dim}, l.elem_bytes()}) {
    if (bytes > kMaxBlockBytes / f) return Invalid("layout block is larger than 1 GiB");
    bytes *= f;
  }
  return absl::OkStatus();
}

absl::Status ValidateRanges(const std::vector<TokenRange>& ranges, size_t entry) {
  for (const TokenRange& r : ranges) {
    if (r.begin < 0 || r.begin > r.end) {
      return Invalid("compaction entry ", entry, " has token range [", r.begin, ", ", r.end, ")");
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool operator==(const SessionRecord& a, const SessionRecord& b) {
  const auto layout_eq = [](const kernels::KvLayout& x, const kernels::KvLayout& y) {
    return x.n_layers == y.n_layers && x.n_kv_heads == y.n_kv_heads && x.head_dim == y.head_dim &&
           x.block_tokens == y.block_tokens && x.dtype == y.dtype;
  };
  const auto turns_eq = [](const std::vector<SessionTurn>& x, const std::vector<SessionTurn>& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i].token_start != y[i].token_start || x[i].message_start != y[i].message_start) {
        return false;
      }
    }
    return true;
  };
  const auto messages_eq = [](const std::vector<SessionMessage>& x,
                              const std::vector<SessionMessage>& y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i].role != y[i].role || x[i].content != y[i].content) return false;
    }
    return true;
  };
  return a.id == b.id && a.tenant == b.tenant && a.model_fingerprint == b.model_fingerprint &&
         layout_eq(a.layout, b.layout) && a.tokens == b.tokens && a.kv_tokens == b.kv_tokens &&
         turns_eq(a.turns, b.turns) && messages_eq(a.messages, b.messages) &&
         a.rng_state == b.rng_state && a.metadata == b.metadata && a.kv_encoding == b.kv_encoding &&
         a.created_unix_us == b.created_unix_us && a.last_used_unix_us == b.last_used_unix_us &&
         a.ttl_us == b.ttl_us && a.compaction_log == b.compaction_log && a.blocks == b.blocks &&
         a.compaction == b.compaction;
}

uint64_t StateChecksum(std::span<const uint8_t> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

uint64_t EncodedBlockBytes(const kernels::KvLayout& layout, std::string_view encoding) {
  if (encoding == kKvEncodingRaw) return static_cast<uint64_t>(layout.block_bytes());
  if (encoding == kKvEncodingInt8)
    return static_cast<uint64_t>(kernels::CompressedBlockBytes(layout));
  return 0;
}

absl::Status ValidateRecord(const SessionRecord& r) {
  if (absl::Status s = ValidateLayout(r.layout); !s.ok()) return s;
  const int64_t n_tokens = static_cast<int64_t>(r.tokens.size());
  const int64_t n_messages = static_cast<int64_t>(r.messages.size());
  if (r.kv_tokens < 0 || r.kv_tokens > n_tokens) {
    return Invalid("kv_tokens ", r.kv_tokens, " is outside [0, ", n_tokens, "] (the history)");
  }
  const int64_t want_blocks = (r.kv_tokens + r.layout.block_tokens - 1) / r.layout.block_tokens;
  if (static_cast<int64_t>(r.blocks.size()) != want_blocks) {
    return Invalid(r.blocks.size(), " blocks for ", r.kv_tokens, " KV tokens of ",
                   r.layout.block_tokens, "-token blocks (want ", want_blocks, ")");
  }
  const uint64_t block_bytes = EncodedBlockBytes(r.layout, r.kv_encoding);
  if (block_bytes == 0) {
    return Invalid("KV encoding '", r.kv_encoding, "' is unknown (want '' or 'int8')");
  }
  for (size_t i = 0; i < r.blocks.size(); ++i) {
    const DiskBlock& b = r.blocks[i];
    if (b.segment == 0) return Invalid("block ", i, " names segment 0 (segments start at 1)");
    if (b.offset < kStateAlignment || b.offset % kStateAlignment != 0) {
      return Invalid("block ", i, " offset ", b.offset, " is not a multiple of ", kStateAlignment,
                     " past the segment header");
    }
    if (b.length != block_bytes) {
      return Invalid("block ", i, " has ", b.length, " bytes; the layout's blocks have ",
                     block_bytes, " (encoding '", r.kv_encoding, "')");
    }
    const bool full = static_cast<int64_t>(i + 1) * r.layout.block_tokens <= r.kv_tokens;
    if (!full && b.hash != BlockHash{}) {
      return Invalid("block ", i,
                     " is partly filled but has a chain hash (only full blocks are "
                     "published)");
    }
    if (b.offset > UINT64_MAX - b.length || b.offset + b.length > uint64_t{INT64_MAX}) {
      return Invalid("block ", i, " offset ", b.offset, " is out of range");
    }
  }
  int64_t prev_token = 0;
  int64_t prev_message = 0;
  for (size_t i = 0; i < r.turns.size(); ++i) {
    const SessionTurn& t = r.turns[i];
    if (i == 0 && t.token_start != 0) {
      return Invalid("turn 0 starts at token ", t.token_start, " (want 0)");
    }
    if (t.token_start < prev_token || t.token_start > n_tokens || t.message_start < prev_message ||
        t.message_start > n_messages) {
      return Invalid("turn ", i, " starts at token ", t.token_start, ", message ", t.message_start,
                     ": out of order or past the history (", n_tokens, " tokens, ", n_messages,
                     " messages)");
    }
    prev_token = t.token_start;
    prev_message = t.message_start;
  }
  if (r.ttl_us < -1) return Invalid("ttl_us ", r.ttl_us, " (want >= 0, or -1 for none)");
  for (size_t i = 0; i < r.compaction_log.size(); ++i) {
    if (absl::Status s = ValidateRanges(r.compaction_log[i].dropped, i); !s.ok()) return s;
    if (absl::Status s = ValidateRanges(r.compaction_log[i].summarized, i); !s.ok()) return s;
    if (r.compaction_log[i].turns < 0 ||
        r.compaction_log[i].turns > static_cast<int64_t>(r.turns.size())) {
      return Invalid("compaction entry ", i, " records ", r.compaction_log[i].turns,
                     " turns (the session has ", r.turns.size(), ")");
    }
  }
  if (r.compaction) {
    if (absl::Status s = ValidateCompactionOptions(*r.compaction); !s.ok()) {
      return Invalid("compaction: ", s.message());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SerializeManifest(const SessionRecord& r) {
  if (absl::Status s = ValidateRecord(r); !s.ok()) return s;
  flatbuffers::FlatBufferBuilder fbb(1024 + r.tokens.size() * 4 + r.blocks.size() * 48);
  const auto tenant = fbb.CreateString(r.tenant);
  const auto fingerprint = fbb.CreateString(r.model_fingerprint);
  const auto layout = fb::CreateKvLayout(fbb, r.layout.n_layers, r.layout.n_kv_heads,
                                         r.layout.head_dim, r.layout.block_tokens,
                                         fbb.CreateString(kernels::DTypeName(r.layout.dtype)));
  const auto tokens = fbb.CreateVector(r.tokens);
  std::vector<fb::Turn> turns;
  turns.reserve(r.turns.size());
  for (const SessionTurn& t : r.turns) turns.emplace_back(t.token_start, t.message_start);
  const auto turns_off = fbb.CreateVectorOfStructs(turns);
  std::vector<flatbuffers::Offset<fb::Message>> messages;
  messages.reserve(r.messages.size());
  for (const SessionMessage& m : r.messages) {
    messages.push_back(
        fb::CreateMessage(fbb, fbb.CreateString(m.role), fbb.CreateString(m.content)));
  }
  const auto messages_off = fbb.CreateVector(messages);
  const auto metadata =
      fbb.CreateVector(reinterpret_cast<const uint8_t*>(r.metadata.data()), r.metadata.size());
  std::vector<flatbuffers::Offset<fb::CompactionEntry>> log;
  for (const CompactionRecord& c : r.compaction_log) {
    const auto ranges = [&fbb](const std::vector<TokenRange>& v) {
      std::vector<fb::TokenRange> out;
      for (const TokenRange& t : v) out.emplace_back(t.begin, t.end);
      return fbb.CreateVectorOfStructs(out);
    };
    const auto dropped = ranges(c.dropped);
    const auto summarized = ranges(c.summarized);
    const auto summary = c.summary.empty() ? flatbuffers::Offset<flatbuffers::String>()
                                           : fbb.CreateString(c.summary);
    const auto kept =
        c.kept.empty() ? flatbuffers::Offset<flatbuffers::String>() : fbb.CreateString(c.kept);
    log.push_back(fb::CreateCompactionEntry(fbb, c.unix_us, fbb.CreateString(c.policy), dropped,
                                            summarized, c.position_shift, c.turns, summary, kept));
  }
  const auto log_off = fbb.CreateVector(log);
  std::vector<fb::BlockRef> blocks;
  blocks.reserve(r.blocks.size());
  for (const DiskBlock& b : r.blocks) {
    blocks.emplace_back(b.segment, b.offset, b.length, b.checksum, b.hash.lo, b.hash.hi);
  }
  const auto blocks_off = fbb.CreateVectorOfStructs(blocks);
  const auto encoding = r.kv_encoding.empty() ? flatbuffers::Offset<flatbuffers::String>()
                                              : fbb.CreateString(r.kv_encoding);
  flatbuffers::Offset<fb::CompactionSettings> compaction;
  if (r.compaction) {
    const CompactionOptions& o = *r.compaction;
    compaction = fb::CreateCompactionSettings(
        fbb, fbb.CreateString(std::string(CompactionPolicyName(o.policy))), o.sink_tokens,
        o.trigger_fraction, o.trigger_tokens, o.max_session_bytes, o.target_fraction,
        o.observe_tokens, fbb.CreateString(o.summary_prompt), o.summary_max_tokens, o.keep_history);
  }
  const fb::SessionId128 id(flatbuffers::make_span(r.id.bytes));
  const fb::RngState rng(flatbuffers::make_span(r.rng_state));
  const auto manifest =
      fb::CreateManifest(fbb, kStateFormatVersion, &id, tenant, fingerprint, layout, tokens,
                         r.kv_tokens, turns_off, messages_off, &rng, metadata, r.created_unix_us,
                         r.last_used_unix_us, r.ttl_us, log_off, blocks_off, encoding, compaction);
  fb::FinishManifestBuffer(fbb, manifest);
  const std::span<const uint8_t> body(fbb.GetBufferPointer(), fbb.GetSize());
  if (kManifestHeaderBytes + body.size() > kMaxManifestBytes) {
    return Invalid("the manifest would be ", body.size(), " bytes (at most ", kMaxManifestBytes,
                   ")");
  }

  std::string file(kManifestHeaderBytes, '\0');
  std::memcpy(file.data(), kManifestMagic, sizeof(kManifestMagic));
  PutLe32(file.data() + 8, kStateFormatVersion);
  PutLe32(file.data() + 12, static_cast<uint32_t>(kManifestHeaderBytes));
  PutLe64(file.data() + 16, body.size());
  PutLe64(file.data() + 24, StateChecksum(body));
  file.append(reinterpret_cast<const char*>(body.data()), body.size());
  return file;
}

absl::StatusOr<SessionRecord> ParseManifest(std::span<const uint8_t> file, std::string_view name) {
  const auto bad = [name](auto&&... parts) {
    return absl::DataLossError(absl::StrCat(AsAbsl(name), ": ", parts...));
  };
  if (file.size() < kManifestHeaderBytes) {
    return bad("truncated manifest: ", file.size(), " bytes, shorter than its ",
               kManifestHeaderBytes, "-byte header");
  }
  if (std::memcmp(file.data(), kManifestMagic, sizeof(kManifestMagic)) != 0) {
    return bad("not a mnemo manifest (bad magic)");
  }
  const uint32_t version = GetLe32(file.data() + 8);
  if (version != kStateFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        AsAbsl(name), ": manifest format version ", version,
        " is not supported by this build (it reads version ", kStateFormatVersion, ")"));
  }
  const uint32_t header_bytes = GetLe32(file.data() + 12);
  if (header_bytes != kManifestHeaderBytes) {
    return bad("manifest header size ", header_bytes, " (want ", kManifestHeaderBytes, ")");
  }
  const uint64_t body_bytes = GetLe64(file.data() + 16);
  if (body_bytes > kMaxManifestBytes || file.size() != kManifestHeaderBytes + body_bytes) {
    return bad("manifest is ", file.size(), " bytes but its header says ", kManifestHeaderBytes,
               " + ", body_bytes, " (truncated or padded)");
  }
  const std::span<const uint8_t> body = file.subspan(kManifestHeaderBytes);
  const uint64_t want_sum = GetLe64(file.data() + 24);
  if (const uint64_t sum = StateChecksum(body); sum != want_sum) {
    return bad("manifest checksum mismatch (xxh3 ", sum, ", header says ", want_sum, ")");
  }

  // FlatBuffers reads scalars in place: give the verifier and the accessors an 8-byte
  // aligned copy (the caller's buffer may start anywhere).
  if (body.empty()) return bad("manifest body is empty");
  std::vector<uint64_t> aligned((body.size() + 7) / 8);
  std::memcpy(aligned.data(), body.data(), body.size());
  const uint8_t* buf = reinterpret_cast<const uint8_t*>(aligned.data());
  flatbuffers::Verifier::Options opts;
  opts.max_tables = 1u << 24;
  flatbuffers::Verifier verifier(buf, body.size(), opts);
  if (!fb::VerifyManifestBuffer(verifier)) {
    return bad("manifest body fails the FlatBuffers verifier (corrupt or not a Manifest)");
  }
  const fb::Manifest* m = fb::GetManifest(buf);
  if (m->format_version() != version) {
    return bad("manifest body says format version ", m->format_version(), ", its header ", version);
  }
  if (m->session_id() == nullptr) return bad("manifest has no session id");
  if (m->layout() == nullptr) return bad("manifest has no KV layout");
  if (m->rng_state() == nullptr) return bad("manifest has no RNG state");

  SessionRecord r;
  std::memcpy(r.id.bytes.data(), m->session_id()->bytes()->Data(), r.id.bytes.size());
  r.tenant = std::string(View(m->tenant()));
  r.model_fingerprint = std::string(View(m->model_fingerprint()));
  const fb::KvLayout* l = m->layout();
  r.layout.n_layers = l->n_layers();
  r.layout.n_kv_heads = l->n_kv_heads();
  r.layout.head_dim = l->head_dim();
  r.layout.block_tokens = l->block_tokens();
  const std::optional<kernels::DType> dtype = kernels::DTypeFromName(View(l->dtype()));
  if (!dtype.has_value()) {
    return bad("manifest KV dtype '", AsAbsl(View(l->dtype())), "' is unknown");
  }
  r.layout.dtype = *dtype;
  if (m->tokens() != nullptr) r.tokens.assign(m->tokens()->begin(), m->tokens()->end());
  r.kv_tokens = m->kv_tokens();
  ForEachStruct(m->turns(), [&r](const fb::Turn& t) {
    r.turns.push_back({t.token_start(), t.message_start()});
  });
  if (m->messages() != nullptr) {
    for (const fb::Message* msg : *m->messages()) {
      r.messages.push_back({std::string(View(msg->role())), std::string(View(msg->content()))});
    }
  }
  for (size_t i = 0; i < r.rng_state.size(); ++i) {
    r.rng_state[i] = m->rng_state()->s()->Get(static_cast<flatbuffers::uoffset_t>(i));
  }
  if (m->metadata() != nullptr) {
    r.metadata.assign(reinterpret_cast<const char*>(m->metadata()->data()), m->metadata()->size());
  }
  r.created_unix_us = m->created_unix_us();
  r.last_used_unix_us = m->last_used_unix_us();
  r.ttl_us = m->ttl_us();
  if (m->compaction_log() != nullptr) {
    for (const fb::CompactionEntry* e : *m->compaction_log()) {
      CompactionRecord c;
      c.unix_us = e->unix_us();
      c.policy = std::string(View(e->policy()));
      ForEachStruct(e->dropped(), [&c](const fb::TokenRange& t) {
        c.dropped.push_back({t.begin(), t.end()});
      });
      ForEachStruct(e->summarized(), [&c](const fb::TokenRange& t) {
        c.summarized.push_back({t.begin(), t.end()});
      });
      c.position_shift = e->position_shift();
      c.turns = e->turns();
      if (e->summary() != nullptr) c.summary = std::string(View(e->summary()));
      if (e->kept() != nullptr) c.kept = std::string(View(e->kept()));
      r.compaction_log.push_back(std::move(c));
    }
  }
  ForEachStruct(m->blocks(), [&r](const fb::BlockRef& b) {
    r.blocks.push_back(
        {b.segment(), b.offset(), b.length(), b.checksum(), BlockHash{b.hash_lo(), b.hash_hi()}});
  });
  if (m->kv_encoding() != nullptr) r.kv_encoding = std::string(View(m->kv_encoding()));
  if (const fb::CompactionSettings* c = m->compaction(); c != nullptr) {
    absl::StatusOr<CompactionPolicy> policy = ParseCompactionPolicy(View(c->policy()));
    if (!policy.ok()) return bad("invalid manifest: compaction: ", policy.status().message());
    r.compaction = CompactionOptions{.policy = *policy,
                                     .sink_tokens = c->sink_tokens(),
                                     .trigger_fraction = c->trigger_fraction(),
                                     .trigger_tokens = c->trigger_tokens(),
                                     .max_session_bytes = c->max_session_bytes(),
                                     .target_fraction = c->target_fraction(),
                                     .observe_tokens = c->observe_tokens(),
                                     .summary_max_tokens = c->summary_max_tokens(),
                                     .keep_history = c->keep_history()};
    if (c->summary_prompt() != nullptr) {
      r.compaction->summary_prompt = std::string(View(c->summary_prompt()));
    }
  }
  if (absl::Status s = ValidateRecord(r); !s.ok()) {
    return bad("invalid manifest: ", s.message());
  }
  return r;
}

}  // namespace mnemo::cache
