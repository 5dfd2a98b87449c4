// One nftables transaction: netlink messages between NFNL_MSG_BATCH_BEGIN and
// NFNL_MSG_BATCH_END, committed by the kernel all together or not at all.
// Each message carries a description so an error names the object it refers to.
#pragma once

#include <libmnl/libmnl.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

struct nlmsghdr;

namespace forkd::netfilter {

// A batch's memory, handed from one batch to the next (Nftables keeps it) so
// that an install neither allocates nor faults in fresh pages.
struct BatchStorage {
  std::unique_ptr<char[]> buf;
  size_t capacity = 0;
  std::string what;                // every message's description, back to back
  std::vector<uint32_t> what_end;  // where each one ends in `what`
};

class Batch {
 public:
  // Room reserved for each message. libnftnl writes a message without a bound,
  // so every encoder keeps its messages below this (element lists are split,
  // policy sizes are capped by Validate) and Commit() checks it.
  static constexpr size_t kMaxMessage = 16 * 1024;

  // A batch's memory, handed from one batch to the next (BatchStorage).
  using Storage = BatchStorage;

  explicit Batch(uint32_t first_seq, Storage storage = {});

  // Starts a message of nftables type `type` (NFT_MSG_*) for the inet family;
  // the caller fills its payload with a libnftnl *_nlmsg_build_payload call
  // and then calls Commit(). `what` describes the message for errors; given
  // in pieces, they are joined without allocating.
  nlmsghdr* Begin(uint16_t type, uint16_t flags, std::initializer_list<std::string_view> what);
  nlmsghdr* Begin(uint16_t type, uint16_t flags, std::string_view what) {
    return Begin(type, flags, {what});
  }
  // Aborts the process if the message outgrew kMaxMessage: the heap past the
  // reservation is already overwritten, and going on would be worse.
  void Commit(const nlmsghdr* nlh);

  // Closes the batch; returns the bytes to send.
  std::span<const char> Finish();

  uint32_t first_seq() const { return first_seq_; }
  uint32_t next_seq() const { return seq_; }
  size_t message_count() const { return s_.what_end.size(); }
  // The description of the message with sequence number `seq`, if any (valid
  // until the next call).
  const std::string* Describe(uint32_t seq) const;

  // The memory, for the next batch; this one is unusable afterwards.
  Storage TakeStorage() && { return std::move(s_); }

 private:
  // Grown by hand: zero-filling (std::vector::resize) and fresh pages for
  // every batch showed up as a third of an install's time.
  void Reserve(size_t bytes);
  std::string_view What(size_t index) const;
  Storage s_;
  size_t used_ = 0;
  uint32_t first_seq_;
  uint32_t seq_;
  bool finished_ = false;
  mutable std::string described_;
};

// A NETLINK_NETFILTER socket bound to one network namespace.
class NetlinkSocket {
 public:
  // Creates the socket inside `netns_fd` (negative: the caller's namespace).
  static absl::StatusOr<NetlinkSocket> Open(int netns_fd);

  NetlinkSocket(NetlinkSocket&&) noexcept;
  NetlinkSocket& operator=(NetlinkSocket&&) noexcept;
  NetlinkSocket(const NetlinkSocket&) = delete;
  NetlinkSocket& operator=(const NetlinkSocket&) = delete;
  ~NetlinkSocket();

  // Sends the batch and reads every answer. On failure, reports the first
  // failing message: "<context>: <what>: <ENAME> (<text>)".
  absl::Status Send(Batch& batch, const std::string& context);

  // Sends one dump request (built into `request`) and passes every answer to
  // `cb` as libmnl would. `context` prefixes errors.
  absl::Status Dump(const nlmsghdr* request, mnl_cb_t cb, void* data, const std::string& context);

  uint32_t NextSeq(uint32_t count);

 private:
  explicit NetlinkSocket(mnl_socket* s);
  mnl_socket* sock_ = nullptr;
  std::unique_ptr<char[]> rx_;  // answers are read here; allocated once
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
};

}  // namespace forkd::netfilter
