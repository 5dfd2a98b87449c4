#include "bench/probe_snapshot.h"

#include <cstdio>
#include <cstdlib>

#include "tests/vmm/probe_harness.h"
#include "tests/vmm/vmm_process.h"

namespace forkd::vmm::bench {

void Die(const std::string& what) {
  (void)std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, what.c_str());
  std::exit(1);
}

std::filesystem::path MakeProbeSnapshot(const std::filesystem::path& dir,
                                        const std::string& cmdline, const std::string& ready_line) {
  std::filesystem::path snap = dir / "snap";  // not const: returned by move
  const std::string src_sock = (dir / "src.sock").string();
  auto src =
      testing::VmmProcess::Spawn({"--kernel", testing::ProbeGuestPath(), "--cmdline", cmdline,
                                  "--mem-mib", "64", "--vsock-cid", "3", "--vsock-uds", src_sock});
  if (!src.ok()) Die("spawn source: " + src.status().ToString());
  if ((*src)->ReadLine() != "READY") Die("source did not report READY");
  if (!(*src)->serial().WaitFor(ready_line).has_value()) {
    Die("probe guest never printed '" + ready_line + "': " + (*src)->serial().text());
  }
  if (absl::Status saved = (*src)->SnapshotAndStop(snap.string()); !saved.ok()) {
    Die("snapshot: " + saved.ToString());
  }
  return snap;
}

}  // namespace forkd::vmm::bench
