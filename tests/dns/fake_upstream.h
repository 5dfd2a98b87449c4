// The upstream DNS server of the DNS proxy tests: an ldns-built server the
// test scripts per name, so its answers can be rebinding attacks. It listens
// on UDP and TCP inside a namespace the test created (the "internet").
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/unique_fd.h"
#include "forkd/dns/test_messages.h"

namespace forkd::testing {

struct ScriptedAnswer {
  dns::testing::ResponseSpec udp;
  // Over TCP (after the UDP answer set TC); unset: the same as `udp`.
  std::optional<dns::testing::ResponseSpec> tcp;
  bool silent = false;  // never answers (timeout tests)
};

class FakeUpstream {
 public:
  static absl::StatusOr<std::unique_ptr<FakeUpstream>> Start(int netns, const std::string& address,
                                                             uint16_t port = 53);
  ~FakeUpstream();

  // `name` lowercase without trailing dot ("api.example.com").
  void Set(const std::string& name, ScriptedAnswer answer);
  // Queries received for `name` (UDP and TCP).
  int QueriesFor(const std::string& name) const;

 private:
  FakeUpstream() = default;
  void Serve();
  void AnswerUdp();
  void AnswerTcp();
  std::optional<std::vector<uint8_t>> Respond(const std::vector<uint8_t>& query, bool tcp);

  UniqueFd udp_, tcp_, stop_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::string, ScriptedAnswer> answers_;
  std::map<std::string, int> counts_;
};

}  // namespace forkd::testing
