// GgufBuilder: writes GGUF v3 files (the reader is in gguf.cc).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/model/gguf.h"
#include "engine/model/internal/gguf_format.h"
#include "kernels/base/check.h"

namespace mnemo::engine {
namespace {

using gguf_internal::AlignUp;
using gguf_internal::kAlignmentKey;
using gguf_internal::kMaxDims;

// Appends little-endian fields to a byte vector.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* out) : out_(out) {}

  template <typename T>
  void Put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out_->insert(out_->end(), p, p + sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    out_->insert(out_->end(), s.begin(), s.end());
  }
  void PadTo(uint64_t align) {
    const std::optional<uint64_t> end = AlignUp(out_->size(), align);
    out_->resize(*end, 0);
  }
  void PutValue(const GgufValue& v) {
    switch (v.type()) {
      case GgufType::kUint8:
        return Put(static_cast<uint8_t>(*v.AsUint()));
      case GgufType::kUint16:
        return Put(static_cast<uint16_t>(*v.AsUint()));
      case GgufType::kUint32:
        return Put(static_cast<uint32_t>(*v.AsUint()));
      case GgufType::kUint64:
        return Put(static_cast<uint64_t>(*v.AsUint()));
      case GgufType::kInt8:
        return Put(static_cast<int8_t>(*v.AsInt()));
      case GgufType::kInt16:
        return Put(static_cast<int16_t>(*v.AsInt()));
      case GgufType::kInt32:
        return Put(static_cast<int32_t>(*v.AsInt()));
      case GgufType::kInt64:
        return Put(static_cast<int64_t>(*v.AsInt()));
      case GgufType::kFloat32:
        return Put(static_cast<float>(*v.AsFloat()));
      case GgufType::kFloat64:
        return Put(static_cast<double>(*v.AsFloat()));
      case GgufType::kBool:
        return Put(static_cast<uint8_t>(*v.AsBool() ? 1 : 0));
      case GgufType::kString:
        return PutString(*v.AsString());
      case GgufType::kArray: {
        const GgufValue::Array& a = *v.AsArray();
        Put(static_cast<uint32_t>(v.array_type()));
        Put<uint64_t>(a.size());
        for (const GgufValue& e : a) PutValue(e);
        return;
      }
    }
  }

 private:
  std::vector<uint8_t>* out_;
};

absl::Status ErrnoError(const std::string& what, const std::string& path, int err) {
  return absl::UnavailableError(
      absl::StrCat("gguf: cannot ", what, " ", path, ": ", std::strerror(err)));
}

absl::Status WriteAll(int fd, const std::vector<uint8_t>& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write", path, errno);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

void GgufBuilder::Set(std::string key, GgufValue value) {
  for (auto& [k, v] : kv_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

void GgufBuilder::SetString(std::string key, std::string v) {
  Set(std::move(key), GgufValue::String(std::move(v)));
}
void GgufBuilder::SetU32(std::string key, uint32_t v) {
  Set(std::move(key), GgufValue::Uint(GgufType::kUint32, v));
}
void GgufBuilder::SetI32(std::string key, int32_t v) {
  Set(std::move(key), GgufValue::Int(GgufType::kInt32, v));
}
void GgufBuilder::SetF32(std::string key, float v) {
  Set(std::move(key), GgufValue::Float(GgufType::kFloat32, v));
}
void GgufBuilder::SetBool(std::string key, bool v) { Set(std::move(key), GgufValue::Bool(v)); }

void GgufBuilder::SetStringArray(std::string key, const std::vector<std::string>& v) {
  GgufValue::Array a;
  a.reserve(v.size());
  for (const std::string& s : v) a.push_back(GgufValue::String(s));
  Set(std::move(key), GgufValue::MakeArray(GgufType::kString, std::move(a)));
}

void GgufBuilder::SetF32Array(std::string key, const std::vector<float>& v) {
  GgufValue::Array a;
  a.reserve(v.size());
  for (float f : v) a.push_back(GgufValue::Float(GgufType::kFloat32, f));
  Set(std::move(key), GgufValue::MakeArray(GgufType::kFloat32, std::move(a)));
}

void GgufBuilder::SetI32Array(std::string key, const std::vector<int32_t>& v) {
  GgufValue::Array a;
  a.reserve(v.size());
  for (int32_t i : v) a.push_back(GgufValue::Int(GgufType::kInt32, i));
  Set(std::move(key), GgufValue::MakeArray(GgufType::kInt32, std::move(a)));
}

absl::Status GgufBuilder::AddTensor(std::string name, std::vector<int64_t> ne, kernels::DType dtype,
                                    std::vector<uint8_t> data) {
  const auto fail = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("gguf builder: tensor '", name, "': ", msg));
  };
  if (name.empty()) return fail("name is empty");
  for (const Tensor& t : tensors_) {
    if (t.name == name) return fail("duplicate tensor name");
  }
  if (ne.empty() || ne.size() > kMaxDims) {
    return fail(absl::StrCat(ne.size(), " dimensions, expected 1..", kMaxDims));
  }
  int64_t n_elements = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] <= 0) return fail(absl::StrCat("ne[", d, "] = ", ne[d], " is not positive"));
    if (__builtin_mul_overflow(n_elements, ne[d], &n_elements)) {
      return fail("element count overflows int64");
    }
  }
  const kernels::DTypeInfo& info = kernels::GetDTypeInfo(dtype);
  if (ne[0] % info.block_elems != 0) {
    return fail(absl::StrCat("row length ne[0] = ", ne[0], " is not a multiple of the ",
                             std::string(info.name), " block size ", info.block_elems));
  }
  const std::optional<uint64_t> bytes = kernels::DTypeBytes(dtype, n_elements);
  if (!bytes.has_value()) return fail("byte size overflows");
  if (*bytes != data.size()) {
    return fail(absl::StrCat("data holds ", data.size(), " bytes, ", std::string(info.name),
                             " with ", n_elements, " elements needs ", *bytes));
  }
  tensors_.push_back(Tensor{std::move(name), std::move(ne), dtype, std::move(data)});
  return absl::OkStatus();
}

std::vector<uint8_t> GgufBuilder::Serialize() const {
  // `general.alignment`, when set to a valid value, decides the layout; an invalid value is
  // written as given (the reader then rejects the file) and the default layout is used.
  uint64_t alignment = alignment_;
  for (const auto& [k, v] : kv_) {
    if (k != kAlignmentKey) continue;
    const std::optional<uint64_t> a = v.AsUint();
    if (a.has_value() && gguf_internal::IsPowerOfTwo(*a) && *a <= (uint64_t{1} << 30)) {
      alignment = *a;
    }
  }

  std::vector<uint8_t> out;
  Writer w(&out);
  w.Put(gguf_internal::kMagic);
  w.Put(gguf_internal::kWriteVersion);
  w.Put<uint64_t>(tensors_.size());
  w.Put<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    w.PutString(k);
    w.Put(static_cast<uint32_t>(v.type()));
    w.PutValue(v);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    w.PutString(t.name);
    w.Put(static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) w.Put(static_cast<uint64_t>(n));
    w.Put(GgmlTypeFromDType(t.dtype));
    w.Put(offset);
    offset = *AlignUp(offset + t.data.size(), alignment);
  }
  w.PadTo(alignment);
  for (const Tensor& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    w.PadTo(alignment);
  }
  return out;
}

absl::Status GgufBuilder::WriteFile(const std::string& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return ErrnoError("create a temporary file next to", path, errno);
  absl::Status st = WriteAll(fd, bytes, tmp);
  if (st.ok() && ::fchmod(fd, 0644) != 0) st = ErrnoError("chmod", tmp, errno);
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("fsync", tmp, errno);
  if (::close(fd) != 0 && st.ok()) st = ErrnoError("close", tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("rename", tmp, errno);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError("open directory", dir.string(), errno);
  if (::fsync(dfd) != 0) st = ErrnoError("fsync directory", dir.string(), errno);
  ::close(dfd);
  return st;
}

}  // namespace mnemo::engine
