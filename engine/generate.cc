#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "cache/block_pool.h"
#include "cache/block_table.h"
#include "engine/model/chat_template.h"

namespace mnemo::engine {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

ChatTemplate ModelChatTemplate(const Tokenizer& tokenizer) {
  const TokenizerData& td = tokenizer.data();
  auto special_text = [&](TokenId id) {
    return id == kNoToken ? std::string() : tokenizer.TokenBytes(id, /*render_special=*/true);
  };
  return ChatTemplate::Detect(td.chat_template, special_text(td.bos), special_text(td.eos));
}

double GenerateTimings::prompt_tokens_per_second() const {
  return prompt_seconds > 0 ? static_cast<double>(prompt_tokens) / prompt_seconds : 0.0;
}
double GenerateTimings::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0.0;
}

// One sequence of a GenerateBatch call.
struct Generator::Seq {
  Seq(const GenerateRequest& r, const Tokenizer& tok, int vocab)
      : sampler(r.sampling, vocab),
        stop(r.stop, tok),
        detok(tok, DecodeOptions{.render_special = false, .strip_leading_space = false}) {}
  GenerateResult result;
  std::vector<TokenId> history;  // prompt + generated
  int64_t n_prompt = 0;
  int64_t n_computed = 0;  // tokens whose keys and values are in the table
  cache::BlockTable table;
  Sampler sampler;
  StopChecker stop;
  StreamingDetokenizer detok;
  int top_logprobs = 0;
  bool done = false;
};

// Every table is released before GenerateBatch returns, so the pool holds no blocks here.
Generator::~Generator() = default;

absl::StatusOr<std::unique_ptr<Generator>> Generator::Create(const Model& model,
                                                             const GeneratorOptions& opts) {
  if (opts.prefill_chunk < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill_chunk must be >= 1, got ", opts.prefill_chunk));
  }
  if (opts.block_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_tokens must be >= 1, got ", opts.block_tokens));
  }
  if (opts.kv_dtype != kernels::DType::kF16 && opts.kv_dtype != kernels::DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("KV dtype must be f16 or bf16, got ",
                                                   AsAbsl(kernels::DTypeName(opts.kv_dtype))));
  }
  std::unique_ptr<Generator> g(new Generator());
  g->opts_ = opts;
  g->model_ = &model;
  auto tok = Tokenizer::Create(model.tokenizer_data());
  if (!tok.ok()) return tok.status();
  g->tokenizer_ = std::move(*tok);
  auto fwd =
      CreateForwardPass(model, ForwardOptions{.device = opts.device, .threads = opts.threads});
  if (!fwd.ok()) return fwd.status();
  g->forward_ = std::move(*fwd);
  if (opts.kv_budget_bytes > 0) {
    auto pool = cache::BlockPool::Create(
        {.layout = g->forward_->KvLayoutFor(opts.kv_dtype, opts.block_tokens),
         .budget_bytes = opts.kv_budget_bytes,
         .memory = g->forward_->kv_memory()});
    if (!pool.ok()) return pool.status();
    g->pool_ = std::move(*pool);
  }
  return g;
}

absl::StatusOr<std::vector<TokenId>> Generator::PromptIds(const GenerateRequest& request) const {
  if (!request.prompt_ids.empty()) return request.prompt_ids;
  if (request.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  if (!request.chat) return tokenizer_->Encode(request.prompt, {});
  const ChatTemplate tmpl = ModelChatTemplate(*tokenizer_);
  if (tmpl.family() == ChatTemplateFamily::kUnknown) {
    return absl::InvalidArgumentError(
        tokenizer_->data().chat_template.empty()
            ? "--chat: the model has no chat template"
            : "--chat: the model's chat template is not one mnemo renders");
  }
  const ChatMessage message{.role = "user", .content = request.prompt};
  auto text = tmpl.Render(std::span(&message, 1), /*add_generation_prompt=*/true);
  if (!text.ok()) return text.status();
  EncodeOptions eo;
  eo.parse_special = true;
  if (tmpl.renders_bos()) eo.add_bos = false;
  return tokenizer_->Encode(*text, eo);
}

absl::Status Generator::EnsurePool(int64_t blocks_needed) {
  if (opts_.kv_budget_bytes > 0) return absl::OkStatus();  // fixed pool from Create
  if (pool_ != nullptr && pool_->num_total() >= blocks_needed) return absl::OkStatus();
  const kernels::KvLayout layout = forward_->KvLayoutFor(opts_.kv_dtype, opts_.block_tokens);
  pool_.reset();
  auto pool = cache::BlockPool::Create({.layout = layout,
                                        .budget_bytes = static_cast<uint64_t>(blocks_needed) *
                                                        static_cast<uint64_t>(layout.block_bytes()),
                                        .memory = forward_->kv_memory()});
  if (!pool.ok()) return pool.status();
  pool_ = std::move(*pool);
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Generator::Generate(const GenerateRequest& request,
                                                   const TextCallback& on_text) {
  auto results = GenerateBatch(std::span(&request, 1), on_text);
  if (!results.ok()) return results.status();
  return std::move((*results)[0]);
}

absl::StatusOr<std::vector<GenerateResult>> Generator::GenerateBatch(
    std::span<const GenerateRequest> requests, const TextCallback& on_text) {
  if (requests.empty()) return absl::InvalidArgumentError("no requests");
  const ModelConfig& c = forward_->config();
  const int vocab = c.vocab_size;
  const int64_t ctx = c.context_length;

  // Validate everything before any compute.
  std::vector<std::vector<TokenId>> prompts;
  std::vector<int64_t> max_tokens;
  int64_t blocks_needed = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerateRequest& r = requests[i];
    auto ids = PromptIds(r);
    if (!ids.ok()) return ids.status();
    if (ids->empty()) return absl::InvalidArgumentError("empty prompt");
    for (TokenId id : *ids) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt token id ", id, " outside the vocabulary [0, ", vocab, ")"));
      }
    }
    if (absl::Status s = r.sampling.Validate(vocab); !s.ok()) return s;
    if (absl::Status s = r.stop.Validate(); !s.ok()) return s;
    const int64_t n = static_cast<int64_t>(ids->size());
    if (n >= ctx) {
      return absl::InvalidArgumentError(absl::StrCat("prompt of ", n,
                                                     " tokens does not fit the context length ",
                                                     ctx, " (with room for one more token)"));
    }
    int64_t m = r.stop.max_tokens < 0 ? ctx - n : r.stop.max_tokens;
    if (n + m > ctx) {
      return absl::InvalidArgumentError(absl::StrCat("prompt of ", n, " tokens + max_tokens ", m,
                                                     " exceeds the context length ", ctx));
    }
    max_tokens.push_back(m);
    blocks_needed += (n + m + opts_.block_tokens - 1) / opts_.block_tokens;
    prompts.push_back(std::move(*ids));
  }
  if (absl::Status s = EnsurePool(blocks_needed); !s.ok()) return s;

  std::vector<Seq> seqs;
  seqs.reserve(requests.size());
  absl::Status status;
  for (size_t i = 0; i < requests.size(); ++i) {
    Seq& s = seqs.emplace_back(requests[i], *tokenizer_, vocab);
    s.result.prompt_ids = prompts[i];
    s.history = std::move(prompts[i]);
    s.n_prompt = static_cast<int64_t>(s.history.size());
    s.history.reserve(static_cast<size_t>(s.n_prompt + max_tokens[i]));
    s.top_logprobs = requests[i].sampling.top_logprobs;
    s.done = s.stop.finish() != FinishReason::kNone;  // max_tokens == 0
    s.result.finish = s.stop.finish();
    if (status.ok() && !s.done && !s.table.Reserve(*pool_, s.n_prompt + max_tokens[i])) {
      status = absl::ResourceExhaustedError(absl::StrCat(
          "the KV cache budget cannot hold the request (", blocks_needed, " blocks of ",
          pool_->block_bytes(), " bytes needed, the pool has ", pool_->num_total(), ")"));
    }
  }
  auto release = [&] {
    for (Seq& s : seqs) s.table.Release(*pool_);
  };
  if (!status.ok()) {
    release();
    return status;
  }

  GenerateTimings timings;
  std::vector<size_t> which;
  std::vector<SeqBatchEntry> entries;
  // Prefill: up to prefill_chunk prompt tokens per step, across sequences in order.
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    which.clear();
    entries.clear();
    int64_t budget = opts_.prefill_chunk;
    for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
      Seq& s = seqs[i];
      if (s.done || s.n_computed >= s.n_prompt) continue;
      const int64_t take = std::min(budget, s.n_prompt - s.n_computed);
      budget -= take;
      which.push_back(i);
      entries.push_back(
          {.tokens = std::span(s.history).subspan(static_cast<size_t>(s.n_computed),
                                                  static_cast<size_t>(take)),
           .start_pos = static_cast<int32_t>(s.n_computed),
           .table = &s.table,
           .logits = s.n_computed + take == s.n_prompt ? LogitRows::kLast : LogitRows::kNone});
      timings.prompt_tokens += take;
    }
    if (entries.empty()) break;
    status = Step(seqs, which, entries, on_text);
    if (!status.ok()) break;
  }
  timings.prompt_seconds = SecondsSince(t0);

  // Decode: one token per live sequence per step.
  const auto t1 = std::chrono::steady_clock::now();
  while (status.ok()) {
    which.clear();
    entries.clear();
    for (size_t i = 0; i < seqs.size(); ++i) {
      Seq& s = seqs[i];
      if (s.done) continue;
      which.push_back(i);
      entries.push_back({.tokens = std::span(s.history).last(1),
                         .start_pos = static_cast<int32_t>(s.history.size() - 1),
                         .table = &s.table,
                         .logits = LogitRows::kLast});
    }
    if (entries.empty()) break;
    status = Step(seqs, which, entries, on_text);
    timings.decode_tokens += static_cast<int64_t>(entries.size());
  }
  timings.decode_seconds = SecondsSince(t1);
  release();
  if (!status.ok()) return status;

  std::vector<GenerateResult> results;
  results.reserve(seqs.size());
  for (Seq& s : seqs) {
    s.result.timings = timings;
    results.push_back(std::move(s.result));
  }
  return results;
}

absl::Status Generator::Step(std::vector<Seq>& seqs, std::span<const size_t> which,
                             std::span<const SeqBatchEntry> entries, const TextCallback& on_text) {
  const int vocab = forward_->config().vocab_size;
  logits_.resize(static_cast<size_t>(LogitRowCount(entries) * vocab));
  if (absl::Status st = forward_->Forward(pool_->view(), entries, logits_.data()); !st.ok()) {
    return st;
  }
  int64_t row = 0;
  for (size_t j = 0; j < entries.size(); ++j) {
    Seq& s = seqs[which[j]];
    s.n_computed += static_cast<int64_t>(entries[j].tokens.size());
    if (entries[j].logits != LogitRows::kLast) continue;
    const std::span<const float> l(logits_.data() + row * vocab, static_cast<size_t>(vocab));
    ++row;
    SampleResult r = s.sampler.Sample(l, s.history, s.n_prompt);
    s.history.push_back(r.id);
    s.result.ids.push_back(r.id);
    s.result.logprobs.push_back(r.logprob);
    if (s.top_logprobs > 0) s.result.top_logprobs.push_back(std::move(r.top));
    std::string text = s.stop.Push(r.id, s.detok.Push(r.id));
    if (s.stop.finish() != FinishReason::kNone) {
      s.done = true;
      s.result.finish = s.stop.finish();
      // Bytes of an incomplete UTF-8 sequence held by the detokenizer, unless a stop string
      // ended the text.
      if (s.stop.matched_stop().empty() && !tokenizer_->IsEog(r.id)) text += s.detok.Flush();
    }
    if (!text.empty()) {
      s.result.text += text;
      if (on_text) on_text(which[j], text);
    }
  }
  return absl::OkStatus();
}

}  // namespace mnemo::engine
