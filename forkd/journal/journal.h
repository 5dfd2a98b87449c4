// forkd's journal: one JSON record per VM in a directory, each written
// before the side effect it announces (write to a temporary file, fsync,
// rename over the record, fsync the directory), so a forkd killed at any
// moment finds, on restart, a record for everything it may have left behind.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace forkd::journal {

class Journal {
 public:
  // Creates `dir` (0700) when missing. Leftover temporary files of an
  // interrupted Put are removed.
  static absl::StatusOr<Journal> Open(const std::filesystem::path& dir);

  // Atomically replaces the record `key` (a validated id) with `record`;
  // durable when this returns OK.
  absl::Status Put(const std::string& key, const nlohmann::json& record) const;
  // Removes the record; durable when this returns OK. A missing record is OK.
  absl::Status Remove(const std::string& key) const;
  // Every record, by key. A record that does not parse is an error naming it.
  absl::StatusOr<std::vector<std::pair<std::string, nlohmann::json>>> LoadAll() const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  explicit Journal(std::filesystem::path dir) : dir_(std::move(dir)) {}
  absl::Status SyncDir() const;
  std::filesystem::path dir_;
};

}  // namespace forkd::journal
