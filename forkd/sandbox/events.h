// Lifecycle events fanned out to every WatchEvents stream. Each watcher has
// its own bounded queue; a watcher that falls more than kMaxQueued events
// behind is told so (its stream ends with an error) instead of slowing forkd.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "forkd/api/forkd.pb.h"

namespace forkd::sandbox {

class EventHub {
 public:
  static constexpr size_t kMaxQueued = 4096;

  class Watcher {
   public:
    // The next event, or nullopt after `timeout` (the caller checks for a
    // cancelled stream and waits again). overflowed() tells a dropped stream.
    std::optional<v1::Event> Next(std::chrono::milliseconds timeout);
    bool overflowed() const;

   private:
    friend class EventHub;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<v1::Event> queue_;
    bool overflowed_ = false;
  };

  std::shared_ptr<Watcher> Subscribe();
  void Unsubscribe(const std::shared_ptr<Watcher>& w);
  // Stamps the time and delivers to every watcher.
  void Publish(v1::Event event);

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<Watcher>> watchers_;
};

}  // namespace forkd::sandbox
