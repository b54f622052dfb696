// /v1/models, /v1/chat/completions, /v1/completions (docs/api/openai.md): OpenAI's stateless
// endpoints over Engine::Generate. Chat answers are rendered by RespondChat
// (chat_response.cc); text completions are rendered here.
//
// n > 1 ("choices forked from one prefill"): choice 0 starts alone; once its prompt's KV is
// computed (its first streamed chunk, or for a streamed chat a one-token probe of the same
// prompt) its full blocks are in the prefix index, and the other choices start and reuse
// them, computing only the prompt's last partial block. Choice i samples with seed + i.
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cache/base/strings.h"
#include "engine/server/internal/common.h"

namespace mnemo::server {

namespace {

// ---------------------------------------------------------------------------------------
// Request fields

uint64_t RandomSeed() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng();
}

// Reads `model`; answers the call and returns false unless it names the served model.
bool CheckModel(Call& c, FieldReader& f) {
  std::optional<std::string> model = f.String("model");
  if (f.ok() && !model) f.Fail("model", "required (the id /v1/models lists)");
  if (!f.ok()) {
    c.Error(f.error());
    return false;
  }
  if (*model != c.server.model_name) {
    ApiError e = NotFound(absl::StrCat("The model \"", *model, "\" does not exist; this server ",
                                       "serves \"", c.server.model_name, "\""));
    e.param = "model";
    e.code = "model_not_found";
    c.Error(e);
    return false;
  }
  return true;
}

void NotSupported(FieldReader& f, std::string_view name, std::string_view what) {
  f.Fail(name, absl::StrCat(AsAbsl(what), " not supported by mnemo"));
}

// Chat fields mnemo does not implement (tools, structured output, audio): 400 naming them.
// Fields that change nothing here (store, metadata, ...) are accepted and ignored.
void RejectUnsupportedChatFields(FieldReader& f) {
  for (const char* name : {"functions", "function_call", "audio", "prediction",
                           "web_search_options", "reasoning_effort", "top_k"}) {
    if (f.Raw(name) != nullptr) NotSupported(f, name, "is");
  }
  if (const Json* tools = f.Raw("tools");
      tools != nullptr && !(tools->is_array() && tools->empty()))
    NotSupported(f, "tools", "tools (function calling) are");
  if (const Json* tc = f.Raw("tool_choice"); tc != nullptr && *tc != "none")
    NotSupported(f, "tool_choice", "tool_choice other than \"none\" is");
  if (const Json* rf = f.Raw("response_format");
      rf != nullptr && !(rf->is_object() && rf->size() == 1 && rf->value("type", "") == "text")) {
    NotSupported(f, "response_format", "response_format other than {\"type\": \"text\"} is");
  }
  if (const Json* m = f.Raw("modalities"); m != nullptr && *m != Json::array({"text"}))
    NotSupported(f, "modalities", "modalities other than [\"text\"] are");
  f.OnlyKnown({"model",
               "messages",
               "temperature",
               "top_p",
               "seed",
               "stop",
               "max_tokens",
               "max_completion_tokens",
               "ignore_eos",
               "presence_penalty",
               "frequency_penalty",
               "logit_bias",
               "logprobs",
               "top_logprobs",
               "n",
               "stream",
               "stream_options",
               "user",
               "tools",
               "tool_choice",
               "response_format",
               "modalities",
               "parallel_tool_calls",
               "store",
               "metadata",
               "service_tier",
               "prompt_cache_key",
               "safety_identifier"});
}

void RejectUnsupportedCompletionFields(FieldReader& f) {
  if (f.Raw("suffix") != nullptr) NotSupported(f, "suffix", "suffix (insertion) is");
  if (auto echo = f.Bool("echo"); echo && *echo) NotSupported(f, "echo", "echo: true is");
  if (f.Raw("top_k") != nullptr) NotSupported(f, "top_k", "is");
  f.OnlyKnown({"model", "prompt", "suffix", "echo", "best_of", "temperature", "top_p", "seed",
               "stop", "max_tokens", "ignore_eos", "presence_penalty", "frequency_penalty",
               "logit_bias", "logprobs", "n", "stream", "stream_options", "user"});
}

// Token ids in [0, vocab); false after recording an error.
bool ReadTokenIds(FieldReader& f, const Json& array, int vocab, std::vector<engine::TokenId>* out) {
  for (size_t i = 0; i < array.size(); ++i) {
    const Json& x = array[i];
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= vocab) {
      f.Fail("prompt", absl::StrCat("element ", i, " must be a token id in [0, ", vocab, ")"));
      return false;
    }
    out->push_back(static_cast<engine::TokenId>(x.get<int64_t>()));
  }
  return true;
}

// `prompt`: a string (tokenized as the model wants, BOS included when it adds one), an
// array of token ids, or an array holding one of those. Records an error on failure.
std::vector<engine::TokenId> ReadPrompt(FieldReader& f, const engine::Tokenizer& tok,
                                        std::string* text) {
  std::vector<engine::TokenId> ids;
  const Json* p = f.Raw("prompt");
  if (!f.ok()) return ids;
  if (p != nullptr && p->is_array() && p->size() == 1 &&
      ((*p)[0].is_string() || (*p)[0].is_array()))
    p = &(*p)[0];
  if (p == nullptr) {
    f.Fail("prompt", "required: a string or an array of token ids");
  } else if (p->is_string()) {
    *text = p->get<std::string>();
    if (!text->empty()) ids = tok.Encode(*text, {});
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    ReadTokenIds(f, *p, tok.vocab_size(), &ids);
  } else if (p->is_array() && p->size() > 1) {
    f.Fail("prompt", "only one prompt per request is supported (send one request per prompt)");
  } else {
    f.Fail("prompt", "must be a non-empty string or a non-empty array of token ids");
  }
  if (f.ok() && ids.empty()) f.Fail("prompt", "must not be empty");
  return ids;
}

// The HTTP error of an engine refusal, naming the field it is about.
ApiError GenerateError(const absl::Status& st, const std::string& prompt_param) {
  const std::string_view msg = AsStd(st.message());
  std::string param;
  if (msg.find("context length") != std::string_view::npos || msg.starts_with("token ")) {
    param = prompt_param;
  } else if (msg.find("logit_bias") != std::string_view::npos) {
    param = "logit_bias";
  }
  return FromStatus(st, param);
}

// ---------------------------------------------------------------------------------------
// Starting the choices

struct Choices {
  std::vector<engine::StreamPtr> streams;
  std::optional<engine::StreamChunk> first;  // choice 0's first chunk, when it was read
};

// Starts g.n choices of g.params (choice i with seed + i). With `keep_first` the caller can
// take choice 0's first chunk (Choices::first); otherwise a one-token probe prefills the
// prompt. Answers the call and returns nullopt on an error.
std::optional<Choices> StartChoices(Call& c, const GenerationFields& g,
                                    const std::string& prompt_param, bool keep_first) {
  Choices out;
  auto start = [&](int i) -> absl::Status {
    engine::TurnParams p = g.params;
    p.sampling.seed += static_cast<uint64_t>(i);
    auto s = c.engine().Generate(c.tenant, std::move(p));
    if (!s.ok()) return s.status();
    out.streams.push_back(std::move(*s));
    return absl::OkStatus();
  };
  auto fail = [&](const absl::Status& st) -> std::optional<Choices> {
    for (const engine::StreamPtr& s : out.streams) s->Cancel();
    c.Error(GenerateError(st, prompt_param));
    return std::nullopt;
  };
  if (g.n > 1 && !keep_first) {
    engine::TurnParams probe = g.params;
    probe.stop.max_tokens = 1;
    probe.sampling.temperature = 0.0f;
    probe.sampling.top_logprobs = 0;
    auto s = c.engine().Generate(c.tenant, std::move(probe));
    if (!s.ok()) return fail(s.status());
    c.server.Track(*s);
    const absl::Status st = (*s)->Wait().status;
    c.server.Untrack(*s);
    if (!st.ok()) return fail(st);
  }
  if (absl::Status st = start(0); !st.ok()) return fail(st);
  if (g.n > 1 && keep_first) {
    // Next returns once choice 0 sampled its first token: its prompt's KV is computed and
    // its full blocks are published.
    c.server.Track(out.streams[0]);
    engine::StreamChunk chunk;
    if (out.streams[0]->Next(&chunk)) out.first = std::move(chunk);
    c.server.Untrack(out.streams[0]);
  }
  for (int i = 1; i < g.n; ++i) {
    if (absl::Status st = start(i); !st.ok()) return fail(st);
  }
  return out;
}

Json UsageTokens(const Json& usage) {
  return {{"prompt_tokens", usage["prompt_tokens"]},
          {"completion_tokens", usage["completion_tokens"]},
          {"cached_tokens", usage["prompt_tokens_details"]["cached_tokens"]}};
}

Json AuditRecord(const std::string& id, const GenerationFields& g) {
  Json a = {{"id", id}, {"n", g.n}, {"stream", g.stream}};
  if (g.params.stop.max_tokens >= 0) a["max_tokens"] = g.params.stop.max_tokens;
  if (!g.user.empty()) a["user"] = g.user;
  return a;
}

// ---------------------------------------------------------------------------------------
// /v1/chat/completions

void ChatCompletions(Call& c) {
  std::optional<Json> body = c.Body();
  if (!body) return;
  FieldReader f(*body);
  if (!CheckModel(c, f)) return;
  RejectUnsupportedChatFields(f);
  GenerationFields g = ReadGenerationFields(f);
  g.params.messages = ReadMessages(f, "messages");
  if (!f.ok()) return c.Error(f.error());
  if (f.Raw("seed") == nullptr) g.params.sampling.seed = RandomSeed();

  std::optional<Choices> choices = StartChoices(c, g, "messages", /*keep_first=*/!g.stream);
  if (!choices) return;
  const std::string id = RandomId("chatcmpl-");
  Json audit = AuditRecord(id, g);
  audit["messages"] = g.params.messages.size();
  if (c.server.options.audit_prompts) {
    Json msgs = Json::array();
    for (const engine::ChatMessage& m : g.params.messages)
      msgs.push_back({{"role", m.role}, {"content", m.content}});
    audit["prompt"] = msgs;
  }
  // Kept to audit the token counts once a non-streamed answer is complete.
  std::vector<engine::StreamPtr> streams = choices->streams;
  RespondChat(c, std::move(choices->streams), g, id, Json::object());
  if (!g.stream) {
    std::vector<const engine::TurnResult*> results;
    for (const engine::StreamPtr& s : streams) results.push_back(&s->Wait());
    audit["status"] = c.res.status;
    audit["usage"] = UsageTokens(ChatUsage(results));
  }
  c.server.Audit(c.tenant, "chat.completion", audit);
}

// ---------------------------------------------------------------------------------------
// /v1/completions

// The legacy logprobs object of some tokens of one choice; `offset` is the byte offset of
// the first in the choice's text, advanced past them.
Json CompletionLogprobs(const engine::Tokenizer& tok, const std::vector<engine::TokenId>& ids,
                        const std::vector<float>& logprobs,
                        const std::vector<std::vector<engine::TokenLogprob>>& tops,
                        int64_t* offset) {
  Json tokens = Json::array(), token_logprobs = Json::array(), top = Json::array(),
       offsets = Json::array();
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string text = tok.TokenBytes(ids[i], /*render_special=*/true);
    tokens.push_back(text);
    token_logprobs.push_back(i < logprobs.size() ? logprobs[i] : 0.0f);
    Json alternatives = Json::object();
    if (i < tops.size()) {
      for (const engine::TokenLogprob& t : tops[i])
        alternatives.emplace(tok.TokenBytes(t.id, /*render_special=*/true), t.logprob);
    }
    top.push_back(std::move(alternatives));
    offsets.push_back(*offset);
    *offset += static_cast<int64_t>(text.size());
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

struct CompletionRequest {
  std::string id;
  int64_t created = 0;
  std::string model;
  GenerationFields g;
  Json audit;
};

Json CompletionObject(const CompletionRequest& q, Json choices) {
  return {{"id", q.id},       {"object", "text_completion"},   {"created", q.created},
          {"model", q.model}, {"choices", std::move(choices)}, {"system_fingerprint", nullptr}};
}

void RespondCompletionJson(Call& c, const CompletionRequest& q,
                           const std::vector<engine::StreamPtr>& streams) {
  const engine::Tokenizer& tok = c.engine().tokenizer();
  std::vector<const engine::TurnResult*> results;
  for (const engine::StreamPtr& s : streams) results.push_back(&s->Wait());
  for (const engine::StreamPtr& s : streams) c.server.Untrack(s);
  Json audit = q.audit;
  for (const engine::TurnResult* r : results) {
    if (!r->status.ok()) {
      const ApiError e = FromStatus(r->status);
      audit["status"] = e.status;
      c.server.Audit(c.tenant, "completion", audit);
      return c.Error(e);
    }
  }
  Json choices = Json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const engine::TurnResult& r = *results[i];
    int64_t offset = 0;
    choices.push_back({{"text", r.text},
                       {"index", i},
                       {"logprobs", q.g.logprobs ? CompletionLogprobs(tok, r.ids, r.logprobs,
                                                                      r.top_logprobs, &offset)
                                                 : Json(nullptr)},
                       {"finish_reason", std::string(engine::FinishReasonName(r.finish))}});
    c.server.metrics.ObserveTurn(r);
  }
  Json out = CompletionObject(q, std::move(choices));
  out["usage"] = ChatUsage(results);
  audit["status"] = 200;
  audit["usage"] = UsageTokens(out["usage"]);
  c.server.Audit(c.tenant, "completion", audit);
  c.SendJson(200, out);
}

// Streams choice after choice: a text_completion chunk per engine chunk, a chunk with the
// finish_reason when a choice ends, the usage chunk (include_usage), then [DONE].
void StreamCompletion(Call& c, CompletionRequest q, std::vector<engine::StreamPtr> streams,
                      std::optional<engine::StreamChunk> first) {
  struct State {
    size_t choice = 0;
    int64_t offset = 0;  // text_offset of the current choice's next token
    std::optional<engine::StreamChunk> pending;
    bool finished = false;
    int status = 200;
  };
  auto st = std::make_shared<State>();
  st->pending = std::move(first);
  auto q_ptr = std::make_shared<const CompletionRequest>(std::move(q));
  const engine::Tokenizer* tok = &c.engine().tokenizer();
  ServerState* server = &c.server;
  auto chunk = [q_ptr](size_t index, std::string text, Json logprobs, Json finish) {
    return SseData(CompletionObject(*q_ptr, Json::array({{{"text", std::move(text)},
                                                          {"index", index},
                                                          {"logprobs", std::move(logprobs)},
                                                          {"finish_reason", std::move(finish)}}})));
  };
  c.StreamSse(
      [st, q_ptr, streams, tok, server, chunk](std::string& out) {
        if (st->finished) return false;
        if (st->choice == streams.size()) {
          out +=
              StreamTail(streams, q_ptr->g.include_usage, CompletionObject(*q_ptr, Json::array()));
          st->finished = true;
          return false;
        }
        const size_t i = st->choice;
        engine::StreamChunk piece;
        bool got = false;
        if (st->pending) {
          piece = std::move(*st->pending);
          st->pending.reset();
          got = true;
        } else {
          got = streams[i]->Next(&piece);
        }
        if (got) {
          Json lp = q_ptr->g.logprobs ? CompletionLogprobs(*tok, piece.ids, piece.logprobs,
                                                           piece.top_logprobs, &st->offset)
                                      : Json(nullptr);
          out += chunk(i, std::move(piece.text), std::move(lp), nullptr);
          return true;
        }
        const engine::TurnResult& r = streams[i]->Wait();
        if (!r.status.ok()) {
          const ApiError e = FromStatus(r.status);
          st->status = e.status;
          out += SseData(ErrorBody(e));
          out += "data: [DONE]\n\n";
          st->finished = true;
          return false;
        }
        server->metrics.ObserveTurn(r);
        out += chunk(i, "", nullptr, std::string(engine::FinishReasonName(r.finish)));
        ++st->choice;
        st->offset = 0;
        return true;
      },
      [st, q_ptr, streams, server, tenant = c.tenant](bool completed) {
        std::vector<const engine::TurnResult*> results;
        for (const engine::StreamPtr& s : streams) {
          // After an error event (or a disconnect) the later choices may still be running.
          s->Cancel();
          server->Untrack(s);
          results.push_back(&s->Wait());
        }
        Json audit = q_ptr->audit;
        audit["status"] = completed ? st->status : 499;
        audit["usage"] = UsageTokens(ChatUsage(results));
        server->Audit(tenant, "completion", audit);
      });
}

void Completions(Call& c) {
  std::optional<Json> body = c.Body();
  if (!body) return;
  FieldReader f(*body);
  if (!CheckModel(c, f)) return;
  RejectUnsupportedCompletionFields(f);
  CompletionRequest q;
  q.g = ReadGenerationFields(f, /*completions_logprobs=*/true);
  if (auto best_of = f.Int("best_of", 1, 16); best_of && *best_of != q.g.n)
    NotSupported(f, "best_of", "best_of other than n is");
  std::string text;
  const engine::Tokenizer& tok = c.engine().tokenizer();
  std::vector<engine::TokenId> prompt = ReadPrompt(f, tok, &text);
  if (!f.ok()) return c.Error(f.error());
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t max_tokens = std::max(q.g.params.stop.max_tokens, 1);
  if (n + max_tokens > c.engine().context_length()) {
    return c.Error(
        BadRequest(absl::StrCat("prompt: ", n, " prompt tokens + max_tokens ", max_tokens,
                                " exceed the context length ", c.engine().context_length()),
                   "prompt"));
  }
  if (f.Raw("seed") == nullptr) q.g.params.sampling.seed = RandomSeed();
  q.g.params.tokens = std::move(prompt);

  std::optional<Choices> choices = StartChoices(c, q.g, "prompt", /*keep_first=*/true);
  if (!choices) return;
  q.id = RandomId("cmpl-");
  q.created = absl::ToUnixSeconds(absl::Now());
  q.model = c.server.model_name;
  q.audit = AuditRecord(q.id, q.g);
  if (c.server.options.audit_prompts) {
    q.audit["prompt"] = text.empty() ? Json(q.g.params.tokens) : Json(text);
  }
  for (const engine::StreamPtr& s : choices->streams) c.server.Track(s);
  if (!q.g.stream) return RespondCompletionJson(c, q, choices->streams);
  StreamCompletion(c, std::move(q), std::move(choices->streams), std::move(choices->first));
}

}  // namespace

void RegisterOpenAiRoutes(Router& r) {
  const int64_t created = absl::ToUnixSeconds(absl::Now());
  auto model_object = [created](const ServerState& s) {
    return Json{
        {"id", s.model_name}, {"object", "model"}, {"created", created}, {"owned_by", "mnemo"}};
  };
  r.Get("/v1/models", "/v1/models", [model_object](Call& c) {
    c.SendJson(200, {{"object", "list"}, {"data", Json::array({model_object(c.server)})}});
  });
  r.Get(R"(/v1/models/(.+))", "/v1/models/{id}", [model_object](Call& c) {
    const std::string id = c.req.matches[1];
    if (id != c.server.model_name) {
      ApiError e = NotFound(absl::StrCat("The model \"", id, "\" does not exist"));
      e.param = "model";
      e.code = "model_not_found";
      return c.Error(e);
    }
    c.SendJson(200, model_object(c.server));
  });
  r.Post("/v1/chat/completions", "/v1/chat/completions", ChatCompletions);
  r.Post("/v1/completions", "/v1/completions", Completions);
}

}  // namespace mnemo::server
