#include "forkd/sandbox/ids.h"

#include <cstdio>

namespace forkd::sandbox {
namespace {
bool Alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
}  // namespace

std::string Printable(std::string_view text, size_t max) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < max; i++) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      (void)std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (text.size() > max) out += "...";
  return out;
}

absl::Status ValidateId(std::string_view what, std::string_view id) {
  const auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(std::string(what) + " '" + Printable(id) + "' " + why +
                                      " (allowed: [A-Za-z0-9][A-Za-z0-9_-]{0,63})");
  };
  if (id.empty()) return absl::InvalidArgumentError(std::string(what) + " is empty");
  if (id.size() > kMaxIdLength) {
    return bad("is " + std::to_string(id.size()) + " characters long, more than 64");
  }
  if (!Alnum(id[0])) return bad("must start with a letter or digit");
  for (char c : id) {
    if (!Alnum(c) && c != '_' && c != '-') return bad("contains a character that is not allowed");
  }
  return absl::OkStatus();
}

}  // namespace forkd::sandbox
