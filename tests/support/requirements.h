// Declares what a test binary needs from the machine. The shared test main
// checks every declared requirement before running any test; when one is
// missing it prints "SKIP: <reason>" and exits 77, which ctest reports as a
// skipped test (never as a pass).
//
//   FORKD_TEST_REQUIRES(forkd::testing::Requirement::kRootNetns);
#pragma once

#include <optional>
#include <string>

namespace forkd::testing {

enum class Requirement {
  kRootNetns,  // root with CAP_NET_ADMIN, able to create network namespaces
  kKvm,        // /dev/kvm opens read-write and answers KVM_GET_API_VERSION
  kHwVirt,     // hardware virtualization (vmx/svm), not PVM: Linux guests run at speed
  // FORKD_LINUX_KERNEL names a readable guest kernel (bzImage or vmlinux)
  // built as docs/guest-kernel.md describes.
  kLinuxGuestKernel,
  // FORKD_LINUX_KERNEL_VMGENID names a readable guest kernel with Linux's
  // vmgenid driver (CONFIG_VMGENID=y; the emulated-SVM tier sets it to
  // Debian's generic amd64 kernel, docs/guest-kernel.md).
  kVmGenIdGuestKernel,
};

// Why `r` is not met on this machine, or nullopt when it is.
std::optional<std::string> Unmet(Requirement r);

int RegisterRequirement(Requirement r);

}  // namespace forkd::testing

// May appear several times in one file; requirements are checked in order.
#define FORKD_TEST_REQUIRES_CAT2(a, b) a##b
#define FORKD_TEST_REQUIRES_CAT(a, b) FORKD_TEST_REQUIRES_CAT2(a, b)
#define FORKD_TEST_REQUIRES(r)                                                        \
  static const int FORKD_TEST_REQUIRES_CAT(forkd_requirement_registered_, __LINE__) = \
      ::forkd::testing::RegisterRequirement(r)
