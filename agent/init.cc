#include "agent/init.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"

namespace forkd::agent {

std::vector<absl::Status> MountEarlyFilesystems() {
  struct Mount {
    const char* source;
    const char* target;
    const char* type;
    unsigned long flags;
    const char* data;
  };
  static constexpr Mount kMounts[] = {
      {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
      {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr},
      {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
      {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666"},
      {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
      {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
      {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
  };
  std::vector<absl::Status> errors;
  for (const Mount& m : kMounts) {
    if (::mkdir(m.target, 0755) != 0 && errno != EEXIST) {
      errors.push_back(ErrnoStatus(errno, absl::StrCat("mkdir ", m.target)));
      continue;
    }
    if (::mount(m.source, m.target, m.type, m.flags, m.data) != 0 && errno != EBUSY) {
      errors.push_back(ErrnoStatus(errno, absl::StrCat("mount ", m.type, " on ", m.target)));
    }
  }
  return errors;
}

void RunAsInit(int (*serve)(void*), void* arg) {
  for (;;) {
    const pid_t child = ::fork();
    if (child == 0) std::_Exit(serve(arg));
    if (child < 0) {
      (void)std::fprintf(stderr, "forkd-agent init: fork: %s\n",
                         std::string(ToStd(ErrnoStatus(errno, "fork").message())).c_str());
      ::sleep(1);
      continue;
    }
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, 0);
      if (pid < 0) {
        if (errno == EINTR) continue;
        break;  // ECHILD: nothing left to wait for; restart the server
      }
      if (pid != child) continue;  // an orphan, now reaped
      (void)std::fprintf(stderr, "forkd-agent init: server exited (status 0x%x); restarting\n",
                         static_cast<unsigned>(status));
      break;
    }
    // Never spin if the server dies at once every time.
    ::sleep(1);
  }
}

}  // namespace forkd::agent
