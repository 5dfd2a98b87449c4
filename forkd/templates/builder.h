// Builds a template: boots the guest in a forkd-vmm process (vsock for the
// agent, virtio-net on a build tap in a scratch network namespace, so every
// fork restores with a NIC of its own), waits until its agent answers Ping,
// runs the init commands through Exec, snapshots, and records the template.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "forkd/api/forkd.pb.h"
#include "forkd/sandbox/cgroup.h"
#include "forkd/sandbox/jail_args.h"
#include "forkd/templates/pinned_guests.h"
#include "forkd/templates/template_meta.h"

namespace forkd::templates {

struct BuildEnv {
  std::string vmm_binary;
  std::string keeper_binary;  // forkd-vmm-keeper (sandbox/vmm_child.h)
  std::filesystem::path templates_dir;
  // The guest images and their pins (the in-tree probe guest, the Linux
  // kernel and initramfs). Re-verified before every build; under the
  // operator's waiver Linux builds run --insecure-skip-guest-verify, warn,
  // and their snapshots are stamped unpinned (docs/guest-pin.md).
  PinnedGuests* guests = nullptr;
  // The build's VMM is jailed as every other (forkd/sandbox/jail_args.h):
  // its uid/gid (also the build tap's owner; nullopt without the jail).
  sandbox::JailPolicy jail;
  std::optional<uint32_t> vmm_uid;
  // forkd's VM cgroups (forkd/sandbox/cgroup.h): when set and enabled, the
  // build's keeper and VMM run in their own, forkd-vm-build-<template id>
  // under forkd's parent, with a VM's limits for the template's memory, as
  // every fork does; it is removed when the build ends either way.
  const sandbox::CgroupPlacer* cgroups = nullptr;
};

// The agent modes of the probe guest's stand-in agent (honest is the
// product's; the others exist to prove the reseed gate through forkd).
bool IsProbeAgentMode(const std::string& mode);

using ProgressFn = std::function<void(v1::TemplateProgress::Stage, const std::string&)>;

// Builds `request` (already validated) into templates_dir/<id>. On error
// nothing of the build is left (process, tap, namespace, cgroup, files).
absl::StatusOr<TemplateMeta> BuildTemplate(const BuildEnv& env,
                                           const v1::CreateTemplateRequest& request,
                                           const ProgressFn& progress);

}  // namespace forkd::templates
