#include "agent/server.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "agent/exec.h"
#include "agent/files.h"
#include "agent/framing.h"
#include "agent/protocol.h"
#include "agent/reseed.h"
#include "common/errno_status.h"

namespace forkd::agent {
namespace {

std::string Message(const absl::Status& s) { return std::string(ToStd(s.message())); }

// Creates every missing directory above `path` (like mkdir -p of its dirname).
absl::Status MakeParents(const std::string& path) {
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    const std::string dir = path.substr(0, pos);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("mkdir ", dir));
    }
  }
  return absl::OkStatus();
}

}  // namespace

AgentServer::AgentServer(AgentOptions options)
    : options_(std::move(options)), stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!options_.log) {
    options_.log = [](std::string_view m) {
      (void)std::fprintf(stderr, "forkd-agent: %.*s\n", static_cast<int>(m.size()), m.data());
    };
  }
  // Without the eventfd Stop() could not wake Serve(); that is a broken process.
  if (!stop_fd_) Log(Message(ErrnoStatus(errno, "eventfd (Stop will not wake Serve)")));
}

AgentServer::~AgentServer() {
  Stop();
  // Join without holding conns_mu_: a finishing thread takes it to close its fd.
  // splice keeps every Connection at its address, which the threads rely on.
  std::list<Connection> conns;
  {
    std::lock_guard lock(conns_mu_);
    conns.splice(conns.begin(), conns_);
  }
  for (auto& c : conns) c.thread.join();
}

void AgentServer::Log(std::string_view message) { options_.log(message); }

void AgentServer::Stop() {
  const uint64_t one = 1;
  if (stop_fd_ && ::write(stop_fd_.get(), &one, sizeof(one)) < 0 && errno != EAGAIN) {
    Log(Message(ErrnoStatus(errno, "write stop eventfd")));
  }
  std::lock_guard lock(conns_mu_);
  // Wakes connection threads blocked on their socket; they then see EOF.
  for (auto& c : conns_) {
    if (c.fd) (void)::shutdown(c.fd.get(), SHUT_RDWR);
  }
}

void AgentServer::ReapFinished() {
  std::lock_guard lock(conns_mu_);
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (it->done.load()) {
      it->thread.join();
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::Status AgentServer::Serve(int listen_fd) {
  for (;;) {
    pollfd pfds[2] = {{.fd = listen_fd, .events = POLLIN, .revents = 0},
                      {.fd = stop_fd_.get(), .events = POLLIN, .revents = 0}};
    if (::poll(pfds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll listening socket");
    }
    if (pfds[1].revents != 0) return absl::OkStatus();
    if (pfds[0].revents == 0) continue;
    UniqueFd conn(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) {
      // Per-connection failures (the peer reset before we accepted, fd limits)
      // must not end the server.
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED || errno == EPROTO ||
          errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        Log(Message(ErrnoStatus(errno, "accept")));
        continue;
      }
      return ErrnoStatus(errno, "accept");
    }
    ReapFinished();
    std::lock_guard lock(conns_mu_);
    if (conns_.size() >= options_.max_connections) {
      Log(absl::StrCat("refusing connection: ", conns_.size(), " already open"));
      continue;  // `conn` closes here
    }
    Connection& c = conns_.emplace_back();
    c.fd = std::move(conn);
    c.thread = std::thread([this, &c] {
      ServeConnection(c.fd.get());
      {
        // Close now so the peer sees EOF; under the lock because Stop() may be
        // shutting this fd down concurrently.
        std::lock_guard conn_lock(conns_mu_);
        c.fd.reset();
      }
      c.done.store(true);
    });
  }
}

bool AgentServer::SendResponse(int fd, const v1::Response& response) {
  std::string bytes;
  if (!response.SerializeToString(&bytes)) {
    Log("cannot serialize a response");
    return false;
  }
  if (bytes.size() > kMaxFrameBytes) {
    // Every reply is capped well below the frame size; this is a bug, but the
    // host still deserves an answer rather than a hang.
    Log(absl::StrCat("response of ", bytes.size(), " bytes exceeds the frame limit"));
    v1::Response err;
    err.set_id(response.id());
    err.mutable_error()->set_code(v1::ErrorResponse::INTERNAL);
    err.mutable_error()->set_message("response exceeds the frame limit");
    return SendResponse(fd, err);
  }
  const auto s = WriteFrame(fd, bytes, DeadlineIn(options_.frame_timeout), kMaxFrameBytes);
  if (!s.ok()) Log(absl::StrCat("send response: ", s.message()));
  return s.ok();
}

void AgentServer::SendError(int fd, uint64_t id, v1::ErrorResponse::Code code,
                            std::string_view message) {
  v1::Response resp;
  resp.set_id(id);
  resp.mutable_error()->set_code(code);
  resp.mutable_error()->set_message(std::string(message));
  (void)SendResponse(fd, resp);  // failures are logged; the caller decides what next
}

void AgentServer::ServeConnection(int fd) {
  for (;;) {
    // Wait for the next request (or Stop) without holding a frame deadline.
    pollfd pfds[2] = {{.fd = fd, .events = POLLIN, .revents = 0},
                      {.fd = stop_fd_.get(), .events = POLLIN, .revents = 0}};
    const auto idle_ms = options_.idle_timeout.count();
    const int n = ::poll(pfds, 2, static_cast<int>(std::min<int64_t>(idle_ms, INT_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      Log(Message(ErrnoStatus(errno, "poll connection")));
      return;
    }
    if (n == 0) {
      Log("closing idle connection");
      return;
    }
    if (pfds[1].revents != 0) return;

    auto frame = ReadFrame(fd, DeadlineIn(options_.frame_timeout), kMaxFrameBytes);
    if (!frame.ok()) {
      if (frame.status().code() == absl::StatusCode::kResourceExhausted) {
        // We cannot skip the body without reading it; answer, then hang up.
        SendError(fd, 0, v1::ErrorResponse::FRAME_TOO_LARGE, ToStd(frame.status().message()));
      }
      if (ToStd(frame.status().message()) != "connection closed") {
        Log(absl::StrCat("closing connection: ", frame.status().message()));
      }
      return;
    }
    v1::Request req;
    if (!req.ParseFromString(*frame)) {
      // The frame boundary is intact, so the connection can go on.
      SendError(fd, 0, v1::ErrorResponse::MALFORMED, "frame is not a valid Request");
      continue;
    }
    if (req.kind_case() == v1::Request::KIND_NOT_SET) {
      SendError(fd, req.id(), v1::ErrorResponse::UNKNOWN_REQUEST,
                "no request kind this agent knows is set");
      continue;
    }
    const v1::Response resp = Handle(req);
    if (req.has_notify_forked()) {
      // The entropy is this fork's key material: leave no copy in freed memory.
      std::string* entropy = req.mutable_notify_forked()->mutable_entropy();
      explicit_bzero(entropy->data(), entropy->size());
      explicit_bzero(frame->data(), frame->size());
    }
    if (!SendResponse(fd, resp)) return;
  }
}

v1::Response AgentServer::Handle(const v1::Request& req) {
  v1::Response resp;
  resp.set_id(req.id());
  switch (req.kind_case()) {
    case v1::Request::kPing:
      resp.mutable_ping()->set_agent_version(kAgentVersion);
      resp.mutable_ping()->set_protocol_version(kProtocolVersion);
      break;
    case v1::Request::kNotifyForked:
      *resp.mutable_notify_forked() = NotifyForked(req.notify_forked());
      break;
    case v1::Request::kExec:
      *resp.mutable_exec() = RunExec(req.exec());
      break;
    case v1::Request::kReadFile:
      *resp.mutable_read_file() = ReadFile(req.read_file());
      break;
    case v1::Request::kWriteFile:
      *resp.mutable_write_file() = WriteFile(req.write_file());
      break;
    case v1::Request::KIND_NOT_SET:
      resp.mutable_error()->set_code(v1::ErrorResponse::UNKNOWN_REQUEST);
      resp.mutable_error()->set_message("no request kind this agent knows is set");
      break;
  }
  return resp;
}

v1::NotifyForkedResponse AgentServer::NotifyForked(const v1::NotifyForkedRequest& req) {
  std::lock_guard lock(notify_mu_);
  v1::NotifyForkedResponse resp;
  resp.set_generation(req.generation());

  // Reseed first: everything after it (and every program in the guest) should
  // draw from a CRNG this fork does not share with its siblings.
  if (auto s = ReseedCrng(options_.random_device, req.entropy(), options_.random_ioctl); s.ok()) {
    resp.set_reseeded(true);
  } else {
    resp.set_error(Message(s));
  }

  if (auto step = SyncWallClock(req.host_wall_clock_ns(), options_.clock); step.ok()) {
    resp.set_clock_step_ns(*step);
  } else {
    resp.set_clock_error(Message(step.status()));
  }

  if (req.has_network()) {
    auto config = ParseNetwork(req.network());
    if (!config.ok()) {
      resp.set_network_error(Message(config.status()));
    } else if (!options_.net) {
      resp.set_network_error("this agent was started without network configuration");
    } else if (auto s = options_.net->Apply(*config); !s.ok()) {
      resp.set_network_error(Message(s));
    }
  }

  if (auto s = WriteGeneration(req.generation()); !s.ok()) {
    resp.set_generation_error(Message(s));
  }

  // Counts and outcomes only: the entropy is key material and is never logged.
  Log(absl::StrCat(
      "NotifyForked generation ", req.generation(),
      ": reseeded=", resp.reseeded() ? "true" : "false", " clock_step_ns=", resp.clock_step_ns(),
      resp.error().empty() ? "" : " error: ", resp.error(),
      resp.clock_error().empty() ? "" : " clock: ", resp.clock_error(),
      resp.network_error().empty() ? "" : " network: ", resp.network_error(),
      resp.generation_error().empty() ? "" : " generation: ", resp.generation_error()));
  return resp;
}

absl::Status AgentServer::WriteGeneration(uint64_t generation) {
  const std::string& path = options_.generation_file;
  FORKD_RETURN_IF_ERROR(MakeParents(path));
  // Write a temporary file and rename it over, so a reader never sees a torn value.
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return ErrnoStatus(errno, absl::StrCat("open ", tmp));
  const std::string text = absl::StrCat(generation, "\n");
  const ssize_t n = ::write(fd.get(), text.data(), text.size());
  if (n < 0) return ErrnoStatus(errno, absl::StrCat("write ", tmp));
  if (static_cast<size_t>(n) != text.size()) {
    return absl::InternalError(absl::StrCat("short write to ", tmp));
  }
  if (::close(fd.release()) != 0) return ErrnoStatus(errno, absl::StrCat("close ", tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace forkd::agent
