// Guest memory backings without KVM: bounds, sparse save, and that a
// MAP_PRIVATE restore mapping never writes back into the snapshot file.
#include "forkd/vmm/vstate/memory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "forkd/vmm/vm_exit.h"
#include "forkd/vmm/vstate/vm.h"
#include "gtest/gtest.h"

namespace forkd::vmm {
namespace {

namespace fs = std::filesystem;

fs::path TempPath(const char* name) {
  return fs::temp_directory_path() / (std::string(name) + "." + std::to_string(getpid()));
}

TEST(GuestMemory, RejectsBadSizesAndOutOfRangeAccess) {
  EXPECT_FALSE(GuestMemory::Anonymous(0).ok());
  EXPECT_FALSE(GuestMemory::Anonymous(4097).ok());
  EXPECT_FALSE(GuestMemory::Anonymous(4ULL << 30).ok());  // overlaps the MMIO hole
  auto m = GuestMemory::Anonymous(1 << 20);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->Slice(0, 1 << 20).ok());
  EXPECT_FALSE(m->Slice(1, 1 << 20).ok());
  EXPECT_FALSE(m->Slice(~0ULL, 2).ok());  // wraps
  const uint8_t b[2] = {1, 2};
  EXPECT_FALSE(m->Write((1 << 20) - 1, b).ok());
}

TEST(GuestMemory, SaveIsSparseAndPrivateRestoreIsCopyOnWrite) {
  const fs::path path = TempPath("vmm_memory_test");
  {
    auto m = GuestMemory::Anonymous(16 << 20);
    ASSERT_TRUE(m.ok());
    const uint8_t hello[] = {'h', 'i'};
    ASSERT_TRUE(m->Write(8 << 20, hello).ok());
    ASSERT_TRUE(m->SaveToFile(path.string()).ok());
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 16 << 20);
  EXPECT_LE(st.st_blocks * 512, 64 * 1024) << "zero pages were written, not left as holes";

  auto a = GuestMemory::FilePrivate(path.string(), 16 << 20);
  auto b = GuestMemory::FilePrivate(path.string(), 16 << 20);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->host_base()[8 << 20], 'h');
  a->host_base()[8 << 20] = 'X';
  EXPECT_EQ(b->host_base()[8 << 20], 'h');  // siblings do not see each other's writes
  std::ifstream f(path, std::ios::binary);
  f.seekg(8 << 20);
  EXPECT_EQ(f.get(), 'h');  // nor does the snapshot file
  EXPECT_FALSE(GuestMemory::FilePrivate(path.string(), 32 << 20).ok());  // size mismatch
  fs::remove(path);
}

TEST(GuestMemory, SharedFileBackingWritesThrough) {
  const fs::path path = TempPath("vmm_memory_shared_test");
  {
    auto m = GuestMemory::FileShared(path.string(), 1 << 20);
    ASSERT_TRUE(m.ok());
    m->host_base()[4096] = 'S';
  }
  std::ifstream f(path, std::ios::binary);
  f.seekg(4096);
  EXPECT_EQ(f.get(), 'S');
  fs::remove(path);
}

TEST(Kvmclock, AdvancesByHostTscTime) {
  // 2.5 GHz: 2.5e9 cycles are one second.
  EXPECT_EQ(AdvancedKvmclock(1000, 0, 2500000000ULL, 2500000), 1000 + 1000000000ULL);
  EXPECT_EQ(AdvancedKvmclock(1000, 5000, 5000, 2500000), 1000u);  // no time passed
  EXPECT_EQ(AdvancedKvmclock(1000, 5000, 4000, 2500000), 1000u);  // never backwards
  EXPECT_EQ(AdvancedKvmclock(1000, 0, 2500000000ULL, 0), 1000u);  // unknown frequency
  // A day of cycles does not overflow the intermediate product.
  EXPECT_EQ(AdvancedKvmclock(0, 0, 2500000000ULL * 86400, 2500000), 86400ULL * 1000000000ULL);
}

TEST(ExitLatch, FirstReasonWins) {
  ExitLatch latch;
  EXPECT_FALSE(latch.is_set());
  EXPECT_FALSE(latch.WaitFor(std::chrono::milliseconds(1)));
  EXPECT_TRUE(latch.Set({ExitKind::kReset, "i8042"}));
  EXPECT_FALSE(latch.Set({ExitKind::kStopped, "host"}));
  EXPECT_EQ(latch.Get()->kind, ExitKind::kReset);
  EXPECT_EQ(latch.Get()->ToString(), "reset: i8042");
  EXPECT_EQ((VmExit{ExitKind::kShutdown, ""}).ToString(), "shutdown");
}

}  // namespace
}  // namespace forkd::vmm
