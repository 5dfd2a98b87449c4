#include "forkd/pipeline/fork_running.h"

#include "common/errno_status.h"

namespace forkd::pipeline {

absl::Status LiveSnapshot(sandbox::VmmChild& vmm, const std::filesystem::path& target,
                          std::chrono::milliseconds timeout) {
  FORKD_RETURN_IF_ERROR(vmm.Send("PAUSE"));
  FORKD_RETURN_IF_ERROR(vmm.Expect("OK", timeout));
  absl::Status snap = vmm.Send("SNAPSHOT " + target.string());
  if (snap.ok()) snap = vmm.Expect("OK", timeout);
  // Resumed whatever the snapshot did: the parent keeps running.
  absl::Status resume = vmm.Send("RESUME");
  if (resume.ok()) resume = vmm.Expect("OK", timeout);
  if (!snap.ok()) return snap;
  return resume;
}

nlohmann::json HiddenTemplateRecord(const templates::TemplateMeta& meta,
                                    const std::string& parent_sandbox) {
  return {{"kind", kHiddenTemplateKind},
          {"template_id", meta.id},
          {"dir", meta.dir.string()},
          {"guest", meta.guest},
          {"memory_mib", meta.memory_mib},
          {"kernel_sha256", meta.kernel_sha256},
          {"created_unix_ms", meta.created_unix_ms},
          {"parent", parent_sandbox}};
}

bool IsHiddenTemplateRecord(const nlohmann::json& record) {
  return record.is_object() && record.value("kind", "") == kHiddenTemplateKind;
}

templates::TemplateMeta HiddenTemplateFromRecord(const std::string& key,
                                                 const nlohmann::json& record) {
  templates::TemplateMeta m;
  m.id = record.value("template_id", key);
  m.dir = record.value("dir", "");
  m.guest = record.value("guest", "probe");
  m.memory_mib = record.value("memory_mib", 0u);
  m.kernel_sha256 = record.value("kernel_sha256", "");
  m.created_unix_ms = record.value("created_unix_ms", int64_t{0});
  return m;
}

}  // namespace forkd::pipeline
