// Writes the answer filter fuzzer's seed responses into a directory (the
// in-tree corpus, fuzz_corpus/, was made with it):
//   build/forkd/dns/dns_fuzz_seeds forkd/dns/fuzz_corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "forkd/dns/test_messages.h"

int main(int argc, char** argv) {
  using namespace forkd::dns::testing;
  if (argc != 2) {
    (void)std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path out = argv[1];
  std::filesystem::create_directories(out);
  const std::string n = "www.example.com.";
  // Ids pick the fuzz entry's question (answer_filter_fuzz.cc): low bits 0 = A, 3 = AAAA + EDNS.
  const auto a = MakeQuery("www.example.com", LDNS_RR_TYPE_A, 0x0100);
  const auto aaaa = MakeQuery("www.example.com", LDNS_RR_TYPE_AAAA, 0x0203, true);
  auto put = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    std::ofstream f(out / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  };
  put("a_public", MakeResponse(a, {.answer = {n + " 60 IN A 203.0.113.10"}}));
  put("a_private_and_public",
      MakeResponse(a, {.answer = {n + " 60 IN A 10.0.0.5", n + " 5 IN A 198.51.100.1"}}));
  put("a_cname_chain", MakeResponse(a, {.answer = {n + " 60 IN CNAME edge.cdn.test.",
                                                   "edge.cdn.test. 60 IN CNAME e1.cdn.test.",
                                                   "e1.cdn.test. 20 IN A 198.51.100.7",
                                                   "e1.cdn.test. 20 IN A 169.254.169.254"}}));
  put("a_cname_loop",
      MakeResponse(a, {.answer = {n + " 60 IN CNAME b.test.", "b.test. 60 IN CNAME " + n}}));
  put("a_glue", MakeResponse(a, {.answer = {n + " 60 IN A 203.0.113.10"},
                                 .additional = {"ns1.example.com. 60 IN A 10.0.0.1",
                                                "ns1.example.com. 60 IN AAAA fd00::1"}}));
  put("a_nxdomain", MakeResponse(a, {.rcode = LDNS_RCODE_NXDOMAIN}));
  put("a_truncated", MakeResponse(a, {.truncated = true}));
  put("a_servfail", MakeResponse(a, {.rcode = LDNS_RCODE_SERVFAIL}));
  put("aaaa_rebinds",
      MakeResponse(
          aaaa,
          {.answer = {n + " 60 IN AAAA 64:ff9b::a9fe:a9fe", n + " 60 IN AAAA 2002:a9fe:a9fe::1",
                      n + " 60 IN AAAA ::ffff:169.254.169.254", n + " 60 IN AAAA fd00:ec2::254",
                      n + " 60 IN AAAA fe80::1", n + " 60 IN AAAA 64:ff9b::808:808",
                      n + " 86400 IN AAAA 2001:db8::10"}}));
  std::vector<std::string> many;
  for (int i = 0; i < 50; ++i) many.push_back(n + " 60 IN A 198.51.100." + std::to_string(i));
  put("a_many", MakeResponse(a, {.answer = many}));
  put("a_mixed_types",
      MakeResponse(a,
                   {.answer = {n + " 60 IN AAAA 2001:db8::1", n + " 60 IN TXT \"x\"",
                               n + " 60 IN MX 10 mail.example.com.", n + " 60 IN A 203.0.113.1"}}));
  return 0;
}
