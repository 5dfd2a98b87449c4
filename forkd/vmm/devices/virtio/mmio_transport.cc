#include "forkd/vmm/devices/virtio/mmio_transport.h"

#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/errno_status.h"
#include "forkd/snapshot/byte_io.h"

namespace forkd::vmm::virtio {
namespace {

constexpr uint8_t kStateVersion = 1;
constexpr uint32_t kMaxQueues = 16;
constexpr uint32_t kMaxSpecificBytes = 1 << 20;

void SetLow(uint64_t* v, uint32_t lo) { *v = (*v & ~0xffffffffULL) | lo; }
void SetHigh(uint64_t* v, uint32_t hi) { *v = (*v & 0xffffffffULL) | (uint64_t{hi} << 32); }

}  // namespace

MmioTransport::MmioTransport(std::string name, const GuestMemory& mem,
                             std::unique_ptr<VirtioDevice> device, std::function<void()> irq)
    : name_(std::move(name)), mem_(mem), irq_(std::move(irq)), device_(std::move(device)) {
  for (uint16_t max : device_->queue_max_sizes()) queues_.emplace_back(max);
}

Queue* MmioTransport::SelectedLocked() {
  return s_.queue_sel < queues_.size() ? &queues_[s_.queue_sel] : nullptr;
}

void MmioTransport::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= reg::kConfig) {
    device_->ReadConfig(offset - reg::kConfig, data);
    return;
  }
  // Registers are 32-bit and naturally aligned (4.2.2.2); anything else
  // reads as zero rather than half a register.
  if (data.size() != 4 || offset % 4 != 0) {
    std::memset(data.data(), 0, data.size());
    return;
  }
  uint32_t v = ReadRegLocked(offset);
  std::memcpy(data.data(), &v, 4);
}

uint32_t MmioTransport::ReadRegLocked(uint64_t offset) {
  Queue* q = SelectedLocked();
  switch (offset) {
    case reg::kMagic:
      return kMagicValue;
    case reg::kVersion:
      return kMmioVersion;
    case reg::kDeviceId:
      return device_->device_id();
    case reg::kVendorId:
      return kVendorId;
    case reg::kDeviceFeatures:
      if (s_.device_features_sel > 1) return 0;
      return static_cast<uint32_t>(OfferedFeatures() >> (32 * s_.device_features_sel));
    case reg::kQueueNumMax:
      return q ? q->state().max_size : 0;
    case reg::kQueueReady:
      return q && q->state().ready ? 1 : 0;
    case reg::kInterruptStatus:
      return s_.interrupt_status;
    case reg::kStatus:
      return s_.status;
    case reg::kConfigGeneration:
      return s_.config_generation;
    default:
      return 0;  // write-only or reserved
  }
}

void MmioTransport::Write(uint64_t offset, std::span<const uint8_t> data) {
  bool raise = false;
  {
    std::lock_guard lock(mu_);
    if (offset >= reg::kConfig) {
      device_->WriteConfig(offset - reg::kConfig, data);
    } else if (data.size() == 4 && offset % 4 == 0) {
      uint32_t v;
      std::memcpy(&v, data.data(), 4);
      WriteRegLocked(offset, v, &raise);
    }
  }
  // Outside the lock: the irqfd write never calls back into us, but an
  // injected test callback might.
  if (raise && irq_) irq_();
  ReportError();
}

std::string MmioTransport::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void MmioTransport::ReportError() {
  absl::Status cause;
  {
    std::lock_guard lock(mu_);
    if (pending_error_.ok()) return;
    cause = std::exchange(pending_error_, absl::OkStatus());
  }
  const bool host = IsHostFailure(cause);
  if (on_error_) {
    on_error_(cause, host);
    return;
  }
  (void)std::fprintf(stderr, "forkd-vmm: %s: %s: %s\n", name_.c_str(),
                     host ? "host failure" : "guest broke a queue, device needs reset",
                     cause.ToString().c_str());
}

void MmioTransport::WriteRegLocked(uint64_t offset, uint32_t v, bool* raise) {
  Queue* q = SelectedLocked();
  // Queue setup is allowed between FEATURES_OK and DRIVER_OK, on a queue
  // that is not live (4.2.3.2); later writes would move rings under the
  // device's feet and are ignored.
  const bool queue_setup = (s_.status & kStatusFeaturesOk) && !(s_.status & kStatusDriverOk) &&
                           q != nullptr && !q->state().ready;
  switch (offset) {
    case reg::kDeviceFeaturesSel:
      s_.device_features_sel = v;
      break;
    case reg::kDriverFeaturesSel:
      s_.driver_features_sel = v;
      break;
    case reg::kDriverFeatures:
      if ((s_.status & kStatusDriver) && !(s_.status & kStatusFeaturesOk) &&
          s_.driver_features_sel <= 1) {
        const int shift = 32 * static_cast<int>(s_.driver_features_sel);
        s_.driver_features =
            (s_.driver_features & ~(0xffffffffULL << shift)) | (uint64_t{v} << shift);
      }
      break;
    case reg::kQueueSel:
      s_.queue_sel = v;
      break;
    case reg::kQueueNum:
      // A size above QueueNumMax is kept as 0 (no size): QueueReady refuses
      // it either way, and the saved state stays one restore() accepts (a
      // larger size there reads as corruption, so a guest could otherwise
      // make its own snapshots unrestorable).
      if (queue_setup) q->state().size = v <= q->state().max_size ? static_cast<uint16_t>(v) : 0;
      break;
    case reg::kQueueReady:
      if (q == nullptr || !(s_.status & kStatusFeaturesOk)) break;
      if (v == 1 && queue_setup) {
        // Refuse a queue whose rings do not fit guest memory right away, so
        // the driver sees QueueReady stay 0.
        if (q->Validate(mem_).ok()) q->state().ready = true;
      } else if (v == 0) {
        q->state().ready = false;
      }
      break;
    case reg::kQueueNotify:
      mmio_notifies_.fetch_add(1, std::memory_order_relaxed);
      ProcessLocked(v, raise);
      break;
    case reg::kInterruptAck:
      s_.interrupt_status &= ~v;
      break;
    case reg::kStatus:
      WriteStatusLocked(v);
      break;
    case reg::kQueueDescLow:
      if (queue_setup) SetLow(&q->state().desc_addr, v);
      break;
    case reg::kQueueDescHigh:
      if (queue_setup) SetHigh(&q->state().desc_addr, v);
      break;
    case reg::kQueueDriverLow:
      if (queue_setup) SetLow(&q->state().avail_addr, v);
      break;
    case reg::kQueueDriverHigh:
      if (queue_setup) SetHigh(&q->state().avail_addr, v);
      break;
    case reg::kQueueDeviceLow:
      if (queue_setup) SetLow(&q->state().used_addr, v);
      break;
    case reg::kQueueDeviceHigh:
      if (queue_setup) SetHigh(&q->state().used_addr, v);
      break;
    default:
      break;  // read-only or reserved
  }
}

void MmioTransport::WriteStatusLocked(uint32_t v) {
  if (v == 0) {
    ResetLocked();
    return;
  }
  // The driver only ever adds bits (3.1.1); anything else is ignored so the
  // status machine cannot go backwards without a reset.
  if ((v & s_.status) != s_.status) return;
  const uint32_t added = v & ~s_.status;
  if (added & kStatusFeaturesOk) {
    // Accept only a subset of what was offered, and only a modern driver:
    // this transport has no legacy interface. Leaving FEATURES_OK clear is
    // how the device says no (the driver reads it back).
    const bool subset = (s_.driver_features & ~OfferedFeatures()) == 0;
    if (!subset || !(s_.driver_features & kFeatureVersion1) || !(s_.status & kStatusDriver)) {
      v &= ~kStatusFeaturesOk;
    }
  }
  if ((added & kStatusDriverOk) && !(v & kStatusFeaturesOk)) v &= ~kStatusDriverOk;
  s_.status = v;
}

void MmioTransport::ProcessLocked(uint32_t index, bool* raise) {
  if (!(s_.status & kStatusDriverOk) || (s_.status & (kStatusNeedsReset | kStatusFailed))) return;
  if (index >= queues_.size() || !queues_[index].state().ready) return;
  auto used = device_->ProcessQueue(index, queues_, mem_);
  if (!used.ok()) {
    // The cause is kept and reported (ReportError, outside the lock): a
    // device that went dead must say why.
    const absl::Status cause = Annotate(used.status(), absl::StrCat(name_, " queue ", index));
    pending_error_ = IsHostFailure(used.status()) ? HostFailure(cause) : cause;
    last_error_ = cause.ToString();
    NeedsResetLocked(raise);
    return;
  }
  if (*used) {
    s_.interrupt_status |= kInterruptUsedBuffer;
    *raise = true;
  }
}

void MmioTransport::NeedsResetLocked(bool* raise) {
  // The guest broke a queue: stop using it until the driver resets us, and
  // tell it through a configuration-change interrupt (2.1.2).
  s_.status |= kStatusNeedsReset;
  s_.interrupt_status |= kInterruptConfigChange;
  *raise = true;
}

void MmioTransport::ResetLocked() {
  const uint32_t generation = s_.config_generation;
  s_ = TransportState{};
  s_.config_generation = generation;
  for (auto& q : queues_) q.Reset();
  device_->Reset();
}

void MmioTransport::Kick(uint32_t index) {
  bool raise = false;
  {
    std::lock_guard lock(mu_);
    ProcessLocked(index, &raise);
  }
  if (raise && irq_) irq_();
  ReportError();
}

TransportState MmioTransport::save() const {
  std::lock_guard lock(mu_);
  TransportState s = s_;
  s.queues.clear();
  for (const auto& q : queues_) s.queues.push_back(q.state());
  return s;
}

absl::Status MmioTransport::restore(const TransportState& s) {
  std::lock_guard lock(mu_);
  if (s.queues.size() != queues_.size()) {
    return absl::DataLossError(absl::StrCat(name_, " state has ", s.queues.size(),
                                            " queues, device has ", queues_.size()));
  }
  for (size_t i = 0; i < queues_.size(); ++i) {
    const QueueState& qs = s.queues[i];
    if (qs.max_size != queues_[i].state().max_size || qs.size > qs.max_size) {
      return absl::DataLossError(absl::StrCat(name_, " queue ", i, " size ", qs.size, "/",
                                              qs.max_size, " does not match the device's maximum ",
                                              queues_[i].state().max_size));
    }
  }
  s_ = s;
  s_.queues.clear();
  for (size_t i = 0; i < queues_.size(); ++i) queues_[i].state() = s.queues[i];
  return absl::OkStatus();
}

DeviceState MmioTransport::SaveDevice() const {
  TransportState s = save();
  snapshot::ByteWriter w;
  w.U8(kStateVersion);
  {
    std::lock_guard lock(mu_);
    w.U32(device_->device_id());
  }
  w.U32(s.device_features_sel);
  w.U32(s.driver_features_sel);
  w.U64(s.driver_features);
  w.U32(s.status);
  w.U32(s.queue_sel);
  w.U32(s.interrupt_status);
  w.U32(s.config_generation);
  w.U32(static_cast<uint32_t>(s.queues.size()));
  for (const auto& q : s.queues) {
    w.U16(q.max_size);
    w.U16(q.size);
    w.Bool(q.ready);
    w.U64(q.desc_addr);
    w.U64(q.avail_addr);
    w.U64(q.used_addr);
    w.U16(q.next_avail);
    w.U16(q.next_used);
  }
  std::vector<uint8_t> specific;
  {
    std::lock_guard lock(mu_);
    specific = device_->SaveSpecific();
  }
  w.Blob(specific);
  return {name_, w.Take()};
}

absl::Status MmioTransport::RestoreDevice(const DeviceState& d) {
  if (d.name != name_) {
    return absl::InvalidArgumentError(absl::StrCat("state of ", d.name, " given to ", name_));
  }
  snapshot::ByteReader r(d.bytes, name_);
  FORKD_ASSIGN_OR_RETURN(uint8_t version, r.U8("version"));
  if (version != kStateVersion) {
    return absl::DataLossError(absl::StrCat(name_, " state version ", version, " unsupported"));
  }
  FORKD_ASSIGN_OR_RETURN(uint32_t id, r.U32("device_id"));
  if (id != device_->device_id()) {
    return absl::DataLossError(absl::StrCat(name_, " state is for device id ", id));
  }
  TransportState s;
  FORKD_ASSIGN_OR_RETURN(s.device_features_sel, r.U32("device_features_sel"));
  FORKD_ASSIGN_OR_RETURN(s.driver_features_sel, r.U32("driver_features_sel"));
  FORKD_ASSIGN_OR_RETURN(s.driver_features, r.U64("driver_features"));
  FORKD_ASSIGN_OR_RETURN(s.status, r.U32("status"));
  FORKD_ASSIGN_OR_RETURN(s.queue_sel, r.U32("queue_sel"));
  FORKD_ASSIGN_OR_RETURN(s.interrupt_status, r.U32("interrupt_status"));
  FORKD_ASSIGN_OR_RETURN(s.config_generation, r.U32("config_generation"));
  FORKD_ASSIGN_OR_RETURN(uint32_t nq, r.U32("queue_count"));
  if (nq > kMaxQueues) return absl::DataLossError(absl::StrCat(name_, ": ", nq, " queues"));
  for (uint32_t i = 0; i < nq; ++i) {
    QueueState q;
    FORKD_ASSIGN_OR_RETURN(q.max_size, r.U16("max_size"));
    FORKD_ASSIGN_OR_RETURN(q.size, r.U16("size"));
    FORKD_ASSIGN_OR_RETURN(q.ready, r.Bool("ready"));
    FORKD_ASSIGN_OR_RETURN(q.desc_addr, r.U64("desc_addr"));
    FORKD_ASSIGN_OR_RETURN(q.avail_addr, r.U64("avail_addr"));
    FORKD_ASSIGN_OR_RETURN(q.used_addr, r.U64("used_addr"));
    FORKD_ASSIGN_OR_RETURN(q.next_avail, r.U16("next_avail"));
    FORKD_ASSIGN_OR_RETURN(q.next_used, r.U16("next_used"));
    s.queues.push_back(q);
  }
  FORKD_ASSIGN_OR_RETURN(std::vector<uint8_t> specific, r.Blob(kMaxSpecificBytes, "specific"));
  FORKD_RETURN_IF_ERROR(r.Finish());
  FORKD_RETURN_IF_ERROR(restore(s));
  bool raise = false;
  {
    std::lock_guard lock(mu_);
    FORKD_RETURN_IF_ERROR(device_->RestoreSpecific(specific));
    if (device_->ConsumeConfigChange()) {
      ++s_.config_generation;
      s_.interrupt_status |= kInterruptConfigChange;
      raise = true;
    }
  }
  if (raise && irq_) irq_();
  return absl::OkStatus();
}

}  // namespace forkd::vmm::virtio
