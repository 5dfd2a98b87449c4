// Test-only DNS message builders (ldns), shared by the unit tests, the fuzz
// seeds, the netns tests' upstream server and queries. Never linked into
// forkd or a benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "forkd/dns/ldns_ptr.h"

namespace forkd::dns::testing {

// A standard query (RD set) for `name`.
std::vector<uint8_t> MakeQuery(const std::string& name, ldns_rr_type type, uint16_t id,
                               bool edns = false);

struct ResponseSpec {
  std::vector<std::string> answer;      // records in presentation format
  std::vector<std::string> additional;  // "ns1.example.com. 60 IN A 10.0.0.1"
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  bool truncated = false;
};

// A response to `query` (its id and question) carrying `spec`. Aborts the
// test program on a malformed record string (a bug in the test).
std::vector<uint8_t> MakeResponse(const std::vector<uint8_t>& query, const ResponseSpec& spec);

// The answer section of `wire` in presentation format, one record per entry.
std::vector<std::string> AnswerRecords(const std::vector<uint8_t>& wire);

// The rcode of `wire` (-1 if it does not parse).
int Rcode(const std::vector<uint8_t>& wire);

}  // namespace forkd::dns::testing
