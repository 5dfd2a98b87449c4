// A built template on disk: <templates>/<id>/snap (a forkd-vmm snapshot)
// and <templates>/<id>/template.json (this record). A directory without the
// record is an interrupted build and is removed at start.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace forkd::templates {

struct TemplateMeta {
  std::string id;
  std::string guest;  // "probe" or "linux"
  uint32_t memory_mib = 0;
  std::string kernel_sha256;
  int64_t created_unix_ms = 0;
  std::filesystem::path dir;  // <templates>/<id>
  std::filesystem::path snapshot() const { return dir / "snap"; }
};

absl::Status WriteMeta(const TemplateMeta& meta);  // durable (fsync + rename)
absl::StatusOr<TemplateMeta> ReadMeta(const std::filesystem::path& dir);

// Every complete template under `templates_dir`; incomplete directories
// (interrupted builds) are removed, each named in `removed`.
absl::StatusOr<std::vector<TemplateMeta>> LoadTemplates(const std::filesystem::path& templates_dir,
                                                        std::vector<std::string>* removed);

}  // namespace forkd::templates
