// The names a sandbox may resolve: exact names ("api.example.com") and
// wildcard suffixes ("*.example.com": every name strictly below example.com,
// not example.com itself). Matching is label by label and ASCII
// case-insensitive; a trailing dot is accepted on patterns and names.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace forkd::dns {

// A domain name as its labels, lowercased, root label omitted
// ("WWW.Example.com." -> {"www", "example", "com"}).
using Labels = std::vector<std::string>;

// Splits a presentation-format name ("www.example.com", trailing dot
// optional) into lowercased labels. Refuses empty labels, labels longer than
// 63 bytes, names longer than 253 characters, and characters outside
// letters, digits, '-' and '_'.
absl::StatusOr<Labels> ParseName(std::string_view name);

// The labels of an uncompressed wire-format name (length-prefixed labels
// ending in the root label), lowercased. Label bytes are kept as they are, so
// a label containing '.' stays one label and can never pose as two.
absl::StatusOr<Labels> WireNameLabels(const uint8_t* data, size_t size);

class NameAllowlist {
 public:
  // Every pattern is validated; the first bad one is the error, naming it.
  static absl::StatusOr<NameAllowlist> Create(const std::vector<std::string>& patterns);

  bool Allows(const Labels& name) const;

 private:
  struct Pattern {
    Labels labels;
    bool wildcard = false;  // "*." prefix: matches strict subdomains only
  };
  std::vector<Pattern> patterns_;
};

}  // namespace forkd::dns
