// spdlog set-up: human text or one JSON object per line (--log-format).
#pragma once

#include <string>

namespace forkd::daemon {

void SetUpLogging(const std::string& format);

// `text` as the inside of a JSON string.
std::string JsonEscape(const std::string& text);

}  // namespace forkd::daemon
