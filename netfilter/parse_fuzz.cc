// libFuzzer target for the text parsers policies are built from (addresses,
// prefixes, interface addresses, MACs). Built with -DFORKD_FUZZ=ON under clang;
// parse_fuzz_regression_test runs the same entry point under the normal build.
#include <cstddef>
#include <cstdint>
#include <string>

#include "netfilter/ip.h"
#include "netfilter/links.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  using namespace forkd::netfilter;
  if (auto a = IpAddress::Parse(text); a.ok()) {
    // A parsed address prints back to something that parses to itself.
    auto again = IpAddress::Parse(a->ToString());
    if (!again.ok() || !(*again == *a)) __builtin_trap();
  }
  if (auto c = Cidr::Parse(text); c.ok()) {
    if (c->prefix < 0 || c->prefix > c->address.max_prefix()) __builtin_trap();
    if (!c->Contains(c->address) || !c->Covers(*c)) __builtin_trap();
    auto again = Cidr::Parse(c->ToString());
    if (!again.ok() || !(*again == *c)) __builtin_trap();
  }
  (void)InterfaceAddress::Parse(text);
  (void)ParseMac(text);
  return 0;
}
