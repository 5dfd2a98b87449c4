#include "forkd/templates/template_meta.h"

#include <fstream>
#include <sstream>

#include "common/errno_status.h"
#include "forkd/journal/journal.h"
#include "forkd/sandbox/ids.h"
#include "nlohmann/json.hpp"

namespace forkd::templates {
namespace fs = std::filesystem;

absl::Status WriteMeta(const TemplateMeta& meta) {
  nlohmann::json j = {{"id", meta.id},
                      {"guest", meta.guest},
                      {"memory_mib", meta.memory_mib},
                      {"kernel_sha256", meta.kernel_sha256},
                      {"created_unix_ms", meta.created_unix_ms}};
  // The journal's durable write (temporary, fsync, rename, fsync dir).
  FORKD_ASSIGN_OR_RETURN(journal::Journal j_dir, journal::Journal::Open(meta.dir));
  return j_dir.Put("template", j);
}

absl::StatusOr<TemplateMeta> ReadMeta(const fs::path& dir) {
  std::ifstream in(dir / "template.json");
  if (!in) return absl::NotFoundError("no template.json in " + dir.string());
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("id") || !j["id"].is_string()) {
    return absl::DataLossError(dir.string() + "/template.json does not parse");
  }
  TemplateMeta m;
  m.id = j["id"].get<std::string>();
  m.guest = j.value("guest", "");
  m.memory_mib = j.value("memory_mib", 0u);
  m.kernel_sha256 = j.value("kernel_sha256", "");
  m.created_unix_ms = j.value("created_unix_ms", int64_t{0});
  m.dir = dir;
  FORKD_RETURN_IF_ERROR(sandbox::ValidateId("template id in " + dir.string(), m.id));
  if (m.id != dir.filename().string()) {
    return absl::DataLossError(dir.string() + "/template.json names template " + m.id);
  }
  return m;
}

absl::StatusOr<std::vector<TemplateMeta>> LoadTemplates(const fs::path& templates_dir,
                                                        std::vector<std::string>* removed) {
  std::vector<TemplateMeta> out;
  std::error_code ec;
  fs::create_directories(templates_dir, ec);
  if (ec) return absl::InternalError("create " + templates_dir.string() + ": " + ec.message());
  for (const auto& entry : fs::directory_iterator(templates_dir, ec)) {
    auto meta = ReadMeta(entry.path());
    if (meta.ok()) {
      out.push_back(std::move(*meta));
      continue;
    }
    fs::remove_all(entry.path(), ec);
    if (ec) return absl::InternalError("remove " + entry.path().string() + ": " + ec.message());
    if (removed)
      removed->push_back(entry.path().string() + " (" + std::string(meta.status().message()) + ")");
  }
  if (ec) return absl::InternalError("scan " + templates_dir.string() + ": " + ec.message());
  return out;
}

}  // namespace forkd::templates
