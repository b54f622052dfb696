// TokenizerData from a Hugging Face tokenizer.json (+ tokenizer_config.json).
//
// Recognised shapes (anything else is InvalidArgument naming what was found):
//   byte-level BPE, by pre_tokenizer:
//     ByteLevel(use_regex)                               -> pre "gpt2"
//     Sequence[Digits(individual_digits), ByteLevel(use_regex)]  -> "smollm"
//     Sequence[Split(<regex>, Isolated), ByteLevel(!use_regex)]  -> "llama3" / "qwen2" /
//                                                           "gpt2", by the exact regex
//   SentencePiece-style BPE (llama 2, mistral): pre_tokenizer Metaspace("▁"), or none with a
//     normalizer that replaces " " by "▁" (optionally prepending "▁"). Loaded as kSpm with
//     scores derived from merge ranks: the piece a merge of rank r makes scores -r (its
//     best rank), every other piece -1e9. SentencePiece merges by these scores exactly as
//     the BPE ranks order them.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cache/base/strings.h"
#include "engine/model/tokenizer.h"
#include "engine/model/tokenizer_impl.h"
#include "nlohmann/json.hpp"

namespace mnemo::engine {
namespace {

using nlohmann::json;

constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // "▁"
constexpr int64_t kMaxVocab = int64_t{1} << 24;

absl::Status Error(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", AsAbsl(what)));
}

std::string TypeOf(const json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) {
    return j["type"].get<std::string>();
  }
  return j.is_null() ? "null" : j.dump().substr(0, 80);
}

bool Flag(const json& j, const char* key, bool fallback) {
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : fallback;
}

struct PreResult {
  bool spm = false;
  bool add_space_prefix = false;
  std::string pre;  // BPE pre-tokenizer name
};

// The regex of a Split pre-tokenizer, if it is an Isolated, non-inverted regex split.
std::string SplitRegex(const json& split) {
  if (TypeOf(split) != "Split" || !split.contains("pattern")) return {};
  const json& p = split["pattern"];
  if (!p.is_object() || !p.contains("Regex") || !p["Regex"].is_string()) return {};
  if (split.value("behavior", "Isolated") != "Isolated" || Flag(split, "invert", false)) {
    return {};
  }
  return p["Regex"].get<std::string>();
}

// Finds a Replace(" " -> "▁") and a Prepend("▁") in a normalizer (possibly a Sequence).
void ScanNormalizer(const json& n, bool* replaces_space, bool* prepends) {
  if (!n.is_object()) return;
  const std::string type = TypeOf(n);
  if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
    for (const json& m : n["normalizers"]) ScanNormalizer(m, replaces_space, prepends);
  } else if (type == "Replace" && n.contains("pattern") && n["pattern"].is_object() &&
             n["pattern"].value("String", "") == " " && n.value("content", "") == kSpaceMark) {
    *replaces_space = true;
  } else if (type == "Prepend" && n.value("prepend", "") == kSpaceMark) {
    *prepends = true;
  }
}

absl::StatusOr<PreResult> RecognizePre(const json& root) {
  PreResult r;
  const json pre = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
  const std::string type = TypeOf(pre);
  if (pre.is_null()) {
    bool replaces = false, prepends = false;
    if (root.contains("normalizer")) ScanNormalizer(root["normalizer"], &replaces, &prepends);
    if (!replaces) {
      return Error(
          "no pre_tokenizer and no normalizer replacing \" \" by \"▁\": not a "
          "supported tokenizer");
    }
    r.spm = true;
    r.add_space_prefix = prepends;
    return r;
  }
  if (type == "Metaspace") {
    if (pre.value("replacement", std::string(kSpaceMark)) != kSpaceMark) {
      return Error("Metaspace pre_tokenizer with a replacement other than \"▁\"");
    }
    r.spm = true;
    const std::string scheme = pre.value("prepend_scheme", "");
    r.add_space_prefix = scheme.empty() ? Flag(pre, "add_prefix_space", true) : scheme != "never";
    return r;
  }
  if (type == "ByteLevel") {
    if (Flag(pre, "add_prefix_space", false)) {
      return Error("ByteLevel pre_tokenizer with add_prefix_space is not supported");
    }
    if (!Flag(pre, "use_regex", true)) return Error("ByteLevel pre_tokenizer without regex");
    r.pre = "gpt2";
    return r;
  }
  if (type == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
      pre["pretokenizers"].size() == 2) {
    const json& a = pre["pretokenizers"][0];
    const json& b = pre["pretokenizers"][1];
    if (TypeOf(b) == "ByteLevel" && !Flag(b, "add_prefix_space", false)) {
      if (TypeOf(a) == "Digits" && Flag(a, "individual_digits", false) &&
          Flag(b, "use_regex", true)) {
        r.pre = "smollm";
        return r;
      }
      const std::string regex = SplitRegex(a);
      if (!regex.empty() && !Flag(b, "use_regex", true)) {
        if (regex == kLlama3Regex) r.pre = "llama3";
        if (regex == kQwen2Regex) r.pre = "qwen2";
        if (regex == kGpt2Regex) r.pre = "gpt2";
        if (!r.pre.empty()) return r;
        return Error(absl::StrCat("Split pre_tokenizer with an unsupported regex: ", regex));
      }
    }
  }
  return Error(absl::StrCat("unsupported pre_tokenizer ", pre.dump().substr(0, 300),
                            " (supported: ByteLevel; Sequence[Digits, ByteLevel]; "
                            "Sequence[Split(llama3|qwen2|gpt2 regex), ByteLevel]; Metaspace)"));
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string ConfigTokenText(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return {};
}

absl::StatusOr<TokenizerData> Parse(std::string_view tokenizer_json, std::string_view config_json) {
  const json root = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) return Error("not a JSON object");
  if (!root.contains("model") || !root["model"].is_object()) return Error("no \"model\" object");
  const json& model = root["model"];
  const std::string model_type = model.value("type", "BPE");
  if (model_type != "BPE") {
    return Error(absl::StrCat("model.type \"", model_type, "\" is not supported (BPE only)"));
  }
  auto pre = RecognizePre(root);
  if (!pre.ok()) return pre.status();

  TokenizerData d;
  d.kind = pre->spm ? TokenizerKind::kSpm : TokenizerKind::kBpe;
  d.model_name = pre->spm ? "llama" : "gpt2";
  d.pre = pre->spm ? "default" : pre->pre;
  d.add_space_prefix = pre->add_space_prefix;
  d.ignore_merges = Flag(model, "ignore_merges", false);
  const bool byte_fallback = Flag(model, "byte_fallback", false);

  // Vocabulary and added tokens -> dense id table.
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return Error("model.vocab is not an object");
  }
  std::vector<std::pair<int64_t, std::string>> entries;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer())
      return Error(absl::StrCat("model.vocab[\"", text, "\"] is not an id"));
    entries.emplace_back(id.get<int64_t>(), text);
  }
  std::vector<std::pair<int64_t, bool>> added;  // id, special
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const json& t : root["added_tokens"]) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string()) {
        return Error(absl::StrCat("added_tokens entry ", t.dump().substr(0, 100),
                                  " lacks an integer id or a content string"));
      }
      entries.emplace_back(t["id"].get<int64_t>(), t["content"].get<std::string>());
      added.emplace_back(t["id"].get<int64_t>(), Flag(t, "special", false));
    }
  }
  int64_t max_id = -1;
  for (const auto& [id, text] : entries) {
    if (id < 0 || id >= kMaxVocab) return Error(absl::StrCat("token id ", id, " out of range"));
    max_id = std::max(max_id, id);
  }
  if (max_id < 0) return Error("empty vocabulary");
  // Ids must be dense, so the largest is below the number of entries (added tokens may
  // repeat vocabulary ids): checked before allocating anything of that size.
  if (static_cast<uint64_t>(max_id) >= entries.size()) {
    return Error(absl::StrCat("token ids are not dense: the largest is ", max_id, " but there are ",
                              entries.size(), " entries"));
  }
  d.tokens.resize(max_id + 1);
  std::vector<bool> seen(max_id + 1, false);
  for (const auto& [id, text] : entries) {  // added tokens come last and win
    d.tokens[id] = text;
    seen[id] = true;
  }
  for (int64_t id = 0; id <= max_id; ++id) {
    if (!seen[id]) return Error(absl::StrCat("no token has id ", id, " (ids must be dense)"));
  }
  d.types.assign(d.tokens.size(), TokenType::kNormal);
  absl::flat_hash_map<std::string, TokenId> ids;
  for (size_t i = 0; i < d.tokens.size(); ++i) ids.try_emplace(d.tokens[i], TokenId(i));
  const auto id_of = [&](const std::string& text) {
    const auto it = ids.find(text);
    return it == ids.end() ? kNoToken : it->second;
  };

  // Merges: "a b" strings or ["a", "b"] pairs.
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        d.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        d.merges.push_back(absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>()));
      } else {
        return Error(absl::StrCat("model.merges entry ", m.dump().substr(0, 100),
                                  " is neither \"a b\" nor [\"a\", \"b\"]"));
      }
    }
  }

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    d.unk = id_of(model["unk_token"].get<std::string>());
  }
  if (pre->spm) {
    // Scores from merge ranks (see the file comment); byte pieces typed for byte fallback.
    d.scores.assign(d.tokens.size(), -1e9f);
    for (size_t rank = 0; rank < d.merges.size(); ++rank) {
      const std::string& m = d.merges[rank];
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos) continue;  // Create reports malformed merges for BPE
      const TokenId id = id_of(m.substr(0, space) + m.substr(space + 1));
      if (id != kNoToken && d.scores[id] == -1e9f) d.scores[id] = -static_cast<float>(rank);
    }
    for (size_t i = 0; i < d.tokens.size(); ++i) {
      const std::string& t = d.tokens[i];
      if (byte_fallback && t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        d.types[i] = TokenType::kByte;
      }
    }
    d.merges.clear();
  }
  for (const auto& [id, special] : added) {
    d.types[id] = special ? TokenType::kControl : TokenType::kUserDefined;
  }
  if (d.unk != kNoToken) d.types[d.unk] = TokenType::kUnknown;

  // tokenizer_config.json: chat template, flags, special tokens by text.
  bool add_bos_known = false;
  if (!config_json.empty()) {
    const json cfg = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
    if (cfg.is_discarded() || !cfg.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: not a JSON object");
    }
    if (cfg.contains("chat_template")) {
      const json& t = cfg["chat_template"];
      if (t.is_string()) {
        d.chat_template = t.get<std::string>();
      } else if (t.is_array()) {  // [{"name": ..., "template": ...}]: the default one
        for (const json& e : t) {
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
              e["template"].is_string()) {
            d.chat_template = e["template"].get<std::string>();
          }
        }
      }
    }
    for (const auto& [key, field] :
         {std::pair{"bos_token", &d.bos}, std::pair{"eos_token", &d.eos},
          std::pair{"unk_token", &d.unk}, std::pair{"pad_token", &d.pad}}) {
      if (!cfg.contains(key) || cfg[key].is_null()) continue;
      const std::string text = ConfigTokenText(cfg[key]);
      const TokenId id = id_of(text);
      if (id == kNoToken) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", key, " \"", text,
                                                       "\" is not in the vocabulary"));
      }
      *field = id;
    }
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
      d.add_bos = cfg["add_bos_token"].get<bool>();
      add_bos_known = true;
    }
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
      d.add_eos = cfg["add_eos_token"].get<bool>();
    }
  }
  // A TemplateProcessing post-processor (possibly inside a Sequence) that starts with a
  // special token adds it as BOS.
  std::vector<json> processors;
  if (root.contains("post_processor")) {
    const json& pp = root["post_processor"];
    if (TypeOf(pp) == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
      for (const json& p : pp["processors"]) processors.push_back(p);
    } else {
      processors.push_back(pp);
    }
  }
  for (const json& pp : processors) {
    if (TypeOf(pp) != "TemplateProcessing" || !pp.contains("single")) continue;
    const json& single = pp["single"];
    if (!single.is_array() || single.empty() || !single[0].is_object() ||
        !single[0].contains("SpecialToken") || !single[0]["SpecialToken"].is_object()) {
      continue;
    }
    const TokenId id = id_of(single[0]["SpecialToken"].value("id", ""));
    if (id == kNoToken) continue;
    if (d.bos == kNoToken) d.bos = id;
    if (!add_bos_known) {
      d.add_bos = id == d.bos;
      add_bos_known = true;
    }
  }
  if (!add_bos_known) d.add_bos = pre->spm && d.bos != kNoToken;  // SentencePiece's default
  if (d.add_bos && d.bos == kNoToken) d.add_bos = false;
  if (d.add_eos && d.eos == kNoToken) d.add_eos = false;
  internal::FillEndOfGeneration(&d);
  return d;
}

}  // namespace

absl::StatusOr<TokenizerData> TokenizerDataFromHfJson(std::string_view tokenizer_json,
                                                      std::string_view tokenizer_config_json) {
  try {
    return Parse(tokenizer_json, tokenizer_config_json);
  } catch (const json::exception& e) {
    return Error(e.what());
  }
}

}  // namespace mnemo::engine
