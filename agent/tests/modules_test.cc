// The module list and its loader, with a recording loader (nothing is loaded
// into the host kernel).
#include "agent/modules.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace forkd::agent {
namespace {

namespace fs = std::filesystem;

class ModulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("forkd_modules_test." + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& text) {
    const fs::path p = dir_ / "forkd.load";
    std::ofstream(p) << text;
    return p.string();
  }
  ModuleLoader Recorder(std::vector<std::string>* seen, const std::string& failing = "") {
    return [seen, failing](const std::string& path) {
      seen->push_back(path);
      if (path == failing) return absl::NotFoundError("open " + path);
      return absl::OkStatus();
    };
  }
  fs::path dir_;
};

TEST(ParseModuleListTest, KeepsOrderSkipsBlanksAndComments) {
  auto paths = ParseModuleList("# deps first\n/lib/a.ko\n\n  /lib/b.ko  \n/lib/c.ko");
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(*paths, (std::vector<std::string>{"/lib/a.ko", "/lib/b.ko", "/lib/c.ko"}));
}

TEST(ParseModuleListTest, RefusesRelativePathNamingTheLine) {
  auto paths = ParseModuleList("/lib/a.ko\nlib/b.ko\n");
  ASSERT_FALSE(paths.ok());
  EXPECT_NE(paths.status().message().find("line 2"), absl::string_view::npos) << paths.status();
}

TEST_F(ModulesTest, MissingListLoadsNothingAndIsNoError) {
  std::vector<std::string> seen;
  int loaded = -1;
  auto errors = LoadModules((dir_ / "absent").string(), Recorder(&seen), &loaded);
  EXPECT_TRUE(errors.empty());
  EXPECT_TRUE(seen.empty());
  EXPECT_EQ(loaded, 0);
}

TEST_F(ModulesTest, LoadsInListOrder) {
  std::vector<std::string> seen;
  int loaded = 0;
  auto errors = LoadModules(Write("/m/virtio.ko\n/m/virtio_mmio.ko\n"), Recorder(&seen), &loaded);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(seen, (std::vector<std::string>{"/m/virtio.ko", "/m/virtio_mmio.ko"}));
  EXPECT_EQ(loaded, 2);
}

TEST_F(ModulesTest, ReportsEachFailureAndStillTriesTheRest) {
  std::vector<std::string> seen;
  int loaded = 0;
  auto errors =
      LoadModules(Write("/m/a.ko\n/m/b.ko\n/m/c.ko\n"), Recorder(&seen, "/m/b.ko"), &loaded);
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].message().find("/m/b.ko"), absl::string_view::npos);
  EXPECT_EQ(seen.size(), 3U);
  EXPECT_EQ(loaded, 2);
}

TEST_F(ModulesTest, MalformedListIsAnErrorNamingTheFile) {
  std::vector<std::string> seen;
  auto errors = LoadModules(Write("relative.ko\n"), Recorder(&seen));
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_NE(errors[0].message().find("forkd.load"), absl::string_view::npos) << errors[0];
  EXPECT_TRUE(seen.empty());
}

TEST_F(ModulesTest, FinitLoaderNamesAMissingFile) {
  // Fails at open(2), before any module syscall.
  absl::Status s = FinitModuleLoader()((dir_ / "absent.ko").string());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("absent.ko"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("ENOENT"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace forkd::agent
