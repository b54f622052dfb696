// The workload of mnemo_multiturn_bench (bench/multiturn_workload.h).
#include "bench/multiturn_workload.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace mnemo::bench {
namespace {

// The Gettysburg Address (public domain): the user text when --text cannot be read.
constexpr char kFallbackText[] =
    "Four score and seven years ago our fathers brought forth on this continent, a new "
    "nation, conceived in Liberty, and dedicated to the proposition that all men are created "
    "equal. Now we are engaged in a great civil war, testing whether that nation, or any "
    "nation so conceived and so dedicated, can long endure. We are met on a great "
    "battle-field of that war. We have come to dedicate a portion of that field, as a final "
    "resting place for those who here gave their lives that that nation might live. It is "
    "altogether fitting and proper that we should do this. But, in a larger sense, we can "
    "not dedicate -- we can not consecrate -- we can not hallow -- this ground. The brave "
    "men, living and dead, who struggled here, have consecrated it, far above our poor power "
    "to add or detract. The world will little note, nor long remember what we say here, but "
    "it can never forget what they did here. It is for us the living, rather, to be "
    "dedicated here to the unfinished work which they who fought here have thus far so nobly "
    "advanced. It is rather for us to be here dedicated to the great task remaining before "
    "us -- that from these honored dead we take increased devotion to that cause for which "
    "they gave the last full measure of devotion -- that we here highly resolve that these "
    "dead shall not have died in vain -- that this nation, under God, shall have a new birth "
    "of freedom -- and that government of the people, by the people, for the people, shall "
    "not perish from the earth.";

bool EndsSentence(const std::string& w) {
  return !w.empty() && (w.back() == '.' || w.back() == '?' || w.back() == '!');
}

}  // namespace

std::vector<std::string> TextSource::LoadWords(const std::string& path, std::string* used) {
  std::ifstream in(path);
  std::vector<std::string> words;
  std::string w;
  while (in >> w) words.push_back(w);
  *used = path;
  if (words.size() < 200) {
    words.clear();
    std::istringstream fallback{std::string(kFallbackText)};
    while (fallback >> w) words.push_back(w);
    *used = "embedded Gettysburg Address";
  }
  return words;
}

std::string TextSource::Draw(std::mt19937_64& rng, int tokens) const {
  const size_t n = words_.size();
  size_t start = static_cast<size_t>(rng() % n);
  for (size_t k = 0; k < n && !EndsSentence(words_[(start + n - 1) % n]); ++k) {
    start = (start + 1) % n;
  }
  auto join = [&](int count) {
    std::string text;
    for (int i = 0; i < count; ++i) {
      if (i > 0) text += ' ';
      text += words_[(start + static_cast<size_t>(i)) % n];
    }
    return text;
  };
  // The fewest words that reach `tokens` (every word is at least one token, and a longer
  // text never has fewer tokens): a binary search over the word count.
  int lo = 1, hi = std::max(tokens, 1);
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (Count(join(mid)) >= tokens) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  std::string text = join(lo);
  std::vector<engine::TokenId> ids = Encode(text);
  if (static_cast<int>(ids.size()) > tokens) {
    ids.resize(static_cast<size_t>(tokens));
    std::string cut = tokenizer_.Decode(ids);
    if (Count(cut) == tokens) text = std::move(cut);
  }
  return text;
}

std::vector<engine::TokenId> TextSource::Encode(const std::string& text) const {
  engine::EncodeOptions eo;
  eo.add_bos = false;
  eo.add_eos = false;
  return tokenizer_.Encode(text, eo);
}

Conversation MakeConversation(const TextSource& text, uint64_t seed, uint64_t salt, int index,
                              const ConversationShape& shape) {
  std::seed_seq seq{seed, salt, static_cast<uint64_t>(index)};
  std::mt19937_64 rng(seq);
  auto draw = [&rng](int lo, int hi) {
    return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  Conversation c;
  for (int t = 0; t < shape.turns; ++t) {
    c.user.push_back(text.Draw(rng, draw(shape.min_user_tokens, shape.max_user_tokens)));
    c.reply_tokens.push_back(draw(shape.min_reply_tokens, shape.max_reply_tokens));
  }
  return c;
}

}  // namespace mnemo::bench
