// ForkRunning's parts that are not the fork pipeline itself:
//
//   - the live snapshot of a running sandbox: PAUSE, SNAPSHOT into a new
//     directory inside the parent VMM's SNAPSHOT directory (the only one its
//     jail may write; forkd-vmm refuses to overwrite a snapshot in use),
//     RESUME (also after a failed SNAPSHOT: the parent never stays paused);
//   - the hidden template that owns that snapshot: its journal record
//     (written before the snapshot exists, so a crash leaves nothing
//     unaccounted), and its directory DATA/running/<id>. It serves only the
//     children of that call, is never listed, never pooled, and goes with
//     its last child (Node::MaybeDropHiddenTemplate) or, after a crash, at
//     the next start when no adopted sandbox uses it.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "forkd/sandbox/vmm_child.h"
#include "forkd/templates/template_meta.h"
#include "nlohmann/json.hpp"

namespace forkd::pipeline {

// PAUSE, SNAPSHOT `target`, RESUME on a live VMM's control channel.
absl::Status LiveSnapshot(sandbox::VmmChild& vmm, const std::filesystem::path& target,
                          std::chrono::milliseconds timeout);

// The journal record of a hidden template (its key is the template id).
inline constexpr char kHiddenTemplateKind[] = "hidden_template";
nlohmann::json HiddenTemplateRecord(const templates::TemplateMeta& meta,
                                    const std::string& parent_sandbox);
bool IsHiddenTemplateRecord(const nlohmann::json& record);
templates::TemplateMeta HiddenTemplateFromRecord(const std::string& key,
                                                 const nlohmann::json& record);

}  // namespace forkd::pipeline
