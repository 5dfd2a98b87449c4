#include "forkd/sandbox/events.h"

#include <algorithm>

namespace forkd::sandbox {

std::optional<v1::Event> EventHub::Watcher::Next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !queue_.empty() || overflowed_; });
  if (queue_.empty()) return std::nullopt;
  v1::Event e = std::move(queue_.front());
  queue_.pop_front();
  return e;
}

bool EventHub::Watcher::overflowed() const {
  std::lock_guard lock(mu_);
  return overflowed_;
}

std::shared_ptr<EventHub::Watcher> EventHub::Subscribe() {
  auto w = std::make_shared<Watcher>();
  std::lock_guard lock(mu_);
  watchers_.push_back(w);
  return w;
}

void EventHub::Unsubscribe(const std::shared_ptr<Watcher>& w) {
  std::lock_guard lock(mu_);
  watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), w), watchers_.end());
}

void EventHub::Publish(v1::Event event) {
  event.set_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count());
  std::lock_guard lock(mu_);
  for (const auto& w : watchers_) {
    {
      std::lock_guard wl(w->mu_);
      if (w->queue_.size() >= kMaxQueued) {
        w->overflowed_ = true;
      } else {
        w->queue_.push_back(event);
      }
    }
    w->cv_.notify_all();
  }
}

}  // namespace forkd::sandbox
