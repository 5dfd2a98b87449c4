#include "netfilter/nft_encode.h"

#include <endian.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <net/if.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>

#include "common/c_ptr.h"

namespace forkd::netfilter::encode {
namespace {

// nft's datatype ids (nftables src/datatype.h), kept so `nft list` shows our
// sets and maps with their proper types.
constexpr uint32_t kTypeIpAddr = 7;
constexpr uint32_t kTypeIp6Addr = 8;
constexpr uint32_t kTypeInetService = 13;
constexpr uint32_t kTypeIfname = 41;
constexpr uint32_t kTypeInetProtocol = 12;
constexpr uint32_t kTypeBits = 6;  // concatenated types: (a << 6) | b
constexpr uint32_t kByteorderHost = 1;

// Connection tracking state bits as the ct expression reports them.
constexpr uint32_t kCtEstablished = 1U << 1;
constexpr uint32_t kCtRelated = 1U << 2;
constexpr uint32_t kCtInvalid = 1U << 0;
constexpr uint32_t kCtNew = 1U << 3;
constexpr uint32_t kCtUntracked = 1U << 6;

constexpr uint32_t kRegSize32 = 4;
// The kernel names an anonymous set itself, replacing %d.
constexpr char kAnonymousSet[] = "__set%d";
const std::string kAnonymousSetName = kAnonymousSet;

using TablePtr = CPtr<nftnl_table, nftnl_table_free>;
using ChainPtr = CPtr<nftnl_chain, nftnl_chain_free>;
using RulePtr = CPtr<nftnl_rule, nftnl_rule_free>;
using SetPtr = CPtr<nftnl_set, nftnl_set_free>;
using ObjPtr = CPtr<nftnl_obj, nftnl_obj_free>;
using UdataPtr = CPtr<nftnl_udata_buf, nftnl_udata_buf_free>;

constexpr uint16_t kCreate = NLM_F_CREATE;
constexpr uint16_t kCreateExcl = NLM_F_CREATE | NLM_F_EXCL;

uint32_t PadTo32(uint32_t len) { return (len + kRegSize32 - 1) / kRegSize32 * kRegSize32; }

// An address family's nft datatype, address length, and where the source or
// destination address sits in its network header.
uint32_t AddressType(Family f) { return f == Family::kV4 ? kTypeIpAddr : kTypeIp6Addr; }
uint32_t AddressLen(Family f) { return f == Family::kV4 ? 4 : 16; }
uint32_t AddressOffset(Family f, bool source) {
  if (f == Family::kV4) return source ? 12 : 16;
  return source ? 8 : 24;
}

// --- expressions -----------------------------------------------------------

// Writes a rule's expressions straight into its message with libmnl, as
// libnftnl's nftnl_rule_nlmsg_build_payload lays them out
// (NFTA_RULE_EXPRESSIONS > NFTA_LIST_ELEM > NFTA_EXPR_NAME, NFTA_EXPR_DATA;
// integers big-endian): no object, expression or string is allocated per
// rule, which was half of an install's user-space time.
class RuleBuilder {
 public:
  // Opens the expression list of the rule message `nlh`.
  explicit RuleBuilder(nlmsghdr* nlh)
      : nlh_(nlh), list_(mnl_attr_nest_start(nlh, NFTA_RULE_EXPRESSIONS)) {}
  RuleBuilder(const RuleBuilder&) = delete;
  RuleBuilder& operator=(const RuleBuilder&) = delete;
  // Closes the list; call once, after the last expression.
  void Finish() { mnl_attr_nest_end(nlh_, list_); }

  void Meta(uint32_t key, uint32_t dreg) {
    Expr e(*this, "meta");
    U32(NFTA_META_KEY, key);
    U32(NFTA_META_DREG, dreg);
  }
  void Payload(uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
    Expr e(*this, "payload");
    U32(NFTA_PAYLOAD_DREG, dreg);
    U32(NFTA_PAYLOAD_BASE, base);
    U32(NFTA_PAYLOAD_OFFSET, offset);
    U32(NFTA_PAYLOAD_LEN, len);
  }
  void Cmp(uint32_t op, const void* data, uint32_t len) {
    Expr e(*this, "cmp");
    U32(NFTA_CMP_SREG, NFT_REG_1);
    U32(NFTA_CMP_OP, op);
    Value(NFTA_CMP_DATA, data, len);
  }
  void Mask(const void* mask, uint32_t len) {
    const std::array<uint8_t, 16> zero{};
    Expr e(*this, "bitwise");
    U32(NFTA_BITWISE_SREG, NFT_REG_1);
    U32(NFTA_BITWISE_DREG, NFT_REG_1);
    U32(NFTA_BITWISE_LEN, len);
    Value(NFTA_BITWISE_MASK, mask, len);
    Value(NFTA_BITWISE_XOR, zero.data(), len);
  }
  void Range(uint16_t first_be, uint16_t last_be) {
    Expr e(*this, "range");
    U32(NFTA_RANGE_SREG, NFT_REG_1);
    U32(NFTA_RANGE_OP, NFT_RANGE_EQ);
    Value(NFTA_RANGE_FROM_DATA, &first_be, sizeof(first_be));
    Value(NFTA_RANGE_TO_DATA, &last_be, sizeof(last_be));
  }
  void Ct(uint32_t key) {
    Expr e(*this, "ct");
    U32(NFTA_CT_KEY, key);
    U32(NFTA_CT_DREG, NFT_REG_1);
  }
  void Lookup(uint32_t sreg, const std::string& set, bool is_map, uint32_t set_id = 0,
              bool inverted = false) {
    Expr e(*this, "lookup");
    U32(NFTA_LOOKUP_SREG, sreg);
    if (is_map) U32(NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
    mnl_attr_put_strz(nlh_, NFTA_LOOKUP_SET, set.c_str());
    if (set_id != 0) U32(NFTA_LOOKUP_SET_ID, set_id);
    if (inverted) U32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
  }
  void CounterRef(const std::string& name) {
    Expr e(*this, "objref");
    U32(NFTA_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
    mnl_attr_put_strz(nlh_, NFTA_OBJREF_IMM_NAME, name.c_str());
  }
  void Verdict(uint32_t code) { Immediate(code, nullptr); }
  // NFT_GOTO or NFT_JUMP to `chain`.
  void ToChain(int verdict, const std::string& chain) {
    Immediate(static_cast<uint32_t>(verdict), chain.c_str());
  }
  void Masquerade() { Expr e(*this, "masq"); }
  // Loads 1 if the packet has an IPv6 extension header of `type`, else 0.
  void ExthdrPresent(uint8_t type) {
    Expr e(*this, "exthdr");
    U32(NFTA_EXTHDR_DREG, NFT_REG_1);
    mnl_attr_put_u8(nlh_, NFTA_EXTHDR_TYPE, type);
    U32(NFTA_EXTHDR_OFFSET, 0);
    U32(NFTA_EXTHDR_LEN, 1);
    U32(NFTA_EXTHDR_FLAGS, NFT_EXTHDR_F_PRESENT);
    U32(NFTA_EXTHDR_OP, NFT_EXTHDR_OP_IPV6);
  }
  // `iifname "<prefix>*"` / `oifname "<prefix>*"`: the name's leading bytes.
  void IfnamePrefix(bool output, const std::string& prefix) {
    Meta(output ? NFT_META_OIFNAME : NFT_META_IIFNAME, NFT_REG_1);
    Cmp(NFT_CMP_EQ, prefix.data(), static_cast<uint32_t>(prefix.size()));
  }

  // `<family> saddr|daddr [!=] prefix`
  void Address(const Cidr& c, bool source, bool negate) {
    const uint32_t offset = AddressOffset(c.family(), source);
    // A byte-aligned prefix compares only its leading bytes: one expression
    // fewer than load + mask + compare, as nft itself encodes it.
    const bool aligned = c.prefix % 8 == 0;
    const auto len = static_cast<uint32_t>(aligned ? c.prefix / 8 : c.address.size());
    Payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len, NFT_REG_1);
    if (!aligned) {
      const auto mask = c.Mask();
      Mask(mask.data(), len);
    }
    Cmp(negate ? uint32_t{NFT_CMP_NEQ} : uint32_t{NFT_CMP_EQ}, c.address.bytes.data(), len);
  }

 private:
  // One NFTA_LIST_ELEM: the expression's name, then its attributes inside
  // NFTA_EXPR_DATA until the scope ends.
  class Expr {
   public:
    Expr(RuleBuilder& rb, const char* name) : rb_(rb) {
      elem_ = mnl_attr_nest_start(rb.nlh_, NFTA_LIST_ELEM);
      mnl_attr_put_strz(rb.nlh_, NFTA_EXPR_NAME, name);
      data_ = mnl_attr_nest_start(rb.nlh_, NFTA_EXPR_DATA);
    }
    Expr(const Expr&) = delete;
    Expr& operator=(const Expr&) = delete;
    ~Expr() {
      mnl_attr_nest_end(rb_.nlh_, data_);
      mnl_attr_nest_end(rb_.nlh_, elem_);
    }

   private:
    RuleBuilder& rb_;
    nlattr* elem_;
    nlattr* data_;
  };

  void U32(uint16_t type, uint32_t value) { mnl_attr_put_u32(nlh_, type, htobe32(value)); }
  // `type` > NFTA_DATA_VALUE: a register value (cmp, bitwise, range).
  void Value(uint16_t type, const void* data, uint32_t len) {
    nlattr* nest = mnl_attr_nest_start(nlh_, type);
    mnl_attr_put(nlh_, NFTA_DATA_VALUE, len, data);
    mnl_attr_nest_end(nlh_, nest);
  }
  void Immediate(uint32_t code, const char* chain) {
    Expr e(*this, "immediate");
    U32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
    nlattr* data = mnl_attr_nest_start(nlh_, NFTA_IMMEDIATE_DATA);
    nlattr* verdict = mnl_attr_nest_start(nlh_, NFTA_DATA_VERDICT);
    U32(NFTA_VERDICT_CODE, code);
    if (chain != nullptr) mnl_attr_put_strz(nlh_, NFTA_VERDICT_CHAIN, chain);
    mnl_attr_nest_end(nlh_, verdict);
    mnl_attr_nest_end(nlh_, data);
  }

  nlmsghdr* nlh_;
  nlattr* list_;
};

void EncodeFamily(RuleBuilder& rb, Family f) {
  const uint8_t proto = f == Family::kV4 ? uint8_t{NFPROTO_IPV4} : uint8_t{NFPROTO_IPV6};
  rb.Meta(NFT_META_NFPROTO, NFT_REG_1);
  rb.Cmp(NFT_CMP_EQ, &proto, sizeof(proto));
}

// Every rule that reads a network header field carries its `meta nfproto`
// check, even in a chain only one family reaches: without it `nft list`
// prints the field as a raw payload offset (`@nh,128,32`) instead of `ip daddr`.
// A rule of such a chain that reads no network header field (`meta l4proto
// icmp ct state related`) needs no check to be read right, and goes without:
// every expression costs the kernel about a microsecond per install.
constexpr bool kAuditable = true;

bool ReadsNetworkHeader(const Rule& r) {
  return r.saddr || r.saddr_set || !r.saddr_not.empty() || r.daddr || r.daddr_set ||
         !r.daddr_not.empty() || r.ip_options || r.routing_header || r.pin_set || r.allow_set;
}

bool NeedsFamilyCheck(const Rule& r) {
  return !r.family_known || (kAuditable && ReadsNetworkHeader(r));
}

uint32_t NewPortSet(Batch& b, const std::string& table, const std::vector<PortRange>& ports);

// The anonymous port sets a rule looks up (its transaction ids, 0: none):
// messages of their own, so they are added before the rule's.
struct PortSets {
  uint32_t dports = 0;
  uint32_t sports = 0;
};

PortSets NewPortSets(Batch& b, const std::string& table, const Rule& r) {
  PortSets ids;
  if (r.dports.size() > 1) ids.dports = NewPortSet(b, table, r.dports);
  if (r.sports.size() > 1) ids.sports = NewPortSet(b, table, r.sports);
  return ids;
}

void EncodeRule(RuleBuilder& rb, const Rule& r, const PortSets& sets) {
  if (auto f = r.family(); f && NeedsFamilyCheck(r)) EncodeFamily(rb, *f);
  if (r.iifname_prefix || r.oifname_prefix) {
    const bool output = r.oifname_prefix.has_value();
    rb.IfnamePrefix(output, output ? *r.oifname_prefix : *r.iifname_prefix);
    if (r.ifname_not_in) {
      // A key-only, inverted lookup: the name is not in the (dispatch) map.
      rb.Meta(output ? NFT_META_OIFNAME : NFT_META_IIFNAME, NFT_REG_1);
      rb.Lookup(NFT_REG_1, *r.ifname_not_in, /*is_map=*/false, 0, /*inverted=*/true);
    }
  }
  if (r.ip_options) {
    // `ip hdrlength != 5`: the low nibble of the first byte, in 32-bit words.
    const uint8_t nibble = 0x0f;
    const uint8_t no_options = 5;
    rb.Payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 1, NFT_REG_1);
    rb.Mask(&nibble, 1);
    rb.Cmp(NFT_CMP_NEQ, &no_options, 1);
  }
  if (r.routing_header) {
    const uint8_t present = 1;
    rb.ExthdrPresent(IPPROTO_ROUTING);
    rb.Cmp(NFT_CMP_EQ, &present, 1);
  }
  // A /0 prefix matches every address of the family: nothing to compare.
  if (r.saddr && r.saddr->prefix > 0) rb.Address(*r.saddr, /*source=*/true, r.saddr_negate);
  if (r.saddr_set) {
    rb.Payload(NFT_PAYLOAD_NETWORK_HEADER, AddressOffset(*r.set_family, /*source=*/true),
               AddressLen(*r.set_family), NFT_REG_1);
    rb.Lookup(NFT_REG_1, *r.saddr_set, /*is_map=*/false);
  }
  for (const Cidr& c : r.saddr_not) rb.Address(c, /*source=*/true, /*negate=*/true);
  if (r.daddr && r.daddr->prefix > 0) rb.Address(*r.daddr, /*source=*/false, false);
  if (r.daddr_set) {
    rb.Payload(NFT_PAYLOAD_NETWORK_HEADER, AddressOffset(*r.set_family, /*source=*/false),
               AddressLen(*r.set_family), NFT_REG_1);
    rb.Lookup(NFT_REG_1, *r.daddr_set, /*is_map=*/false);
  }
  for (const Cidr& c : r.daddr_not) rb.Address(c, /*source=*/false, /*negate=*/true);
  if (r.l4proto) {
    rb.Meta(NFT_META_L4PROTO, NFT_REG_1);
    rb.Cmp(NFT_CMP_EQ, &*r.l4proto, 1);
  }
  if (r.icmpv6_type) {
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
    rb.Cmp(NFT_CMP_EQ, &*r.icmpv6_type, 1);
  }
  if (r.dports.size() == 1) {
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
    const uint16_t first = htobe16(r.dports[0].first);
    if (r.dports[0].first == r.dports[0].last) {
      rb.Cmp(NFT_CMP_EQ, &first, sizeof(first));
    } else {
      rb.Range(first, htobe16(r.dports[0].last));
    }
  } else if (r.dports.size() > 1) {
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
    rb.Lookup(NFT_REG_1, kAnonymousSetName, /*is_map=*/false, sets.dports);
  }
  if (r.sports.size() == 1) {
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG_1);
    const uint16_t first = htobe16(r.sports[0].first);
    if (r.sports[0].first == r.sports[0].last) {
      rb.Cmp(NFT_CMP_EQ, &first, sizeof(first));
    } else {
      rb.Range(first, htobe16(r.sports[0].last));
    }
  } else if (r.sports.size() > 1) {
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG_1);
    rb.Lookup(NFT_REG_1, kAnonymousSetName, /*is_map=*/false, sets.sports);
  }
  // A packet has exactly one state bit, so "any of these" is mask != 0.
  for (const auto& [wanted, mask] :
       {std::pair{r.ct_established_related, kCtEstablished | kCtRelated},
        std::pair{r.ct_unsolicited, kCtInvalid | kCtNew | kCtUntracked},
        std::pair{r.ct_related, kCtRelated}}) {
    if (!wanted) continue;
    const uint32_t zero = 0;
    rb.Ct(NFT_CT_STATE);
    rb.Mask(&mask, sizeof(mask));
    rb.Cmp(NFT_CMP_NEQ, &zero, sizeof(zero));
  }
  if (r.pin_set) {
    // (daddr . th dport) concatenated into consecutive 32-bit registers.
    const uint32_t addr_len = AddressLen(*r.pin_family);
    const uint32_t addr_offset = AddressOffset(*r.pin_family, r.pin_by_source);
    rb.Payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset, addr_len, NFT_REG32_00);
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, r.pin_by_source ? 0 : 2, 2,
               NFT_REG32_00 + addr_len / kRegSize32);
    rb.Lookup(NFT_REG32_00, *r.pin_set, /*is_map=*/false);
  }
  if (r.allow_set) {
    // (meta l4proto . addr . th port) on consecutive 32-bit registers.
    const uint32_t addr_len = AddressLen(*r.set_family);
    const uint32_t addr_offset = AddressOffset(*r.set_family, r.pin_by_source);
    rb.Meta(NFT_META_L4PROTO, NFT_REG32_00);
    rb.Payload(NFT_PAYLOAD_NETWORK_HEADER, addr_offset, addr_len, NFT_REG32_00 + 1);
    rb.Payload(NFT_PAYLOAD_TRANSPORT_HEADER, r.pin_by_source ? 0 : 2, 2,
               NFT_REG32_00 + 1 + addr_len / kRegSize32);
    rb.Lookup(NFT_REG32_00, *r.allow_set, /*is_map=*/false);
  }
  if (r.oifname) {
    char name[IFNAMSIZ] = {};
    std::strncpy(name, r.oifname->c_str(), IFNAMSIZ - 1);
    rb.Meta(NFT_META_OIFNAME, NFT_REG_1);
    rb.Cmp(NFT_CMP_EQ, name, static_cast<uint32_t>(r.oifname->size() + 1));
  }
  if (r.counter) rb.CounterRef(*r.counter);
  switch (r.verdict) {
    case Verdict::kNone:
      break;
    case Verdict::kAccept:
      rb.Verdict(NF_ACCEPT);
      break;
    case Verdict::kDrop:
      rb.Verdict(NF_DROP);
      break;
    case Verdict::kReturn:
      rb.Verdict(NFT_RETURN);
      break;
    case Verdict::kGoto:
      rb.ToChain(NFT_GOTO, *r.target);
      break;
    case Verdict::kJump:
      rb.ToChain(NFT_JUMP, *r.target);
      break;
    case Verdict::kMasquerade:
      rb.Masquerade();
      break;
  }
}

std::array<char, IFNAMSIZ> IfnameKey(const std::string& name) {
  std::array<char, IFNAMSIZ> key{};
  std::strncpy(key.data(), name.c_str(), IFNAMSIZ - 1);
  return key;
}

SetPtr NamedSet(const std::string& table, const std::string& name) {
  SetPtr s(nftnl_set_alloc());
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name.c_str());
  return s;
}

void AddSetMessage(Batch& b, nftnl_set* s, uint16_t type, uint16_t flags, std::string_view what) {
  // The kernel requires a transaction-unique id on every new set; the
  // message's sequence number is one.
  if (type == NFT_MSG_NEWSET && !nftnl_set_is_set(s, NFTNL_SET_ID)) {
    nftnl_set_set_u32(s, NFTNL_SET_ID, b.next_seq());
  }
  nlmsghdr* nlh = b.Begin(type, flags, what);
  nftnl_set_nlmsg_build_payload(nlh, s);
  b.Commit(nlh);
}

void AddElemsMessage(Batch& b, nftnl_set* s, uint16_t type, uint16_t flags, std::string_view what) {
  nlmsghdr* nlh = b.Begin(type, flags, what);
  nftnl_set_elems_nlmsg_build_payload(nlh, s);
  b.Commit(nlh);
}

// One interface-name element of a set or dispatch map (`jump_to`: the
// element's verdict, a jump to that chain) in a message of its own.
void IfnameElementMessage(Batch& b, const std::string& table, const std::string& set,
                          const std::string& ifname, const std::string* jump_to, uint16_t type,
                          uint16_t flags, std::initializer_list<std::string_view> what) {
  SetPtr s = NamedSet(table, set);
  nftnl_set_elem* e = nftnl_set_elem_alloc();
  const auto key = IfnameKey(ifname);
  nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key.data(), key.size());
  if (jump_to != nullptr) {
    nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_VERDICT, static_cast<uint32_t>(NFT_JUMP));
    nftnl_set_elem_set_str(e, NFTNL_SET_ELEM_CHAIN, jump_to->c_str());
  }
  nftnl_set_elem_add(s.get(), e);
  nlmsghdr* nlh = b.Begin(type, flags, what);
  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
  b.Commit(nlh);
}

// Element lists are split over messages of at most kElementsPerMessage
// elements each, all in the same transaction, so no message outgrows the
// batch's per-message reservation (Batch::kMaxMessage) however long the list.
constexpr size_t kElementsPerMessage = 64;

class ElementWriter {
 public:
  ElementWriter(Batch& b, const std::string& table, const std::string& set, uint32_t set_id,
                uint16_t type, uint16_t flags, std::string what)
      : b_(b),
        table_(table),
        set_(set),
        set_id_(set_id),
        type_(type),
        flags_(flags),
        what_(std::move(what)) {}
  ElementWriter(const ElementWriter&) = delete;
  ElementWriter& operator=(const ElementWriter&) = delete;
  ~ElementWriter() { Flush(); }

  // Takes ownership of `e`.
  void Add(nftnl_set_elem* e) {
    if (count_ == kElementsPerMessage) Flush();
    if (!cur_) {
      cur_ = NamedSet(table_, set_);
      if (set_id_ != 0) nftnl_set_set_u32(cur_.get(), NFTNL_SET_ID, set_id_);
    }
    nftnl_set_elem_add(cur_.get(), e);
    ++count_;
  }

 private:
  void Flush() {
    if (!cur_) return;
    ++part_;
    AddElemsMessage(b_, cur_.get(), type_, flags_,
                    part_ == 1 ? what_ : what_ + " (part " + std::to_string(part_) + ")");
    cur_.reset();
    count_ = 0;
  }
  Batch& b_;
  const std::string& table_;
  const std::string& set_;
  uint32_t set_id_;
  uint16_t type_;
  uint16_t flags_;
  std::string what_;
  SetPtr cur_;
  size_t count_ = 0;
  int part_ = 0;
};

// Interval elements as nft encodes them: [first, last+1) with an explicit
// end element, and a leading end at zero when the first range does not start
// there. `ranges` are sorted, disjoint and not adjacent; keys big-endian.
void AddIntervals(
    ElementWriter& w,
    const std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>>& ranges) {
  auto add = [&](const std::vector<uint8_t>& key, bool end) {
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key.data(), static_cast<uint32_t>(key.size()));
    if (end) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    w.Add(e);
  };
  if (ranges.empty()) return;
  const auto& first = ranges.front().first;
  if (std::any_of(first.begin(), first.end(), [](uint8_t x) { return x != 0; })) {
    add(std::vector<uint8_t>(first.size(), 0), true);
  }
  for (const auto& [lo, hi] : ranges) {
    add(lo, false);
    // hi + 1, unless hi is the largest key.
    std::vector<uint8_t> next = hi;
    size_t i = next.size();
    while (i > 0 && ++next[i - 1] == 0) --i;
    if (i > 0) add(next, true);
  }
}

std::vector<uint8_t> Bytes(const uint8_t* p, size_t n) { return {p, p + n}; }

// An anonymous, constant interval set of ports for one rule, created in the
// same transaction; returns its transaction id for the rule's lookup.
uint32_t NewPortSet(Batch& b, const std::string& table, const std::vector<PortRange>& ports) {
  const uint32_t id = b.next_seq();
  SetPtr s = NamedSet(table, kAnonymousSet);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS,
                    NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, kTypeInetService);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, 2);
  nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
  std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>> ranges;
  for (const PortRange& r : ports) {
    const uint16_t lo = htobe16(r.first);
    const uint16_t hi = htobe16(r.last);
    ranges.emplace_back(Bytes(reinterpret_cast<const uint8_t*>(&lo), 2),
                        Bytes(reinterpret_cast<const uint8_t*>(&hi), 2));
  }
  nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, static_cast<uint32_t>(2 * ranges.size() + 1));
  AddSetMessage(b, s.get(), NFT_MSG_NEWSET, kCreate, "add anonymous port set");
  {
    ElementWriter w(b, table, kAnonymousSetName, id, NFT_MSG_NEWSETELEM, kCreate,
                    "add ports to anonymous set");
    AddIntervals(w, ranges);
  }
  return id;
}

}  // namespace

void NewTable(Batch& b, const std::string& table) {
  TablePtr t(nftnl_table_alloc());
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table.c_str());
  nlmsghdr* nlh = b.Begin(NFT_MSG_NEWTABLE, kCreate, "add table " + table);
  nftnl_table_nlmsg_build_payload(nlh, t.get());
  b.Commit(nlh);
}

void DelTable(Batch& b, const std::string& table) {
  TablePtr t(nftnl_table_alloc());
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table.c_str());
  nlmsghdr* nlh = b.Begin(NFT_MSG_DELTABLE, 0, "delete table " + table);
  nftnl_table_nlmsg_build_payload(nlh, t.get());
  b.Commit(nlh);
}

void NewBaseChain(Batch& b, const std::string& table, const std::string& chain,
                  const BaseChain& base) {
  ChainPtr c(nftnl_chain_alloc());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.c_str());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, base.type);
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, base.hook);
  nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, base.priority);
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
  nlmsghdr* nlh = b.Begin(NFT_MSG_NEWCHAIN, kCreate, "add base chain " + chain);
  nftnl_chain_nlmsg_build_payload(nlh, c.get());
  b.Commit(nlh);
}

void NewChain(Batch& b, const std::string& table, const std::string& chain, bool exclusive) {
  ChainPtr c(nftnl_chain_alloc());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.c_str());
  nlmsghdr* nlh =
      b.Begin(NFT_MSG_NEWCHAIN, exclusive ? kCreateExcl : kCreate, "add chain " + chain);
  nftnl_chain_nlmsg_build_payload(nlh, c.get());
  b.Commit(nlh);
}

void FlushChain(Batch& b, const std::string& table, const std::string& chain) {
  RulePtr r(nftnl_rule_alloc());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.c_str());
  nlmsghdr* nlh = b.Begin(NFT_MSG_DELRULE, 0, "flush chain " + chain);
  nftnl_rule_nlmsg_build_payload(nlh, r.get());
  b.Commit(nlh);
}

void DelChain(Batch& b, const std::string& table, const std::string& chain) {
  ChainPtr c(nftnl_chain_alloc());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.c_str());
  nlmsghdr* nlh = b.Begin(NFT_MSG_DELCHAIN, 0, "delete chain " + chain);
  nftnl_chain_nlmsg_build_payload(nlh, c.get());
  b.Commit(nlh);
}

// NFTA_RULE_TABLE and NFTA_RULE_CHAIN, as libnftnl puts them.
void PutRuleTarget(nlmsghdr* nlh, const std::string& table, const std::string& chain) {
  mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain.c_str());
}

void NewRule(Batch& b, const std::string& table, const std::string& chain, const Rule& rule,
             std::initializer_list<std::string_view> what) {
  const PortSets sets = NewPortSets(b, table, rule);
  nlmsghdr* nlh = b.Begin(NFT_MSG_NEWRULE, NLM_F_APPEND | kCreate, what);
  PutRuleTarget(nlh, table, chain);
  if (!rule.comment.empty()) {
    // The comment as nftnl_udata_put_strz lays it out: type, length, text
    // with its NUL (at most NFT_USERDATA_MAXLEN in all).
    std::array<char, NFT_USERDATA_MAXLEN> udata{};
    const size_t len = std::min(rule.comment.size() + 1, udata.size() - 2);
    udata[0] = NFTNL_UDATA_RULE_COMMENT;
    udata[1] = static_cast<char>(len);
    std::memcpy(udata.data() + 2, rule.comment.data(), len - 1);
    mnl_attr_put(nlh, NFTA_RULE_USERDATA, len + 2, udata.data());
  }
  RuleBuilder rb(nlh);
  EncodeRule(rb, rule, sets);
  rb.Finish();
  b.Commit(nlh);
}

void NewDispatchRule(Batch& b, const std::string& table, const std::string& chain,
                     const std::string& map, bool by_output_interface) {
  nlmsghdr* nlh =
      b.Begin(NFT_MSG_NEWRULE, NLM_F_APPEND | kCreate, {"add rule ", chain, " dispatch @", map});
  PutRuleTarget(nlh, table, chain);
  RuleBuilder rb(nlh);
  rb.Meta(by_output_interface ? NFT_META_OIFNAME : NFT_META_IIFNAME, NFT_REG_1);
  rb.Lookup(NFT_REG_1, map, /*is_map=*/true);
  rb.Finish();
  b.Commit(nlh);
}

void NewCounter(Batch& b, const std::string& table, const std::string& name, bool exclusive) {
  ObjPtr o(nftnl_obj_alloc());
  nftnl_obj_set_str(o.get(), NFTNL_OBJ_TABLE, table.c_str());
  nftnl_obj_set_str(o.get(), NFTNL_OBJ_NAME, name.c_str());
  nftnl_obj_set_u32(o.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
  nlmsghdr* nlh = b.Begin(NFT_MSG_NEWOBJ, exclusive ? kCreateExcl : kCreate, "add counter " + name);
  nftnl_obj_nlmsg_build_payload(nlh, o.get());
  b.Commit(nlh);
}

void DelCounter(Batch& b, const std::string& table, const std::string& name) {
  ObjPtr o(nftnl_obj_alloc());
  nftnl_obj_set_str(o.get(), NFTNL_OBJ_TABLE, table.c_str());
  nftnl_obj_set_str(o.get(), NFTNL_OBJ_NAME, name.c_str());
  nftnl_obj_set_u32(o.get(), NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
  nlmsghdr* nlh = b.Begin(NFT_MSG_DELOBJ, 0, "delete counter " + name);
  nftnl_obj_nlmsg_build_payload(nlh, o.get());
  b.Commit(nlh);
}

void NewDispatchMap(Batch& b, const std::string& table, const std::string& map) {
  SetPtr s = NamedSet(table, map);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_MAP);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, kTypeIfname);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, IFNAMSIZ);
  nftnl_set_set_u32(s.get(), NFTNL_SET_DATA_TYPE, NFT_DATA_VERDICT);
  nftnl_set_set_u32(s.get(), NFTNL_SET_DATA_LEN, 0);
  // Interface names are host-order strings; without saying so, `nft list`
  // prints every key as "".
  UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
  nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, kByteorderHost);
  nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()),
                     nftnl_udata_buf_len(ud.get()));
  AddSetMessage(b, s.get(), NFT_MSG_NEWSET, kCreate, "add map " + map);
}

void NewIfnameSet(Batch& b, const std::string& table, const std::string& set) {
  SetPtr s = NamedSet(table, set);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, 0);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, kTypeIfname);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, IFNAMSIZ);
  UdataPtr ud(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
  nftnl_udata_put_u32(ud.get(), NFTNL_UDATA_SET_KEYBYTEORDER, kByteorderHost);
  nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()),
                     nftnl_udata_buf_len(ud.get()));
  AddSetMessage(b, s.get(), NFT_MSG_NEWSET, kCreate, "add set " + set);
}

void NewIfnameElement(Batch& b, const std::string& table, const std::string& set,
                      const std::string& ifname) {
  IfnameElementMessage(b, table, set, ifname, nullptr, NFT_MSG_NEWSETELEM, kCreateExcl,
                       {"add element \"", ifname, "\" to set ", set});
}

void DelIfnameElement(Batch& b, const std::string& table, const std::string& set,
                      const std::string& ifname) {
  IfnameElementMessage(b, table, set, ifname, nullptr, NFT_MSG_DELSETELEM, 0,
                       {"delete element \"", ifname, "\" from set ", set});
}

void NewPinSet(Batch& b, const std::string& table, const PinSetSpec& set, bool exclusive) {
  SetPtr s = NamedSet(table, set.name);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_TIMEOUT);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE,
                    (AddressType(set.family) << kTypeBits) | kTypeInetService);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, AddressLen(set.family) + PadTo32(2));
  nftnl_set_set_u32(s.get(), NFTNL_SET_DESC_SIZE, set.max_elements);
  AddSetMessage(b, s.get(), NFT_MSG_NEWSET, exclusive ? kCreateExcl : kCreate,
                "add set " + set.name);
}

void DelSet(Batch& b, const std::string& table, const std::string& set) {
  SetPtr s = NamedSet(table, set);
  AddSetMessage(b, s.get(), NFT_MSG_DELSET, 0, "delete set " + set);
}

void NewDispatchElement(Batch& b, const std::string& table, const std::string& map,
                        const std::string& ifname, const std::string& chain) {
  IfnameElementMessage(b, table, map, ifname, &chain, NFT_MSG_NEWSETELEM, kCreateExcl,
                       {"add element \"", ifname, "\" to map ", map});
}

void DelDispatchElement(Batch& b, const std::string& table, const std::string& map,
                        const std::string& ifname) {
  IfnameElementMessage(b, table, map, ifname, nullptr, NFT_MSG_DELSETELEM, 0,
                       {"delete element \"", ifname, "\" from map ", map});
}

void NewPinElements(Batch& b, const std::string& table, const std::string& set, Family family,
                    const std::vector<PinElement>& elements) {
  const size_t addr_len = AddressLen(family);
  ElementWriter w(b, table, set, 0, NFT_MSG_NEWSETELEM, kCreate,
                  "pin " + std::to_string(elements.size()) + " element(s) into set " + set);
  for (const PinElement& pin : elements) {
    std::array<uint8_t, 20> key{};
    std::memcpy(key.data(), pin.address.bytes.data(), addr_len);
    const uint16_t port = htobe16(pin.port);
    std::memcpy(key.data() + addr_len, &port, sizeof(port));
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key.data(), addr_len + PadTo32(2));
    nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, pin.timeout_ms);
    w.Add(e);
  }
}

void NewAllowSet(Batch& b, const std::string& table, const AllowSetSpec& set, bool exclusive,
                 bool flush_first) {
  const uint32_t addr_len = AddressLen(set.family);
  SetPtr s = NamedSet(table, set.name);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_INTERVAL | NFT_SET_CONCAT);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE,
                    (((kTypeInetProtocol << kTypeBits) | AddressType(set.family)) << kTypeBits) |
                        kTypeInetService);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, kRegSize32 + addr_len + kRegSize32);
  const std::array<uint8_t, 3> fields = {1, static_cast<uint8_t>(addr_len), 2};
  nftnl_set_set_data(s.get(), NFTNL_SET_DESC_CONCAT, fields.data(), fields.size());
  AddSetMessage(b, s.get(), NFT_MSG_NEWSET, exclusive ? kCreateExcl : kCreate,
                "add set " + set.name);
  if (flush_first) {
    SetPtr flush = NamedSet(table, set.name);
    AddElemsMessage(b, flush.get(), NFT_MSG_DELSETELEM, 0, "flush set " + set.name);
  }
  ElementWriter w(b, table, set.name, 0, NFT_MSG_NEWSETELEM, kCreate,
                  "add " + std::to_string(set.elements.size()) + " element(s) to set " + set.name);
  for (const AllowElement& a : set.elements) {
    std::array<uint8_t, 24> lo{};
    std::array<uint8_t, 24> hi{};
    lo[0] = hi[0] = a.l4proto;
    const auto mask = a.destination.Mask();
    for (size_t i = 0; i < addr_len; ++i) {
      lo[kRegSize32 + i] = a.destination.address.bytes[i];
      hi[kRegSize32 + i] = static_cast<uint8_t>(a.destination.address.bytes[i] | ~mask[i]);
    }
    const uint16_t first = htobe16(a.ports.first);
    const uint16_t last = htobe16(a.ports.last);
    std::memcpy(lo.data() + kRegSize32 + addr_len, &first, 2);
    std::memcpy(hi.data() + kRegSize32 + addr_len, &last, 2);
    const uint32_t len = kRegSize32 + addr_len + kRegSize32;
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, lo.data(), len);
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, hi.data(), len);
    w.Add(e);
  }
}

void NewAddressSet(Batch& b, const std::string& table, const std::string& name, Family family,
                   const std::vector<Cidr>& ranges) {
  const size_t len = AddressLen(family);
  SetPtr s = NamedSet(table, name);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_INTERVAL);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, AddressType(family));
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, static_cast<uint32_t>(len));
  AddSetMessage(b, s.get(), NFT_MSG_NEWSET, kCreate, "add set " + name);
  // Flush and refill in the same transaction: a re-run replaces the contents
  // (a newer table) and no packet sees the set empty.
  SetPtr flush = NamedSet(table, name);
  AddElemsMessage(b, flush.get(), NFT_MSG_DELSETELEM, 0, "flush set " + name);
  std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>> keys;
  for (const Cidr& c : ranges) {
    const auto mask = c.Mask();
    std::vector<uint8_t> lo = Bytes(c.address.bytes.data(), len);
    std::vector<uint8_t> hi = lo;
    for (size_t i = 0; i < len; ++i) hi[i] = static_cast<uint8_t>(lo[i] | ~mask[i]);
    keys.emplace_back(std::move(lo), std::move(hi));
  }
  ElementWriter w(b, table, name, 0, NFT_MSG_NEWSETELEM, kCreate, "add elements to set " + name);
  AddIntervals(w, keys);
}

}  // namespace forkd::netfilter::encode
