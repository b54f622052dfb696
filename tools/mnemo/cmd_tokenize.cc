// mnemo tokenize MODEL [--json] [--special] [--no-bos] TEXT
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tools/mnemo/cli.h"
#include "tools/mnemo/commands.h"

namespace mnemo::cli {
namespace {

const CommandSpec& Spec() {
  static const CommandSpec spec = {
      .name = "tokenize",
      .usage = "MODEL [--json] [--special] [--no-bos] TEXT",
      .summary =
          "Prints the token ids of TEXT under MODEL's tokenizer, one per line with the\n"
          "piece it stands for. Special tokens written in TEXT (e.g. <|im_start|>) are\n"
          "recognised only with --special.",
      .flags = {{"json", false, "", "print {\"ids\": [...], \"pieces\": [...]}"},
                {"special", false, "", "recognise special/control tokens written in TEXT"},
                {"no-bos", false, "", "do not add BOS even if the model adds one"}},
      .min_positionals = 2,
      .max_positionals = 2,
  };
  return spec;
}

// Printable form of a piece's bytes: C-style escapes for control and invalid bytes.
std::string Escape(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\'') {
      out += "\\'";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace

int RunTokenize(const std::vector<std::string>& args) {
  auto parsed = Parse(Spec(), args);
  if (!parsed.ok()) {
    std::fprintf(stderr, "mnemo tokenize: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  if (parsed->Has("help")) {
    std::printf("%s", HelpText(Spec()).c_str());
    return 0;
  }
  auto model = engine::Model::Open(parsed->positionals()[0]);
  if (!model.ok()) {
    std::fprintf(stderr, "mnemo tokenize: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  auto tokenizer = engine::Tokenizer::Create((*model)->tokenizer_data());
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "mnemo tokenize: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  engine::EncodeOptions opts;
  opts.parse_special = parsed->Has("special");
  if (parsed->Has("no-bos")) opts.add_bos = false;
  const std::vector<engine::TokenId> ids = (*tokenizer)->Encode(parsed->positionals()[1], opts);

  if (parsed->Has("json")) {
    nlohmann::json j;
    j["ids"] = ids;
    nlohmann::json pieces = nlohmann::json::array();
    for (engine::TokenId id : ids) {
      // Pieces are raw bytes that may be partial UTF-8: replace invalid sequences.
      pieces.push_back(nlohmann::json((*tokenizer)->TokenBytes(id, /*render_special=*/true))
                           .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    for (auto& p : pieces) p = nlohmann::json::parse(p.get<std::string>());
    j["pieces"] = pieces;
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  for (engine::TokenId id : ids) {
    std::printf("%6d -> '%s'\n", id,
                Escape((*tokenizer)->TokenBytes(id, /*render_special=*/true)).c_str());
  }
  return 0;
}

}  // namespace mnemo::cli
