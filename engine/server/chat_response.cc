// The chat.completion answer shared by /v1/chat/completions and /v1/sessions/{id}/messages
// (engine/server/internal/common.h, RespondChat).
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "cache/base/strings.h"
#include "engine/server/internal/common.h"

namespace mnemo::server {

std::string RandomId(std::string_view prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrCat(AsAbsl(prefix),
                      absl::StrFormat("%016x%08x", rng(), static_cast<uint32_t>(rng())));
}

namespace {

Json TokenEntry(const engine::Tokenizer& tok, engine::TokenId id, float logprob) {
  const std::string text = tok.TokenBytes(id, /*render_special=*/true);
  Json bytes = Json::array();
  for (unsigned char b : text) bytes.push_back(static_cast<int>(b));
  return {{"token", text}, {"logprob", logprob}, {"bytes", bytes}};
}

// The choice's final object (not streaming).
Json Choice(const engine::Tokenizer& tok, const engine::TurnResult& r, size_t index,
            bool logprobs) {
  return {{"index", index},
          {"message", {{"role", "assistant"}, {"content", r.text}}},
          {"logprobs", logprobs ? ChatLogprobs(tok, r) : Json(nullptr)},
          {"finish_reason", std::string(engine::FinishReasonName(r.finish))}};
}

}  // namespace

Json ChatLogprobs(const engine::Tokenizer& tok, const engine::TurnResult& r) {
  Json content = Json::array();
  for (size_t i = 0; i < r.ids.size(); ++i) {
    Json e = TokenEntry(tok, r.ids[i], i < r.logprobs.size() ? r.logprobs[i] : 0.0f);
    Json top = Json::array();
    if (i < r.top_logprobs.size()) {
      for (const engine::TokenLogprob& t : r.top_logprobs[i])
        top.push_back(TokenEntry(tok, t.id, t.logprob));
    }
    e["top_logprobs"] = top;
    content.push_back(std::move(e));
  }
  return {{"content", content}};
}

std::string StreamTail(const std::vector<engine::StreamPtr>& streams, bool include_usage, Json base,
                       bool report_compaction) {
  std::string out;
  if (include_usage) {
    std::vector<const engine::TurnResult*> results;
    for (const engine::StreamPtr& s : streams) results.push_back(&s->Wait());
    base["usage"] = ChatUsage(results, report_compaction);
    out += SseData(base);
  }
  return out + "data: [DONE]\n\n";
}

Json ChatUsage(const std::vector<const engine::TurnResult*>& results, bool report_compaction) {
  int64_t prompt = 0, cached = 0, completion = 0, compacted = 0;
  if (!results.empty()) {
    prompt = results[0]->usage.prompt_tokens;
    cached = results[0]->usage.cached_tokens;
    compacted = results[0]->usage.compacted_tokens;
  }
  for (const engine::TurnResult* r : results) completion += r->usage.completion_tokens;
  Json usage = {{"prompt_tokens", prompt},
                {"completion_tokens", completion},
                {"total_tokens", prompt + completion},
                {"prompt_tokens_details", {{"cached_tokens", cached}}}};
  if (report_compaction) usage["compacted_tokens"] = compacted;
  return usage;
}

void RespondChat(Call& c, std::vector<engine::StreamPtr> streams, const GenerationFields& g,
                 const std::string& id, const Json& extra) {
  ServerState& server = c.server;
  const engine::Tokenizer& tok = c.engine().tokenizer();
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  Json top = {{"id", id}, {"created", created}, {"model", server.model_name}};
  for (auto it = extra.begin(); it != extra.end(); ++it) top[it.key()] = *it;
  for (const engine::StreamPtr& s : streams) server.Track(s);

  if (!g.stream) {
    std::vector<const engine::TurnResult*> results;
    for (const engine::StreamPtr& s : streams) results.push_back(&s->Wait());
    for (const engine::StreamPtr& s : streams) server.Untrack(s);
    for (const engine::TurnResult* r : results) {
      if (!r->status.ok()) return c.Error(FromStatus(r->status));
    }
    Json choices = Json::array();
    for (size_t i = 0; i < results.size(); ++i) {
      choices.push_back(Choice(tok, *results[i], i, g.logprobs));
      server.metrics.ObserveTurn(*results[i]);
    }
    top["object"] = "chat.completion";
    top["choices"] = choices;
    top["usage"] = ChatUsage(results, g.report_compaction);
    top["system_fingerprint"] = nullptr;
    return c.SendJson(200, top);
  }

  // Streaming: choice after choice, then the usage chunk, then [DONE].
  top["object"] = "chat.completion.chunk";
  struct State {
    size_t choice = 0;
    bool started = false;  // the current choice's role chunk was sent
    bool finished = false;
  };
  auto st = std::make_shared<State>();
  auto chunk = [top](Json choices) {
    Json j = top;
    j["choices"] = std::move(choices);
    return j;
  };
  c.StreamSse(
      [st, streams, g, chunk, &tok, server_ptr = &server](std::string& out) {
        if (st->finished) return false;
        if (st->choice == streams.size()) {
          out += StreamTail(streams, g.include_usage, chunk(Json::array()), g.report_compaction);
          st->finished = true;
          return false;
        }
        const size_t i = st->choice;
        const engine::StreamPtr& s = streams[i];
        if (!st->started) {
          st->started = true;
          out += SseData(chunk(Json::array({{{"index", i},
                                             {"delta", {{"role", "assistant"}, {"content", ""}}},
                                             {"logprobs", nullptr},
                                             {"finish_reason", nullptr}}})));
          return true;
        }
        engine::StreamChunk piece;
        if (s->Next(&piece)) {
          Json delta = {{"content", piece.text}};
          Json lp = nullptr;
          if (g.logprobs) {
            engine::TurnResult partial;
            partial.ids = piece.ids;
            partial.logprobs = piece.logprobs;
            partial.top_logprobs = piece.top_logprobs;
            lp = ChatLogprobs(tok, partial);
          }
          out += SseData(chunk(Json::array(
              {{{"index", i}, {"delta", delta}, {"logprobs", lp}, {"finish_reason", nullptr}}})));
          return true;
        }
        const engine::TurnResult& r = s->Wait();
        if (!r.status.ok()) {
          const ApiError e = FromStatus(r.status);
          out += SseData(ErrorBody(e));
          out += "data: [DONE]\n\n";
          st->finished = true;
          return false;
        }
        server_ptr->metrics.ObserveTurn(r);
        out += SseData(chunk(
            Json::array({{{"index", i},
                          {"delta", Json::object()},
                          {"logprobs", nullptr},
                          {"finish_reason", std::string(engine::FinishReasonName(r.finish))}}})));
        ++st->choice;
        st->started = false;
        return true;
      },
      [streams, server_ptr = &server](bool) {
        // A client gone, or an error event: the remaining choices stop (no-op once ended).
        for (const engine::StreamPtr& s : streams) {
          s->Cancel();
          server_ptr->Untrack(s);
        }
      });
}

}  // namespace mnemo::server
