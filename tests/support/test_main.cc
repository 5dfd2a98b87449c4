#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/support/requirements.h"

namespace forkd::testing {
namespace {

std::vector<Requirement>& Registered() {
  static std::vector<Requirement> list;
  return list;
}

bool CanCreateNetns() {
  // Try on a throwaway thread so this process's own namespace is never changed.
  bool ok = false;
  std::thread([&ok] { ok = ::unshare(CLONE_NEWNET) == 0; }).join();
  return ok;
}

std::optional<std::string> HwVirtUnmet() {
  struct stat st {};
  if (::stat("/sys/module/kvm_pvm", &st) == 0) {
    return "host /dev/kvm is PVM (software virtualization): a stock Linux guest needs ~12 min to "
           "reach /init and its user space cannot make system calls (docs/host-facts.md)";
  }
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::stringstream all;
  all << cpuinfo.rdbuf();
  const std::string text = all.str();
  if (text.find(" vmx") == std::string::npos && text.find(" svm") == std::string::npos) {
    return "CPU has no hardware virtualization (no vmx/svm flag in /proc/cpuinfo)";
  }
  return std::nullopt;
}

}  // namespace

int RegisterRequirement(Requirement r) {
  Registered().push_back(r);
  return 0;
}

std::optional<std::string> Unmet(Requirement r) {
  switch (r) {
    case Requirement::kRootNetns:
      if (::geteuid() != 0) return std::string("needs root (network namespaces, nftables)");
      if (!CanCreateNetns())
        return std::string("cannot create a network namespace (unshare CLONE_NEWNET failed)");
      return std::nullopt;
    case Requirement::kKvm: {
      UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
      if (!kvm) return std::string("/dev/kvm is missing or not accessible read-write");
      if (::ioctl(kvm.get(), KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        return std::string("/dev/kvm answers an unexpected KVM_GET_API_VERSION");
      }
      return std::nullopt;
    }
    case Requirement::kHwVirt: {
      if (auto kvm = Unmet(Requirement::kKvm)) return kvm;
      return HwVirtUnmet();
    }
    case Requirement::kLinuxGuestKernel: {
      const char* kernel = std::getenv("FORKD_LINUX_KERNEL");
      if (kernel == nullptr || *kernel == '\0') {
        return std::string(
            "set FORKD_LINUX_KERNEL to a guest kernel (bzImage or vmlinux) with virtio-mmio "
            "cmdline devices, vsock and virtio-rng built in (docs/guest-kernel.md)");
      }
      if (::access(kernel, R_OK) != 0) {
        return "FORKD_LINUX_KERNEL=" + std::string(kernel) + " is not a readable file";
      }
      return std::nullopt;
    }
    case Requirement::kVmGenIdGuestKernel: {
      const char* kernel = std::getenv("FORKD_LINUX_KERNEL_VMGENID");
      if (kernel == nullptr || *kernel == '\0') {
        return std::string(
            "set FORKD_LINUX_KERNEL_VMGENID (and FORKD_LINUX_INITRD_VMGENID) to a guest kernel "
            "with CONFIG_VMGENID=y (the emulated-SVM tier does: docs/guest-kernel.md)");
      }
      if (::access(kernel, R_OK) != 0) {
        return "FORKD_LINUX_KERNEL_VMGENID=" + std::string(kernel) + " is not a readable file";
      }
      return std::nullopt;
    }
  }
  return std::string("unknown requirement");
}

}  // namespace forkd::testing

int main(int argc, char** argv) {
  for (auto r : forkd::testing::Registered()) {
    if (auto why = forkd::testing::Unmet(r)) {
      std::printf("SKIP: %s\n", why->c_str());
      return 77;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
