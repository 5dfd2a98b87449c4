#include "forkd/templates/pinned_guests.h"

#include "agent/protocol.h"
#include "common/errno_status.h"
#include "kernel-stage/digest.h"

namespace forkd::templates {

namespace ks = forkd::kernel_stage;

namespace {

absl::StatusOr<ks::Sha256Digest> ParseDigest(const std::string& what, const std::string& hex) {
  auto d = ks::ParseSha256Hex(hex);
  if (!d.ok()) {
    return absl::InvalidArgumentError("--" + what + "-sha256 must be 64 hex digits (SHA-256): " +
                                      std::string(d.status().message()));
  }
  return *d;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PinnedGuests>> PinnedGuests::Open(const GuestFilesConfig& config) {
  std::unique_ptr<PinnedGuests> g(new PinnedGuests(config));
  const bool waived = config.insecure_skip_guest_verify;
  if (!config.kernel.empty()) {
    if (waived) {
      FORKD_ASSIGN_OR_RETURN(g->kernel_, ks::HashFile(config.kernel));
    } else {
      FORKD_ASSIGN_OR_RETURN(g->kernel_, ParseDigest("kernel", config.kernel_sha256));
      FORKD_ASSIGN_OR_RETURN(auto f, ks::PinnedFile::Open(config.kernel, g->kernel_));
      g->kernel_file_.emplace(std::move(f));
    }
  }
  g->initrd_ = ks::EmptySha256();
  if (!config.initrd.empty()) {
    if (waived) {
      FORKD_ASSIGN_OR_RETURN(g->initrd_, ks::HashFile(config.initrd));
    } else {
      FORKD_ASSIGN_OR_RETURN(g->initrd_, ParseDigest("initrd", config.initrd_sha256));
      FORKD_ASSIGN_OR_RETURN(auto f, ks::PinnedFile::Open(config.initrd, g->initrd_));
      g->initrd_file_.emplace(std::move(f));
    }
  }
  // The probe guest is pinned to what it is now: templates built and restored by this daemon
  // are the probe of this moment, and a probe replaced while it runs is refused like a kernel.
  auto probe = ks::HashFile(config.probe_guest);
  if (probe.ok()) {
    g->probe_ = *probe;
    auto f = ks::PinnedFile::Open(config.probe_guest, *probe);
    if (f.ok()) {
      g->probe_file_.emplace(std::move(*f));
    } else {
      g->probe_error_ = f.status();
    }
  } else {
    g->probe_error_ = Annotate(probe.status(), "probe guest " + config.probe_guest);
  }
  return g;
}

absl::Status PinnedGuests::VerifyForBuild(bool linux_guest) {
  std::lock_guard lock(mu_);
  if (!linux_guest) {
    if (!probe_file_) return probe_error_;
    return probe_file_->Verify();
  }
  if (config_.kernel.empty()) {
    return absl::FailedPreconditionError(
        "a Linux template needs forkd started with --kernel and --kernel-sha256");
  }
  if (config_.insecure_skip_guest_verify) return absl::OkStatus();
  FORKD_RETURN_IF_ERROR(kernel_file_->Verify());
  if (initrd_file_) FORKD_RETURN_IF_ERROR(initrd_file_->Verify());
  return absl::OkStatus();
}

absl::StatusOr<ks::GuestPin> PinnedGuests::ExpectedPin(const std::string& guest) const {
  ks::GuestPin pin;
  pin.agent_protocol = agent::kProtocolVersion;
  if (guest == "linux") {
    if (config_.kernel.empty()) {
      return absl::FailedPreconditionError(
          "a Linux template needs forkd started with --kernel and --kernel-sha256");
    }
    pin.kernel_sha256 = kernel_;
    pin.initrd_sha256 = initrd_;
    return pin;
  }
  if (guest == "probe") {
    if (!probe_file_) return probe_error_;
    pin.kernel_sha256 = probe_;
    pin.initrd_sha256 = ks::EmptySha256();
    return pin;
  }
  return absl::InvalidArgumentError("unknown guest kind '" + guest + "'");
}

std::string PinnedGuests::kernel_hex() const {
  return config_.kernel.empty() ? "" : ks::HexDigest(kernel_);
}
std::string PinnedGuests::initrd_hex() const { return ks::HexDigest(initrd_); }
std::string PinnedGuests::probe_hex() const { return probe_file_ ? ks::HexDigest(probe_) : ""; }

int PinnedGuests::hash_count() const {
  std::lock_guard lock(mu_);
  int n = 0;
  for (const auto* f : {&kernel_file_, &initrd_file_, &probe_file_}) {
    if (*f) n += (*f)->hash_count();
  }
  return n;
}

}  // namespace forkd::templates
