#include "forkd/dns/name_allowlist.h"

#include <algorithm>

#include "absl/strings/ascii.h"

namespace forkd::dns {
namespace {

constexpr size_t kMaxLabel = 63;
constexpr size_t kMaxName = 253;

bool ValidLabelChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '_'; }

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = absl::ascii_tolower(c);
  return out;
}

// True when `name` ends with the labels of `suffix`.
bool EndsWith(const Labels& name, const Labels& suffix) {
  if (name.size() < suffix.size()) return false;
  return std::equal(suffix.rbegin(), suffix.rend(), name.rbegin());
}

}  // namespace

absl::StatusOr<Labels> ParseName(std::string_view name) {
  const std::string_view original = name;
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty()) return absl::InvalidArgumentError("empty name");
  if (name.size() > kMaxName) {
    return absl::InvalidArgumentError("name longer than 253 characters: " + std::string(original));
  }
  Labels labels;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t dot = std::min(name.find('.', start), name.size());
    const std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > kMaxLabel) {
      return absl::InvalidArgumentError("bad label in name " + std::string(original));
    }
    if (!std::all_of(label.begin(), label.end(), ValidLabelChar)) {
      return absl::InvalidArgumentError("bad character in name " + std::string(original));
    }
    labels.push_back(Lower(label));
    start = dot + 1;
  }
  return labels;
}

absl::StatusOr<Labels> WireNameLabels(const uint8_t* data, size_t size) {
  Labels labels;
  size_t at = 0;
  for (;;) {
    if (at >= size) return absl::InvalidArgumentError("wire name runs past its end");
    const size_t len = data[at];
    if (len == 0) break;
    if (len > kMaxLabel) return absl::InvalidArgumentError("wire name: label over 63 bytes");
    if (at + 1 + len > size) return absl::InvalidArgumentError("wire name runs past its end");
    std::string label(reinterpret_cast<const char*>(data + at + 1), len);
    labels.push_back(Lower(label));
    at += 1 + len;
  }
  if (at + 1 != size) return absl::InvalidArgumentError("wire name: bytes after the root label");
  return labels;
}

absl::StatusOr<NameAllowlist> NameAllowlist::Create(const std::vector<std::string>& patterns) {
  NameAllowlist list;
  for (const std::string& p : patterns) {
    Pattern pattern;
    std::string_view text = p;
    if (text.starts_with("*.")) {
      pattern.wildcard = true;
      text.remove_prefix(2);
    }
    auto labels = ParseName(text);
    if (!labels.ok()) {
      return absl::InvalidArgumentError("allowlist pattern \"" + p +
                                        "\": " + std::string(labels.status().message()));
    }
    // "*.com" would hand a sandbox a whole top-level domain: refuse it as a
    // likely typo rather than guess.
    if (pattern.wildcard && labels->size() < 2) {
      return absl::InvalidArgumentError("allowlist pattern \"" + p +
                                        "\": a wildcard needs at least two labels after \"*.\"");
    }
    pattern.labels = std::move(*labels);
    list.patterns_.push_back(std::move(pattern));
  }
  return list;
}

bool NameAllowlist::Allows(const Labels& name) const {
  for (const Pattern& p : patterns_) {
    if (p.wildcard) {
      if (name.size() > p.labels.size() && EndsWith(name, p.labels)) return true;
    } else if (name == p.labels) {
      return true;
    }
  }
  return false;
}

}  // namespace forkd::dns
