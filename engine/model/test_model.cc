#include "engine/model/test_model.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/base/strings.h"
#include "engine/model/gguf.h"
#include "engine/model/internal/file_io.h"
#include "engine/model/internal/status_util.h"
#include "engine/model/model.h"
#include "engine/model/safetensors.h"
#include "engine/model/tensor_names.h"
#include "kernels/dequant.h"
#include "nlohmann/json.hpp"
#include "xxhash.h"

namespace mnemo::engine {
namespace {

using kernels::DType;
using model_internal::InvalidArgument;
using OrderedJson = nlohmann::ordered_json;

// Merges in GPT-2's byte-to-unicode alphabet ("Ġ" is a space, "Ċ" a newline). Each joins two
// existing pieces into a new one; rank = position.
constexpr std::string_view kMerges[kTestModelNumMerges] = {
    "Ġ t",   "h e", "i n",     "Ġ a", "e r",   "o n",    "Ġt he", "r e", "a n",   "Ġ s",
    "i s",   "Ġ w", "o u",     "l l", "in g",  "Ġ i",    "Ġ o",   "e d", "Ġ h",   "o r",
    "Ġw or", "l d", "Ġwor ld", "H e", "He ll", "Hell o", "Ġ c",   "a t", "Ġc at", "Ċ Ċ",
    "Ġ b",   "Ġ m", "Ġ f",     "Ġ d", "i t",   "Ġ p",    "a r",   "e s", "Ġo n",  "Ġ T",
};

constexpr std::string_view kChatTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Qwen2's pre-tokenizer split (tokenizer.ggml.pre = "qwen2").
constexpr std::string_view kQwen2Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

constexpr std::string_view kSpecials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};

std::string Utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    s.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return s;
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others are moved to
// U+0100 onwards in byte order.
std::string ByteSymbol(int b) {
  auto printable = [](int c) {
    return (c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff);
  };
  if (printable(b)) return Utf8(static_cast<uint32_t>(b));
  int n = 0;
  for (int c = 0; c < b; ++c) n += printable(c) ? 0 : 1;
  return Utf8(256u + static_cast<uint32_t>(n));
}

// A splitmix64 stream: deterministic on every platform (unlike std distributions).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float Uniform() {  // [-1, 1)
    return static_cast<float>(static_cast<double>(Next() >> 40) / double(1ull << 23) - 1.0);
  }

 private:
  uint64_t s_;
};

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The bytes of `values` (rows of shape.back() elements) in `dtype`.
std::vector<uint8_t> Encode(DType dtype, const std::vector<float>& values,
                            const std::vector<int64_t>& shape) {
  const int64_t cols = shape.back();
  const int64_t rows = Product(shape) / cols;
  const uint64_t row_bytes = *kernels::DTypeBytes(dtype, cols);
  std::vector<uint8_t> out(row_bytes * static_cast<uint64_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::QuantizeRowRef(dtype, values.data() + r * cols, out.data() + r * row_bytes, cols);
  }
  return out;
}

std::string ArchGgufName(Architecture a) {
  return a == Architecture::kMistral ? "llama" : std::string(ArchName(a));
}

std::string HfClassName(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
  }
  return "";
}

std::string TorchDType(DType t) {
  return t == DType::kF32 ? "float32" : t == DType::kF16 ? "float16" : "bfloat16";
}

absl::Status WriteGguf(const TestModelOptions& opts, const ModelConfig& c,
                       const std::string& path) {
  GgufBuilder b;
  const std::string a = ArchGgufName(opts.arch);
  b.SetString("general.architecture", a);
  b.SetString("general.name", c.name);
  b.SetU32(a + ".block_count", static_cast<uint32_t>(c.n_layers));
  b.SetU32(a + ".context_length", static_cast<uint32_t>(c.context_length));
  b.SetU32(a + ".embedding_length", static_cast<uint32_t>(c.d_model));
  b.SetU32(a + ".feed_forward_length", static_cast<uint32_t>(c.d_ff));
  b.SetU32(a + ".attention.head_count", static_cast<uint32_t>(c.n_heads));
  b.SetU32(a + ".attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  b.SetU32(a + ".attention.key_length", static_cast<uint32_t>(c.head_dim));
  b.SetU32(a + ".attention.value_length", static_cast<uint32_t>(c.head_dim));
  b.SetF32(a + ".attention.layer_norm_rms_epsilon", c.norm_eps);
  b.SetU32(a + ".rope.dimension_count", static_cast<uint32_t>(c.rope.rotary_dims));
  b.SetF32(a + ".rope.freq_base", c.rope.base);
  b.SetU32(a + ".vocab_size", static_cast<uint32_t>(c.vocab_size));
  if (c.sliding_window > 0) {
    b.SetU32(a + ".attention.sliding_window", static_cast<uint32_t>(c.sliding_window));
  }

  const TokenizerData tok = TestModelTokenizerData();
  b.SetString("tokenizer.ggml.model", tok.model_name);
  b.SetString("tokenizer.ggml.pre", tok.pre);
  b.SetStringArray("tokenizer.ggml.tokens", tok.tokens);
  std::vector<int32_t> types;
  for (TokenType t : tok.types) types.push_back(static_cast<int32_t>(t));
  b.SetI32Array("tokenizer.ggml.token_type", types);
  b.SetStringArray("tokenizer.ggml.merges", tok.merges);
  b.SetU32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tok.bos));
  b.SetU32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tok.eos));
  b.SetU32("tokenizer.ggml.eot_token_id", static_cast<uint32_t>(tok.eot));
  b.SetU32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(tok.pad));
  b.SetBool("tokenizer.ggml.add_bos_token", tok.add_bos);
  b.SetString("tokenizer.chat_template", tok.chat_template);

  for (const TensorSpec& spec : ExpectedTensors(c)) {
    const DType dt = TestModelTensorDType(opts, spec.shape);
    std::vector<int64_t> ne(spec.shape.rbegin(), spec.shape.rend());
    MNEMO_MODEL_RETURN_IF_ERROR(
        b.AddTensor(spec.name, std::move(ne), dt,
                    Encode(dt, TestModelTensorValues(opts, spec.name, spec.shape), spec.shape)));
  }
  return b.WriteFile(path);
}

std::string HfConfigJson(const TestModelOptions& opts, const ModelConfig& c) {
  OrderedJson j;
  j["_name_or_path"] = c.name;
  j["architectures"] = {HfClassName(opts.arch)};
  j["model_type"] = std::string(ArchName(opts.arch));
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.d_ff;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.context_length;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope.base;
  j["rope_scaling"] = nullptr;
  j["tie_word_embeddings"] = c.tied_embeddings;
  j["vocab_size"] = c.vocab_size;
  j["bos_token_id"] = c.bos;
  j["eos_token_id"] = c.eos;
  j["pad_token_id"] = c.pad;
  j["torch_dtype"] = TorchDType(opts.dtype);
  if (opts.arch != Architecture::kQwen2) j["attention_bias"] = false;
  if (opts.arch == Architecture::kMistral) {
    j["sliding_window"] = c.sliding_window > 0 ? OrderedJson(c.sliding_window) : OrderedJson();
  } else if (opts.arch != Architecture::kLlama) {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? c.sliding_window : c.context_length;
    j["max_window_layers"] = c.sliding_window > 0 ? 0 : c.n_layers;
  }
  return j.dump(2);
}

OrderedJson AddedToken(TokenId id, std::string_view content) {
  return {{"id", id},
          {"content", std::string(content)},
          {"single_word", false},
          {"lstrip", false},
          {"rstrip", false},
          {"normalized", false},
          {"special", true}};
}

std::string HfTokenizerJson() {
  const TokenizerData tok = TestModelTokenizerData();
  OrderedJson added = OrderedJson::array();
  for (size_t i = 0; i < std::size(kSpecials); ++i) {
    added.push_back(AddedToken(kTestModelEndOfText + static_cast<TokenId>(i), kSpecials[i]));
  }
  OrderedJson vocab = OrderedJson::object();
  for (size_t i = 0; i < static_cast<size_t>(kTestModelEndOfText); ++i) {
    vocab[tok.tokens[i]] = i;
  }
  OrderedJson byte_level = {{"type", "ByteLevel"},
                            {"add_prefix_space", false},
                            {"trim_offsets", false},
                            {"use_regex", false}};
  OrderedJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = std::move(added);
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"},
                           {"pattern", {{"Regex", std::string(kQwen2Split)}}},
                           {"behavior", "Isolated"},
                           {"invert", false}},
                          byte_level}}};
  j["post_processor"] = byte_level;
  j["decoder"] = byte_level;
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", std::move(vocab)},
                {"merges", tok.merges}};
  return j.dump(2);
}

std::string HfTokenizerConfigJson() {
  OrderedJson decoder = OrderedJson::object();
  for (size_t i = 0; i < std::size(kSpecials); ++i) {
    OrderedJson t = AddedToken(kTestModelEndOfText + static_cast<TokenId>(i), kSpecials[i]);
    t.erase("id");
    decoder[std::to_string(kTestModelEndOfText + static_cast<TokenId>(i))] = std::move(t);
  }
  OrderedJson j;
  j["add_bos_token"] = false;
  j["add_eos_token"] = false;
  j["add_prefix_space"] = false;
  j["added_tokens_decoder"] = std::move(decoder);
  j["additional_special_tokens"] = {"<|im_start|>", "<|im_end|>"};
  j["bos_token"] = nullptr;
  j["chat_template"] = std::string(kChatTemplate);
  j["clean_up_tokenization_spaces"] = false;
  j["eos_token"] = "<|im_end|>";
  j["errors"] = "replace";
  j["model_max_length"] = 32768;
  j["pad_token"] = "<|endoftext|>";
  j["split_special_tokens"] = false;
  j["tokenizer_class"] = "Qwen2Tokenizer";
  j["unk_token"] = nullptr;
  return j.dump(2);
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  return model_internal::WriteFileAtomically(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

absl::Status WriteSafetensorsFolder(const TestModelOptions& opts, const ModelConfig& c,
                                    const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !model_internal::IsDirectory(dir)) {
    return absl::UnavailableError(
        absl::StrCat("cannot create folder ", dir, ec ? ": " + ec.message() : ""));
  }
  SafetensorsBuilder b;
  b.SetMetadata("format", "pt");
  for (const TensorSpec& spec : ExpectedTensors(c)) {
    std::optional<std::string> hf = HfNameFromCanonical(spec.name);
    if (!hf) return absl::InternalError(absl::StrCat("no HF name for ", spec.name));
    MNEMO_MODEL_RETURN_IF_ERROR(b.AddTensor(
        *hf, opts.dtype, spec.shape,
        Encode(opts.dtype, TestModelTensorValues(opts, spec.name, spec.shape), spec.shape)));
  }
  MNEMO_MODEL_RETURN_IF_ERROR(b.WriteFile(dir + "/model.safetensors"));
  MNEMO_MODEL_RETURN_IF_ERROR(WriteText(dir + "/config.json", HfConfigJson(opts, c)));
  MNEMO_MODEL_RETURN_IF_ERROR(WriteText(dir + "/tokenizer.json", HfTokenizerJson()));
  return WriteText(dir + "/tokenizer_config.json", HfTokenizerConfigJson());
}

}  // namespace

TokenizerData TestModelTokenizerData() {
  TokenizerData d;
  d.kind = TokenizerKind::kBpe;
  d.model_name = "gpt2";
  d.pre = "qwen2";
  for (int b = 0; b < 256; ++b) d.tokens.push_back(ByteSymbol(b));
  for (std::string_view m : kMerges) {
    const size_t sp = m.find(' ');
    d.tokens.push_back(std::string(m.substr(0, sp)) + std::string(m.substr(sp + 1)));
    d.merges.emplace_back(m);
  }
  d.types.assign(d.tokens.size(), TokenType::kNormal);
  for (std::string_view s : kSpecials) {
    d.tokens.emplace_back(s);
    d.types.push_back(TokenType::kControl);
  }
  d.bos = kTestModelEndOfText;
  d.eos = kTestModelImEnd;
  d.eot = kTestModelImEnd;
  d.pad = kTestModelEndOfText;
  d.eog = {kTestModelImEnd, kTestModelEndOfText};
  d.add_bos = false;
  d.chat_template = std::string(kChatTemplate);
  return d;
}

absl::StatusOr<ModelConfig> TestModelConfig(const TestModelOptions& opts) {
  const bool gguf = opts.format == TestModelFormat::kGguf;
  const kernels::DTypeInfo& info = kernels::GetDTypeInfo(opts.dtype);
  if (!kernels::CanQuantize(opts.dtype)) {
    return InvalidArgument(
        absl::StrCat("test model: dtype ", AsAbsl(info.name), " is not a weight dtype"));
  }
  if (!gguf && info.quantized) {
    return InvalidArgument(absl::StrCat("test model: dtype ", AsAbsl(info.name),
                                        " cannot be stored in safetensors (f32, f16, bf16)"));
  }
  if (opts.sliding_window != 0 && opts.arch == Architecture::kLlama) {
    return InvalidArgument("test model: llama has no sliding window");
  }
  ModelConfig c;
  c.arch = (gguf && opts.arch == Architecture::kMistral) ? Architecture::kLlama : opts.arch;
  c.arch_name = gguf ? ArchGgufName(opts.arch) : std::string(ArchName(opts.arch));
  c.name = absl::StrCat("mnemo-test-", AsAbsl(ArchName(opts.arch)), "-", AsAbsl(info.name));
  c.n_layers = opts.n_layers;
  c.d_model = opts.d_model;
  c.n_heads = opts.n_heads;
  c.n_kv_heads = opts.n_kv_heads;
  c.head_dim = opts.head_dim;
  c.d_ff = opts.d_ff;
  c.vocab_size = kTestModelVocabSize;
  c.context_length = opts.context_length;
  c.rope.base = opts.rope_base;
  c.rope.rotary_dims = opts.head_dim;
  c.rope.style =
      (gguf && (opts.arch == Architecture::kLlama || opts.arch == Architecture::kMistral))
          ? RopeStyle::kNormal
          : RopeStyle::kNeox;
  c.norm_eps = opts.norm_eps;
  c.tied_embeddings = opts.tied_embeddings;
  c.qkv_bias = opts.arch == Architecture::kQwen2;
  c.qk_norm = opts.arch == Architecture::kQwen3;
  c.sliding_window = opts.sliding_window;
  c.bos = kTestModelEndOfText;
  c.eos = kTestModelImEnd;
  c.pad = kTestModelEndOfText;
  if (gguf) c.eot = kTestModelImEnd;  // config.json has no end-of-turn id
  MNEMO_MODEL_RETURN_IF_ERROR(model_internal::Annotate(c.Validate(), "test model"));
  for (const auto& [what, n] : {std::pair<const char*, int64_t>{"d_model", c.d_model},
                                {"n_heads * head_dim", int64_t{c.n_heads} * c.head_dim},
                                {"d_ff", c.d_ff}}) {
    if (n % info.block_elems != 0) {
      return InvalidArgument(
          absl::StrFormat("test model: %s = %d is not a multiple of %d, the block size of %s", what,
                          n, info.block_elems, info.name));
    }
  }
  return c;
}

kernels::DType TestModelTensorDType(const TestModelOptions& opts,
                                    const std::vector<int64_t>& shape) {
  if (opts.format == TestModelFormat::kGguf && shape.size() == 1) return DType::kF32;
  return opts.dtype;
}

std::vector<float> TestModelTensorValues(const TestModelOptions& opts, std::string_view name,
                                         const std::vector<int64_t>& shape) {
  Rng rng(XXH3_64bits_withSeed(name.data(), name.size(), opts.seed));
  const int64_t n = Product(shape);
  std::vector<float> v(static_cast<size_t>(n));
  const bool is_norm = name.ends_with("norm.weight");
  const bool is_bias = name.ends_with(".bias");
  float scale = 1.0f;
  if (shape.size() >= 2 && name != "token_embd.weight") {
    scale = 1.0f / std::sqrt(static_cast<float>(shape.back()));
  }
  for (float& x : v) {
    const float u = rng.Uniform();
    x = is_norm ? 1.0f + 0.1f * u : is_bias ? 0.1f * u : scale * u;
  }
  return v;
}

absl::Status WriteTestModel(const TestModelOptions& opts, const std::string& out_path) {
  MNEMO_MODEL_ASSIGN_OR_RETURN(ModelConfig c, TestModelConfig(opts));
  if (opts.format == TestModelFormat::kGguf) return WriteGguf(opts, c, out_path);
  return WriteSafetensorsFolder(opts, c, out_path);
}

}  // namespace mnemo::engine
