#include "nix_wire.h"

#include <array>

#include "little_endian.h"

namespace lazystore::wire {

WireWriter& WireWriter::u64(uint64_t value) {
  std::array<char, 8> bytes{};
  put_u64_le(bytes.data(), value);
  buffer_.append(bytes.data(), bytes.size());
  return *this;
}

WireWriter& WireWriter::str(std::string_view value) {
  u64(value.size());
  buffer_.append(value);
  buffer_.append(padding(value.size()), '\0');
  return *this;
}

WireWriter& WireWriter::strings(std::span<const std::string> values) {
  u64(values.size());
  for (const auto& value : values) str(value);
  return *this;
}

WireWriter& WireWriter::raw(std::string_view bytes) {
  buffer_.append(bytes);
  return *this;
}

WireWriter& WireWriter::path_info(const PathInfo& info, std::string_view nar_hash) {
  return str(info.path)
      .str(info.deriver)
      .str(nar_hash)
      .strings(info.references)
      .u64(info.registration_time)
      .u64(info.nar_size)
      .boolean(info.ultimate)
      .strings(info.sigs)
      .str(info.ca);
}

Status WireReader::read_exact(std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    auto n = source_(out.subspan(done));
    if (!n) return n.error();
    if (*n == 0) return make_error(EPROTO, protocol_ + ": unexpected end of stream");
    done += *n;
  }
  return {};
}

Result<uint64_t> WireReader::u64() {
  std::array<std::byte, 8> bytes{};
  if (auto s = read_exact(bytes); !s) return s.error();
  return get_u64_le(bytes.data());
}

Result<std::string> WireReader::str(size_t max_length) {
  auto length = u64();
  if (!length) return length.error();
  if (*length > max_length) {
    return make_error(EINVAL, protocol_ + ": string of " + std::to_string(*length) + " bytes exceeds the limit of " +
                                  std::to_string(max_length));
  }
  std::string value(*length + padding(*length), '\0');
  if (auto s = read_exact(std::as_writable_bytes(std::span(value.data(), value.size()))); !s) return s.error();
  for (size_t i = *length; i < value.size(); ++i) {
    if (value[i] != '\0') return make_error(EINVAL, protocol_ + ": non-zero string padding");
  }
  value.resize(*length);
  return value;
}

Result<std::vector<std::string>> WireReader::strings(uint64_t max_count) {
  auto count = u64();
  if (!count) return count.error();
  if (*count > max_count) {
    return make_error(EINVAL, protocol_ + ": list of " + std::to_string(*count) + " items exceeds the limit");
  }
  std::vector<std::string> values;
  for (uint64_t i = 0; i < *count; ++i) {
    auto value = str();
    if (!value) return value.error();
    values.push_back(std::move(*value));
  }
  return values;
}

}  // namespace lazystore::wire
