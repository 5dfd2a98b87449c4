// One nftables transaction: netlink messages between NFNL_MSG_BATCH_BEGIN and
// NFNL_MSG_BATCH_END, committed by the kernel all together or not at all.
// Each message carries a description so an error names the object it refers to.
#pragma once

#include <libmnl/libmnl.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

struct nlmsghdr;

namespace forkd::netfilter {

class Batch {
 public:
  // Room reserved for each message. libnftnl writes a message without a bound,
  // so every encoder keeps its messages below this (element lists are split,
  // policy sizes are capped by Validate) and Commit() checks it.
  static constexpr size_t kMaxMessage = 16 * 1024;

  explicit Batch(uint32_t first_seq);

  // Starts a message of nftables type `type` (NFT_MSG_*) for the inet family;
  // the caller fills its payload with a libnftnl *_nlmsg_build_payload call
  // and then calls Commit(). `what` describes the message for errors.
  nlmsghdr* Begin(uint16_t type, uint16_t flags, std::string what);
  // Aborts the process if the message outgrew kMaxMessage: the heap past the
  // reservation is already overwritten, and going on would be worse.
  void Commit(const nlmsghdr* nlh);

  // Closes the batch; returns the bytes to send.
  std::span<const char> Finish();

  uint32_t first_seq() const { return first_seq_; }
  uint32_t next_seq() const { return seq_; }
  size_t message_count() const { return what_.size(); }
  // The description of the message with sequence number `seq`, if any.
  const std::string* Describe(uint32_t seq) const;

 private:
  // Grown by hand: zero-filling (std::vector::resize) and fresh pages for
  // every batch showed up as a third of an install's time.
  void Reserve(size_t bytes);
  std::unique_ptr<char[]> buf_;
  size_t capacity_ = 0;
  size_t used_ = 0;
  uint32_t first_seq_;
  uint32_t seq_;
  std::vector<std::string> what_;  // indexed by seq - first_seq_ - 1
  bool finished_ = false;
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
