#include "forkd/vmm/fuzz/ring_driver.h"

#include <cstring>

#include "forkd/vmm/fuzz/entries.h"

namespace forkd::vmm::fuzz {

Reached& reached() {
  static Reached r;
  return r;
}

using namespace virtio;

uint32_t RingDriver::R(uint64_t off) {
  uint8_t b[4];
  t_->Read(off, b);
  uint32_t v;
  std::memcpy(&v, b, 4);
  return v;
}

void RingDriver::W(uint64_t off, uint32_t v) {
  uint8_t b[4];
  std::memcpy(b, &v, 4);
  t_->Write(off, b);
}

template <typename T>
T RingDriver::Get(uint64_t gpa) const {
  T v{};
  auto s = mem_.Slice(gpa, sizeof(T));
  if (s.ok()) std::memcpy(&v, s->data(), sizeof(T));
  return v;
}

uint32_t RingDriver::Init(size_t queues, uint16_t size, uint32_t features_lo) {
  if (size > kMaxQueueSize) size = kMaxQueueSize;
  W(reg::kStatus, 0);
  queues_.assign(queues, Ring{});
  W(reg::kStatus, kStatusAcknowledge | kStatusDriver);
  W(reg::kDriverFeaturesSel, 1);
  W(reg::kDriverFeatures, 1);  // VIRTIO_F_VERSION_1
  W(reg::kDriverFeaturesSel, 0);
  W(reg::kDriverFeatures, features_lo);
  W(reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  for (size_t q = 0; q < queues; ++q) {
    const uint64_t base = QueueBase(q);
    // A fresh ring: the device's used index and the driver's avail index at 0.
    std::vector<uint8_t> zeros(0x1000, 0);
    Fill(base, zeros);
    W(reg::kQueueSel, static_cast<uint32_t>(q));
    W(reg::kQueueNum, size);
    W(reg::kQueueDescLow, static_cast<uint32_t>(base));
    W(reg::kQueueDriverLow, static_cast<uint32_t>(base + 0x400));
    W(reg::kQueueDeviceLow, static_cast<uint32_t>(base + 0x800));
    W(reg::kQueueReady, 1);
    Ring& r = queues_[q];
    r.size = R(reg::kQueueReady) == 1 ? size : 0;
    for (uint16_t id = r.size; id > 0; --id) r.free_ids.push_back(static_cast<uint16_t>(id - 1));
  }
  W(reg::kStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  return R(reg::kStatus);
}

void RingDriver::Fill(uint64_t gpa, std::span<const uint8_t> bytes) {
  (void)mem_.Write(gpa, bytes);
}

bool RingDriver::Post(size_t q, const std::vector<ChainDesc>& chain) {
  if (q >= queues_.size()) return false;
  Ring& r = queues_[q];
  if (chain.empty() || chain.size() > r.free_ids.size()) return false;
  const uint64_t base = QueueBase(q);
  Ring::Posted p;
  for (size_t k = 0; k < chain.size(); ++k) {
    p.ids.push_back(r.free_ids.back());
    r.free_ids.pop_back();
  }
  p.descs = chain;
  for (size_t k = 0; k < chain.size(); ++k) {
    ChainDesc& desc = p.descs[k];
    if (desc.in_slot) desc.addr = SlotAddr(q, p.ids[k]);
    if (!desc.fill.empty()) Fill(desc.addr, desc.fill);
    desc.fill.clear();
    const bool more = k + 1 < chain.size();
    const uint64_t d = base + 16ULL * p.ids[k];
    Put<uint64_t>(d, desc.addr);
    Put<uint32_t>(d + 8, chain[k].len);
    Put<uint16_t>(d + 12, static_cast<uint16_t>((chain[k].writable ? kDescFlagWrite : 0) |
                                                (more ? kDescFlagNext : 0)));
    Put<uint16_t>(d + 14, more ? p.ids[k + 1] : 0);
  }
  const uint16_t head = p.ids[0];
  r.posted[head] = std::move(p);
  Put<uint16_t>(base + 0x400 + 4 + 2ULL * (r.avail_idx % r.size), head);
  ++r.avail_idx;
  Put<uint16_t>(base + 0x400 + 2, r.avail_idx);
  return true;
}

std::vector<UsedElem> RingDriver::TakeUsed(size_t q) {
  std::vector<UsedElem> out;
  if (q >= queues_.size() || queues_[q].size == 0) return out;
  Ring& r = queues_[q];
  const uint64_t used = QueueBase(q) + 0x800;
  const uint16_t idx = Get<uint16_t>(used + 2);
  // At most a ring's worth: a device that moved its index further has broken
  // the ring, which the harness reports through the heads it finds.
  for (uint32_t n = 0; r.used_seen != idx && n < r.size; ++n) {
    const uint64_t e = used + 4 + 8ULL * (r.used_seen % r.size);
    UsedElem u{Get<uint32_t>(e), Get<uint32_t>(e + 4), {}};
    auto it = u.id <= 0xffff ? r.posted.find(static_cast<uint16_t>(u.id)) : r.posted.end();
    if (it != r.posted.end()) {
      u.posted = std::move(it->second.descs);
      r.free_ids.insert(r.free_ids.end(), it->second.ids.begin(), it->second.ids.end());
      r.posted.erase(it);
    }
    out.push_back(std::move(u));
    ++r.used_seen;
  }
  return out;
}

}  // namespace forkd::vmm::fuzz
