// Debian 12's absl has its own absl::string_view (not std::string_view), so absl::StrCat does not
// take std::string_view. AV() bridges; used only inside forkd/snapshot .cc files.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace forkd::snapshot {
inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace forkd::snapshot
