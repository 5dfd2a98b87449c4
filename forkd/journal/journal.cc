#include "forkd/journal/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "common/errno_status.h"
#include "common/unique_fd.h"

namespace forkd::journal {
namespace fs = std::filesystem;

namespace {
constexpr char kSuffix[] = ".json";
constexpr char kTmpSuffix[] = ".json.tmp";

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::Status WriteAll(int fd, const std::string& data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write " + what);
    }
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<Journal> Journal::Open(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError("journal: create " + dir.string() + ": " + ec.message());
  if (::chmod(dir.c_str(), 0700) != 0) return ErrnoStatus(errno, "journal: chmod " + dir.string());
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (EndsWith(entry.path().filename().string(), kTmpSuffix)) fs::remove(entry.path(), ec);
  }
  if (ec) return absl::InternalError("journal: scan " + dir.string() + ": " + ec.message());
  return Journal(dir);
}

absl::Status Journal::SyncDir() const {
  UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return ErrnoStatus(errno, "journal: open " + dir_.string());
  if (::fsync(d.get()) != 0) return ErrnoStatus(errno, "journal: fsync " + dir_.string());
  return absl::OkStatus();
}

absl::Status Journal::Put(const std::string& key, const nlohmann::json& record) const {
  const fs::path tmp = dir_ / (key + kTmpSuffix);
  const fs::path final_path = dir_ / (key + kSuffix);
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return ErrnoStatus(errno, "journal: create " + tmp.string());
    FORKD_RETURN_IF_ERROR(WriteAll(fd.get(), record.dump() + "\n", tmp.string()));
    if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, "journal: fsync " + tmp.string());
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    return ErrnoStatus(errno, "journal: rename " + tmp.string());
  }
  return SyncDir();
}

absl::Status Journal::Remove(const std::string& key) const {
  const fs::path p = dir_ / (key + kSuffix);
  if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "journal: unlink " + p.string());
  }
  return SyncDir();
}

absl::StatusOr<std::vector<std::pair<std::string, nlohmann::json>>> Journal::LoadAll() const {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!EndsWith(name, kSuffix)) continue;
    std::ifstream in(entry.path());
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::DataLossError("journal: record " + entry.path().string() + " does not parse");
    }
    out.emplace_back(name.substr(0, name.size() - (sizeof kSuffix - 1)), std::move(j));
  }
  if (ec) return absl::InternalError("journal: scan " + dir_.string() + ": " + ec.message());
  return out;
}

}  // namespace forkd::journal
