#include "agent/modules.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::agent {

absl::StatusOr<std::vector<std::string>> ParseModuleList(std::string_view text) {
  std::vector<std::string> paths;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    if (line.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("module list line ", line_no, ": '", line, "' is not an absolute path"));
    }
    paths.emplace_back(line);
  }
  return paths;
}

ModuleLoader FinitModuleLoader() {
  return [](const std::string& path) -> absl::Status {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return ErrnoStatus(errno, absl::StrCat("open ", path));
    if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("finit_module ", path));
    }
    return absl::OkStatus();
  };
}

std::vector<absl::Status> LoadModules(const std::string& list_path, const ModuleLoader& load,
                                      int* loaded) {
  if (loaded != nullptr) *loaded = 0;
  UniqueFd fd(::open(list_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return {};
    return {ErrnoStatus(errno, absl::StrCat("open ", list_path))};
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return {ErrnoStatus(errno, absl::StrCat("read ", list_path))};
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  auto paths = ParseModuleList(text);
  if (!paths.ok()) return {Annotate(paths.status(), list_path)};
  std::vector<absl::Status> errors;
  for (const std::string& path : *paths) {
    if (absl::Status s = load(path); !s.ok()) {
      errors.push_back(std::move(s));
    } else if (loaded != nullptr) {
      ++*loaded;
    }
  }
  return errors;
}

}  // namespace forkd::agent
