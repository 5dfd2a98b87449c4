// netfilter_bench: per-tap install through the library (one netlink batch)
// against `nft -f` of the identical ruleset text, alternating in one run, and
// add/remove cost with 1000 taps installed against an empty table. Runs in
// private network namespaces it creates; the machine's own is never touched.
//
// Last line: RESULT netfilter_install lib_p50_us=<n> nft_p50_us=<n> speedup=<x>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "netfilter/netns.h"
#include "netfilter/nft_text.h"
#include "netfilter/nftables.h"

extern char** environ;

namespace {

using forkd::netfilter::Cidr;
using forkd::netfilter::IpAddress;
using forkd::netfilter::Nftables;
using forkd::netfilter::TapPolicy;
using Clock = std::chrono::steady_clock;

constexpr int kInstallRounds = 200;
constexpr int kScaleTaps = 1000;
constexpr int kScaleRounds = 200;
constexpr uint32_t kScaleShards = 64;  // ~16 taps per shard at 1000 taps

void Die(const std::string& what, const absl::Status& s) {
  (void)std::fprintf(stderr, "netfilter_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// A realistic sandbox policy: 10 CIDR allow rules on 5 ports each, the
// resolver, a private exception, IPv6, both pin sets.
TapPolicy RealisticPolicy(const std::string& tap, int index) {
  TapPolicy p;
  p.tap = tap;
  p.guest_v4 = IpAddress::V4(10, 200, static_cast<uint8_t>(index / 64),
                             static_cast<uint8_t>(2 + index % 64 * 4));
  p.guest_v6 = *IpAddress::Parse("fd42::" + std::to_string(index + 2));
  p.resolvers = {*IpAddress::Parse("169.254.1.1")};
  p.private_exceptions = {*Cidr::Parse("10.1.0.0/16")};
  for (int i = 0; i < 10; ++i) {
    forkd::netfilter::AllowRule r;
    r.destination = *Cidr::Parse("203.0." + std::to_string(i) + ".0/24");
    r.protocol = forkd::netfilter::Protocol::kTcp;
    r.ports = {{22, 22}, {80, 80}, {443, 443}, {5432, 5432}, {8000, 8080}};
    p.allow.push_back(r);
  }
  return p;
}

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double P50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double Time(F&& f) {
  const auto start = Clock::now();
  f();
  return Micros(Clock::now() - start);
}

void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(what, s);
}

int RunNft(const std::string& file) {
  pid_t pid = 0;
  const char* argv[] = {"nft", "-f", file.c_str(), nullptr};
  if (posix_spawnp(&pid, "nft", nullptr, nullptr, const_cast<char**>(argv), environ) != 0)
    return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Nftables OpenIn(int netns, uint32_t shards) {
  auto nft = Nftables::Open(netns, shards);
  if (!nft.ok()) Die("open nftables", nft.status());
  Check(nft->EnsureSkeleton(
            {.uplink = "eth0", .guest_subnets = {*Cidr::Parse("10.200.0.0/16")}, .shards = shards}),
        "ensure skeleton");
  return std::move(*nft);
}

}  // namespace

int main(int argc, char** argv) {
  const bool show = argc == 2 && std::string(argv[1]) == "--show";
  if (argc > 1 && !show) {
    std::printf(
        "usage: %s [--show]\n\n--show: print one tap's `nft -f` text and its batch, then "
        "exit.\n\nBenchmarks the nftables datapath in private network namespaces (needs "
        "root and the nft binary for the baseline).\n",
        argv[0]);
    return argc == 2 && std::string(argv[1]) == "--help" ? 0 : 2;
  }
  if (geteuid() != 0) {
    (void)std::fprintf(stderr, "netfilter_bench: needs root (network namespaces, nftables)\n");
    return 77;
  }
  // Everything below, including the nft child processes, runs in this
  // process's private namespace.
  if (unshare(CLONE_NEWNET) != 0) {
    std::perror("netfilter_bench: unshare(CLONE_NEWNET)");
    return 1;
  }

  // --- install: library vs nft -f, alternating ---
  Nftables nft = OpenIn(-1, 1);  // a pod namespace: one tap, one table
  const TapPolicy policy = RealisticPolicy("bench0", 0);
  const std::string text = forkd::netfilter::RenderAddTap(
      forkd::netfilter::BuildTapRuleset(policy, nft.TableFor("bench0")));
  char path[] = "/tmp/netfilter_bench.XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    std::perror("mkstemp");
    return 1;
  }
  close(fd);
  std::ofstream(path) << text;
  if (show) {
    std::fputs(text.c_str(), stdout);
    unlink(path);
    return 0;
  }
  std::vector<double> lib_us;
  std::vector<double> nft_us;
  // Where a library install's time goes: the model, the encoding into one
  // batch, and the kernel's commit (sendmsg), measured on the same rounds.
  std::vector<double> model_us;
  std::vector<double> encode_us;
  std::vector<double> kernel_us;
  size_t messages = 0;
  size_t bytes = 0;
  for (int i = 0; i < kInstallRounds; ++i) {
    {
      forkd::netfilter::TapRuleset rs;
      model_us.push_back(Time([&] {
        Check(forkd::netfilter::Validate(policy), "validate");
        rs = forkd::netfilter::BuildTapRuleset(policy, nft.TableFor("bench0"));
      }));
      forkd::netfilter::Batch batch = nft.NewBatch();
      encode_us.push_back(Time([&] { nft.AppendAddTap(batch, rs); }));
      messages = batch.message_count();
      bytes = batch.Finish().size();
      kernel_us.push_back(Time([&] { Check(nft.Commit(batch, "install"), "phased install"); }));
      Check(nft.RemoveTap("bench0"), "remove after phased install");
    }
    lib_us.push_back(Time([&] { Check(nft.AddTap(policy), "library install"); }));
    Check(nft.RemoveTap("bench0"), "remove after library install");
    int rc = 0;
    nft_us.push_back(Time([&] { rc = RunNft(path); }));
    if (rc != 0) {
      (void)std::fprintf(stderr, "netfilter_bench: nft -f %s exited %d\n", path, rc);
      unlink(path);
      return 1;
    }
    Check(nft.RemoveTap("bench0"), "remove after nft install");
  }
  unlink(path);
  const size_t rules = std::count(text.begin(), text.end(), '\n');

  // --- scale: 1000 taps installed vs none, alternating between two namespaces ---
  auto empty_ns = forkd::netfilter::CreateNetns();
  auto full_ns = forkd::netfilter::CreateNetns();
  if (!empty_ns.ok() || !full_ns.ok())
    Die("create namespaces", empty_ns.ok() ? full_ns.status() : empty_ns.status());
  // A namespace holding many taps spreads them over shard tables (ruleset.h).
  Nftables empty = OpenIn(empty_ns->get(), kScaleShards);
  Nftables full = OpenIn(full_ns->get(), kScaleShards);
  for (int i = 0; i < kScaleTaps; ++i) {
    Check(full.AddTap(RealisticPolicy("s" + std::to_string(i), i)),
          "install tap " + std::to_string(i));
  }
  const TapPolicy extra = RealisticPolicy("extra", kScaleTaps);
  std::vector<double> add_us;
  std::vector<double> remove_us;
  std::vector<double> add1_us;
  for (int i = 0; i < kScaleRounds; ++i) {
    add1_us.push_back(Time([&] { Check(empty.AddTap(extra), "add to empty"); }));
    Check(empty.RemoveTap("extra"), "remove from empty");
    add_us.push_back(Time([&] { Check(full.AddTap(extra), "add at scale"); }));
    remove_us.push_back(Time([&] { Check(full.RemoveTap("extra"), "remove at scale"); }));
  }
  auto taps = full.ListTaps();
  if (!taps.ok() || taps->size() != static_cast<size_t>(kScaleTaps)) {
    (void)std::fprintf(stderr, "netfilter_bench: expected %d taps installed\n", kScaleTaps);
    return 1;
  }

  const double lib = P50(lib_us);
  const double base = P50(nft_us);
  const double add = P50(add_us);
  const double add1 = P50(add1_us);
  std::printf("policy: %zu nft commands per tap (%zu allow rules), %d alternating rounds\n", rules,
              policy.allow.size(), kInstallRounds);
  std::printf(
      "target lib_p50 < 500 us: %s; speedup >= 40x: %s; add at %d taps within 2x of add1: %s\n",
      lib < 500 ? "met" : "NOT met", base / lib >= 40 ? "met" : "NOT met", kScaleTaps,
      add <= 2 * add1 ? "met" : "NOT met");
  std::printf(
      "install phases p50: model %.0f us, encode %.0f us, commit %.0f us; %zu messages, %zu "
      "bytes\n",
      P50(model_us), P50(encode_us), P50(kernel_us), messages, bytes);
  std::printf("scale: %u shard tables in both namespaces\n", kScaleShards);
  std::printf(
      "RESULT netfilter_scale taps=%d add_p50_us=%.0f remove_p50_us=%.0f add1_p50_us=%.0f\n",
      kScaleTaps, add, P50(remove_us), add1);
  std::printf("RESULT netfilter_install lib_p50_us=%.0f nft_p50_us=%.0f speedup=%.1f\n", lib, base,
              base / lib);
  return 0;
}
