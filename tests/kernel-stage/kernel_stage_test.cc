// The kernel-stage binary end to end against servers this test starts on 127.0.0.1 (plain HTTP
// and HTTPS with a CA the test creates), local copies and file:// URLs. Every refusal has a
// positive control. No traffic leaves loopback.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernel-stage/digest.h"
#include "tests/support/temp_dir.h"

namespace forkd::kernel_stage {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadAll(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void WriteAll(const fs::path& p, const std::string& content) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
}

std::string Python() { return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3"; }

struct RunResult {
  int code = -1;
  std::string out, err;
};

// Runs `argv` (argv[0] searched in PATH) with stdout/stderr to files in `scratch`.
RunResult Exec(const std::vector<std::string>& args, const fs::path& scratch) {
  const fs::path out = scratch / "stdout", err = scratch / "stderr";
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& s : copy) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (o < 0 || e < 0 || ::dup2(o, 1) < 0 || ::dup2(e, 2) < 0) _exit(127);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  RunResult r;
  int status = 0;
  if (pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status)) {
    r.code = WEXITSTATUS(status);
  }
  r.out = ReadAll(out);
  r.err = ReadAll(err);
  return r;
}

// python3 test_server.py, killed and reaped on destruction.
class Server {
 public:
  Server(const fs::path& dir, const std::string& cert = "", const std::string& key = "") {
    std::vector<std::string> args = {Python(), KERNEL_STAGE_TEST_SERVER, "--dir", dir.string()};
    if (!cert.empty()) args.insert(args.end(), {"--cert", cert, "--key", key});
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    UniqueFd rd(p[0]), wr(p[1]);
    pid_ = ::fork();
    if (pid_ == 0) {
      if (::dup2(wr.get(), 1) < 0) _exit(127);
      ::execvp(argv[0], argv.data());
      _exit(127);
    }
    wr.reset();
    std::string line;
    char c;
    // Hang guard only (not a timing assertion): a server that never says PORT fails the test.
    pollfd pfd{rd.get(), POLLIN, 0};
    while (line.find('\n') == std::string::npos && ::poll(&pfd, 1, 60000) == 1 &&
           ::read(rd.get(), &c, 1) == 1) {
      line.push_back(c);
    }
    if (line.rfind("PORT ", 0) == 0) port_ = std::atoi(line.c_str() + 5);
  }
  ~Server() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

class KernelStageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    fs::create_directories(serve_);
    fs::create_directories(stage_);
    fs::create_directories(scratch_);
    std::mt19937_64 rng(42);
    kernel_.resize(3 * 1024 * 1024 + 777);
    for (char& c : kernel_) c = static_cast<char>(rng());
    WriteAll(serve_ / "vmlinux", kernel_);
    digest_ = Sha256({reinterpret_cast<const uint8_t*>(kernel_.data()), kernel_.size()});
  }

  RunResult Stage(const std::string& source, const std::string& sha256,
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {
        KERNEL_STAGE_BINARY, "--source", source, "--sha256", sha256, "--dest", dest_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return Exec(args, scratch_);
  }

  // Creates a CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
  void MakePki(const fs::path& dir) {
    fs::create_directories(dir);
    const std::string d = dir.string();
    const std::string script =
        "set -e; cd '" + d +
        "'; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.pem -subj /CN=forkd-test-ca -days 2 2>/dev/null; "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null; "
        "printf 'subjectAltName=IP:127.0.0.1\\n' > ext; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile ext 2>/dev/null";
    ASSERT_EQ(std::system(script.c_str()), 0) << script;
  }

  // No ".vmlinux.stage.*" temp file left in the staging directory.
  void ExpectNoTempFiles() {
    for (const auto& e : fs::directory_iterator(stage_)) {
      EXPECT_EQ(e.path().filename().string().find(".stage."), std::string::npos) << e.path();
    }
  }

  std::vector<fs::path> Quarantined() {
    std::vector<fs::path> q;
    for (const auto& e : fs::directory_iterator(stage_)) {
      if (e.path().filename().string().find(".quarantine.") != std::string::npos) {
        q.push_back(e.path());
      }
    }
    return q;
  }

  std::string Hex() const { return HexDigest(digest_); }
  std::string WrongHex() const {
    Sha256Digest d = digest_;
    d[31] ^= 1;
    return HexDigest(d);
  }

  forkd::testing::TempDir tmp_{"kernel_stage_test"};
  fs::path serve_ = tmp_.path() / "serve", stage_ = tmp_.path() / "stage",
           scratch_ = tmp_.path() / "scratch";
  fs::path dest_ = stage_ / "vmlinux";
  std::string kernel_;
  Sha256Digest digest_{};
};

TEST_F(KernelStageTest, FreshHttpsDownloadThenCachedVerifyThenTamperedCacheQuarantined) {
  MakePki(tmp_.path() / "pki");
  const fs::path pki = tmp_.path() / "pki";
  Server https(serve_, (pki / "server.pem").string(), (pki / "server.key").string());
  ASSERT_NE(https.port(), 0);
  const std::string url = "https://127.0.0.1:" + std::to_string(https.port()) + "/file/vmlinux";
  const std::vector<std::string> ca = {"--ca", (pki / "ca.pem").string()};

  // Fresh download.
  RunResult fresh = Stage(url, Hex(), ca);
  ASSERT_EQ(fresh.code, 0) << fresh.err;
  EXPECT_THAT(fresh.out, HasSubstr("staged " + dest_.string() + " " + Hex()));
  EXPECT_EQ(ReadAll(dest_), kernel_);
  EXPECT_EQ(ReadAll(dest_.string() + ".sha256"), Hex() + "  vmlinux\n");
  ExpectNoTempFiles();

  // Cached: verified, not fetched (the URL now 404s, so a fetch would fail).
  const std::string gone = "https://127.0.0.1:" + std::to_string(https.port()) + "/file/absent";
  RunResult cached = Stage(gone, Hex(), ca);
  ASSERT_EQ(cached.code, 0) << cached.err;
  EXPECT_THAT(cached.out, HasSubstr("verified " + dest_.string()));

  // Tampered cache: one byte changed in place.
  std::string tampered = kernel_;
  tampered[1000] ^= 0x55;
  WriteAll(dest_, tampered);
  const std::string actual =
      HexDigest(Sha256({reinterpret_cast<const uint8_t*>(tampered.data()), tampered.size()}));
  RunResult bad = Stage(url, Hex(), ca);
  EXPECT_EQ(bad.code, 4) << bad.err;
  EXPECT_THAT(bad.err, AllOf(HasSubstr("cached-mismatch"), HasSubstr("expected " + Hex()),
                             HasSubstr("actual " + actual)));
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << "one line: " << bad.err;
  EXPECT_FALSE(fs::exists(dest_));
  EXPECT_FALSE(fs::exists(dest_.string() + ".sha256"));
  const auto q = Quarantined();
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].string(), dest_.string() + ".quarantine." + actual);
  EXPECT_EQ(ReadAll(q[0]), tampered);

  // And the next run fetches a good copy again.
  RunResult again = Stage(url, Hex(), ca);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(ReadAll(dest_), kernel_);
}

TEST_F(KernelStageTest, WrongDigestIsRefusedAndQuarantined) {
  Server http(serve_);
  ASSERT_NE(http.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(http.port()) + "/file/vmlinux";
  RunResult bad = Stage(url, WrongHex(), {"--allow-http"});
  EXPECT_EQ(bad.code, 3) << bad.err;
  EXPECT_THAT(bad.err, AllOf(HasSubstr("digest-mismatch"), HasSubstr("expected " + WrongHex()),
                             HasSubstr("actual " + Hex())));
  EXPECT_FALSE(fs::exists(dest_));
  ASSERT_EQ(Quarantined().size(), 1u);
  ExpectNoTempFiles();
  // Positive control: the right digest over the same server.
  RunResult good = Stage(url, Hex(), {"--allow-http"});
  EXPECT_EQ(good.code, 0) << good.err;
  EXPECT_EQ(ReadAll(dest_), kernel_);
}

TEST_F(KernelStageTest, PlainHttpNeedsAllowHttp) {
  Server http(serve_);
  ASSERT_NE(http.port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(http.port()) + "/file/vmlinux";
  RunResult refused = Stage(url, Hex());
  EXPECT_EQ(refused.code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("--allow-http"));
  EXPECT_FALSE(fs::exists(dest_));
  EXPECT_EQ(Stage(url, Hex(), {"--allow-http"}).code, 0);
}

TEST_F(KernelStageTest, TruncatedDownloadIsRefused) {
  Server http(serve_);
  ASSERT_NE(http.port(), 0);
  const std::string base = "http://127.0.0.1:" + std::to_string(http.port());
  RunResult cut = Stage(base + "/truncated/vmlinux", Hex(), {"--allow-http"});
  EXPECT_EQ(cut.code, 8) << cut.err;
  EXPECT_THAT(cut.err, HasSubstr("truncated"));
  EXPECT_FALSE(fs::exists(dest_));
  EXPECT_TRUE(Quarantined().empty());
  ExpectNoTempFiles();
  EXPECT_EQ(Stage(base + "/file/vmlinux", Hex(), {"--allow-http"}).code, 0);  // control
}

TEST_F(KernelStageTest, NotFoundRedirectsAndSizeLimit) {
  Server http(serve_);
  ASSERT_NE(http.port(), 0);
  const std::string base = "http://127.0.0.1:" + std::to_string(http.port());
  RunResult missing = Stage(base + "/file/nothing", Hex(), {"--allow-http"});
  EXPECT_EQ(missing.code, 7) << missing.err;
  EXPECT_THAT(missing.err, HasSubstr("HTTP status 404"));

  RunResult loop =
      Stage(base + "/redirect/4/vmlinux", Hex(), {"--allow-http", "--max-redirects", "3"});
  EXPECT_EQ(loop.code, 11) << loop.err;

  RunResult big = Stage(base + "/file/vmlinux", Hex(), {"--allow-http", "--max-bytes", "1000000"});
  EXPECT_EQ(big.code, 9) << big.err;
  EXPECT_FALSE(fs::exists(dest_));
  ExpectNoTempFiles();

  // Controls: redirects within the limit, and a limit the file fits.
  RunResult ok = Stage(base + "/redirect/3/vmlinux", Hex(),
                       {"--allow-http", "--max-redirects", "3", "--max-bytes", "4000000"});
  EXPECT_EQ(ok.code, 0) << ok.err;
}

TEST_F(KernelStageTest, ServerUnreachable) {
  // A port that is bound but not listening: the connection is refused, on loopback only.
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  const std::string url = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/vmlinux";
  RunResult r = Stage(url, Hex());
  EXPECT_EQ(r.code, 5) << r.err;
  EXPECT_THAT(r.err, HasSubstr("unreachable"));
  EXPECT_FALSE(fs::exists(dest_));
  ExpectNoTempFiles();
}

TEST_F(KernelStageTest, TlsWithAnUnknownCaIsRefused) {
  MakePki(tmp_.path() / "pki");
  MakePki(tmp_.path() / "other");  // a CA that did not sign the server
  const fs::path pki = tmp_.path() / "pki";
  Server https(serve_, (pki / "server.pem").string(), (pki / "server.key").string());
  ASSERT_NE(https.port(), 0);
  const std::string url = "https://127.0.0.1:" + std::to_string(https.port()) + "/file/vmlinux";
  RunResult r = Stage(url, Hex(), {"--ca", (tmp_.path() / "other" / "ca.pem").string()});
  EXPECT_EQ(r.code, 6) << r.err;
  EXPECT_THAT(r.err, HasSubstr("tls"));
  EXPECT_FALSE(fs::exists(dest_));
  ExpectNoTempFiles();
  // Without --ca the system store does not know the test CA either.
  EXPECT_EQ(Stage(url, Hex()).code, 6);
  // Control: the CA that signed it.
  EXPECT_EQ(Stage(url, Hex(), {"--ca", (pki / "ca.pem").string()}).code, 0);
}

TEST_F(KernelStageTest, DestinationDirectoryMissing) {
  dest_ = stage_ / "no-such-dir" / "vmlinux";
  RunResult r = Stage((serve_ / "vmlinux").string(), Hex());
  EXPECT_EQ(r.code, 13) << r.err;
  EXPECT_THAT(r.err, HasSubstr("does not exist"));
  EXPECT_FALSE(fs::exists(stage_ / "no-such-dir"));
}

TEST_F(KernelStageTest, LocalCopyAndFileUrl) {
  RunResult copy = Stage((serve_ / "vmlinux").string(), Hex());
  ASSERT_EQ(copy.code, 0) << copy.err;
  EXPECT_EQ(ReadAll(dest_), kernel_);
  fs::remove(dest_);
  RunResult url = Stage("file://" + (serve_ / "vmlinux").string(), Hex());
  ASSERT_EQ(url.code, 0) << url.err;
  EXPECT_EQ(ReadAll(dest_), kernel_);
  fs::remove(dest_);
  RunResult missing = Stage((serve_ / "absent").string(), Hex());
  EXPECT_EQ(missing.code, 12) << missing.err;
  RunResult missing_url = Stage("file://" + (serve_ / "absent").string(), Hex());
  EXPECT_EQ(missing_url.code, 12) << missing_url.err;
  EXPECT_FALSE(fs::exists(dest_));
  ExpectNoTempFiles();
}

TEST_F(KernelStageTest, DigestIsMandatoryAndStrict) {
  const std::string src = (serve_ / "vmlinux").string();
  RunResult none = Exec({KERNEL_STAGE_BINARY, "--source", src, "--dest", dest_.string()}, scratch_);
  EXPECT_EQ(none.code, 2);
  EXPECT_THAT(none.err, HasSubstr("--sha256"));
  for (const std::string& bad :
       {Hex().substr(1), Hex() + "0", "sha256:" + Hex(), Hex().substr(0, 63) + "z"}) {
    RunResult r = Stage(src, bad);
    EXPECT_EQ(r.code, 2) << bad;
    EXPECT_THAT(r.err, HasSubstr("64 hex characters")) << bad;
  }
  EXPECT_FALSE(fs::exists(dest_));
  RunResult help = Exec({KERNEL_STAGE_BINARY, "--help"}, scratch_);
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out,
              AllOf(HasSubstr("Exit codes"), HasSubstr("14  disk-full"), Not(HasSubstr("TODO"))));
}

}  // namespace
}  // namespace forkd::kernel_stage
