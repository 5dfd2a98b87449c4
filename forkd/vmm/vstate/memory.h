// GuestMemory: guest RAM as one region at guest physical address 0.
//
// Three backings:
//  - anonymous (cold boot),
//  - a file mapped MAP_SHARED (a template VM whose RAM *is* its snapshot
//    memory file),
//  - a file mapped MAP_PRIVATE (restore/fork: clean pages shared with every
//    sibling through the page cache, each fork pays only for what it dirties,
//    and the file never changes). The fork keeps the file open with a shared
//    flock(2) for as long as it maps it: a snapshot written into that
//    directory (persist.h) takes the lock exclusively first, and is refused
//    while any fork holds it, since rewriting the file in place would change
//    every sibling's clean pages.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/vmm/mapping.h"

namespace forkd::vmm {

class GuestMemory {
 public:
  static absl::StatusOr<GuestMemory> Anonymous(uint64_t size);
  static absl::StatusOr<GuestMemory> FileShared(const std::string& path, uint64_t size);
  // Fails (FailedPrecondition) while a snapshot is being written over
  // `path` (it holds the exclusive lock).
  static absl::StatusOr<GuestMemory> FilePrivate(const std::string& path, uint64_t size);

  uint64_t size() const { return map_.size(); }
  uint8_t* host_base() const { return map_.data(); }

  // Bounds-checked views and copies at a guest physical address.
  absl::StatusOr<std::span<uint8_t>> Slice(uint64_t gpa, uint64_t len) const;
  absl::Status Write(uint64_t gpa, std::span<const uint8_t> data) const;
  template <typename T>
  absl::Status WriteObj(uint64_t gpa, const T& obj) const {
    return Write(gpa, {reinterpret_cast<const uint8_t*>(&obj), sizeof(T)});
  }

  // Writes all of guest RAM to `path` (created or truncated), leaving pages
  // that are entirely zero as holes so the file is sparse. No fsync: the
  // snapshot manifest writer syncs the file before hashing it.
  absl::Status SaveToFile(const std::string& path) const;

 private:
  explicit GuestMemory(Mapping map, UniqueFd backing = {})
      : map_(std::move(map)), backing_(std::move(backing)) {}
  Mapping map_;
  UniqueFd backing_;  // FilePrivate: the file, flock(LOCK_SH) while mapped
};

}  // namespace forkd::vmm
