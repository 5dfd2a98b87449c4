#include "forkd/daemon/service.h"

#include <chrono>

#include "forkd/sandbox/ids.h"
#include "spdlog/spdlog.h"

namespace forkd::daemon {
using namespace std::chrono_literals;

void PeerRegistry::Set(const std::string& peer, const std::string& who) {
  std::lock_guard lock(mu_);
  peers_[peer] = who;
}

std::string PeerRegistry::Who(const std::string& peer) const {
  std::lock_guard lock(mu_);
  auto it = peers_.find(peer);
  return it == peers_.end() ? std::string() : it->second;
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status Service::Admit(grpc::ServerContext* ctx, const char* method, const std::string& what) {
  const std::string peer = ctx->peer();
  std::string who = peers_.Who(peer);
  if (who.empty()) {
    auto auth = ctx->auth_context();
    const bool ssl = auth && !auth->FindPropertyValues("transport_security_type").empty() &&
                     auth->FindPropertyValues("transport_security_type").front() == "ssl";
    if (tls_ || ssl) {
      if (!auth || auth->FindPropertyValues("x509_pem_cert").empty()) {
        spdlog::warn("call {} from {} refused: no client certificate", method, peer);
        return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                            "a client certificate is required on TCP");
      }
      std::string sans;
      bool allowed = false;
      for (const auto& san : auth->FindPropertyValues("x509_subject_alternative_name")) {
        const std::string s(san.data(), san.size());
        sans += (sans.empty() ? "" : ",") + s;
        allowed = allowed || allowed_sans_.count(s) != 0;
      }
      if (!allowed) {
        spdlog::warn("call {} from {} refused: client SAN [{}] not allowed", method, peer,
                     sandbox::Printable(sans, 200));
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "client certificate SAN is not on this forkd's allow-list");
      }
      who = "san=" + sandbox::Printable(sans, 200);
    } else {
      who = "insecure-loopback";
    }
  }
  spdlog::info("call {} peer={} [{}] {}", method, peer, who, what);
  return grpc::Status::OK;
}

grpc::Status Service::CreateTemplate(grpc::ServerContext* ctx, const v1::CreateTemplateRequest* req,
                                     grpc::ServerWriter<v1::TemplateProgress>* out) {
  if (auto a = Admit(ctx, "CreateTemplate", "template=" + sandbox::Printable(req->template_id()));
      !a.ok()) {
    return a;
  }
  auto r = node_.CreateTemplate(*req, [&](const v1::TemplateProgress& p) { out->Write(p); });
  return ToGrpc(r.status());
}

grpc::Status Service::DeleteTemplate(grpc::ServerContext* ctx, const v1::DeleteTemplateRequest* req,
                                     v1::DeleteTemplateResponse* resp) {
  if (auto a = Admit(ctx, "DeleteTemplate", "template=" + sandbox::Printable(req->template_id()));
      !a.ok()) {
    return a;
  }
  auto r = node_.DeleteTemplate(*req);
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::ListTemplates(grpc::ServerContext* ctx, const v1::ListTemplatesRequest*,
                                    v1::ListTemplatesResponse* resp) {
  if (auto a = Admit(ctx, "ListTemplates", ""); !a.ok()) return a;
  *resp = node_.ListTemplates();
  return grpc::Status::OK;
}

grpc::Status Service::Fork(grpc::ServerContext* ctx, const v1::ForkRequest* req,
                           v1::ForkResponse* resp) {
  const size_t n =
      req->sandboxes_size() ? static_cast<size_t>(req->sandboxes_size()) : req->count();
  if (auto a =
          Admit(ctx, "Fork",
                "template=" + sandbox::Printable(req->template_id()) + " n=" + std::to_string(n));
      !a.ok()) {
    return a;
  }
  auto r = node_.Fork(*req);
  if (r.ok()) *resp = *r;
  if (!r.ok())
    spdlog::warn("Fork of {} failed: {}", sandbox::Printable(req->template_id()),
                 r.status().ToString());
  return ToGrpc(r.status());
}

grpc::Status Service::ForkRunning(grpc::ServerContext* ctx, const v1::ForkRunningRequest* req,
                                  v1::ForkResponse* resp) {
  if (auto a = Admit(ctx, "ForkRunning", "sandbox=" + sandbox::Printable(req->sandbox_id()));
      !a.ok()) {
    return a;
  }
  auto r = node_.ForkRunning(*req);
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::Exec(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                           v1::ExecResponse* resp) {
  // argv is logged by its first word only: arguments may carry secrets.
  if (auto a = Admit(ctx, "Exec",
                     "sandbox=" + sandbox::Printable(req->sandbox_id()) +
                         " argv0=" + sandbox::Printable(req->argv_size() ? req->argv(0) : "", 40));
      !a.ok()) {
    return a;
  }
  auto r = node_.Exec(*req);
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::ExecStream(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                                 grpc::ServerWriter<v1::ExecChunk>* out) {
  if (auto a = Admit(ctx, "ExecStream",
                     "sandbox=" + sandbox::Printable(req->sandbox_id()) +
                         " argv0=" + sandbox::Printable(req->argv_size() ? req->argv(0) : "", 40));
      !a.ok()) {
    return a;
  }
  // The agent protocol answers Exec once, with both streams: they are sent
  // as one chunk each, then the exit.
  auto r = node_.Exec(*req);
  if (!r.ok()) return ToGrpc(r.status());
  v1::ExecChunk c;
  if (!r->stdout().empty()) {
    c.set_stdout(r->stdout());
    out->Write(c);
  }
  if (!r->stderr().empty()) {
    c.set_stderr(r->stderr());
    out->Write(c);
  }
  v1::ExecResponse exit = *r;
  exit.clear_stdout();
  exit.clear_stderr();
  *c.mutable_exit() = exit;
  out->Write(c);
  return grpc::Status::OK;
}

grpc::Status Service::ReadFile(grpc::ServerContext* ctx, const v1::ReadFileRequest* req,
                               v1::ReadFileResponse* resp) {
  if (auto a = Admit(ctx, "ReadFile",
                     "sandbox=" + sandbox::Printable(req->sandbox_id()) +
                         " path=" + sandbox::Printable(req->path()));
      !a.ok()) {
    return a;
  }
  auto r = node_.ReadFile(*req);
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::WriteFile(grpc::ServerContext* ctx, const v1::WriteFileRequest* req,
                                v1::WriteFileResponse* resp) {
  if (auto a = Admit(ctx, "WriteFile",
                     "sandbox=" + sandbox::Printable(req->sandbox_id()) +
                         " path=" + sandbox::Printable(req->path()));
      !a.ok()) {
    return a;
  }
  auto r = node_.WriteFile(*req);
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::Terminate(grpc::ServerContext* ctx, const v1::TerminateRequest* req,
                                v1::TerminateResponse*) {
  if (auto a = Admit(ctx, "Terminate", "sandbox=" + sandbox::Printable(req->sandbox_id()));
      !a.ok()) {
    return a;
  }
  return ToGrpc(node_.Terminate(req->sandbox_id()));
}

grpc::Status Service::ListSandboxes(grpc::ServerContext* ctx, const v1::ListSandboxesRequest* req,
                                    v1::ListSandboxesResponse* resp) {
  if (auto a = Admit(ctx, "ListSandboxes", ""); !a.ok()) return a;
  auto r = node_.ListSandboxes(*req);
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::GetSandbox(grpc::ServerContext* ctx, const v1::GetSandboxRequest* req,
                                 v1::Sandbox* resp) {
  if (auto a = Admit(ctx, "GetSandbox", "sandbox=" + sandbox::Printable(req->sandbox_id()));
      !a.ok()) {
    return a;
  }
  auto r = node_.GetSandbox(req->sandbox_id());
  if (r.ok()) *resp = *r;
  return ToGrpc(r.status());
}

grpc::Status Service::GetCapacity(grpc::ServerContext* ctx, const v1::GetCapacityRequest*,
                                  v1::Capacity* resp) {
  if (auto a = Admit(ctx, "GetCapacity", ""); !a.ok()) return a;
  *resp = node_.GetCapacity();
  return grpc::Status::OK;
}

grpc::Status Service::WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest* req,
                                  grpc::ServerWriter<v1::Event>* out) {
  if (auto a = Admit(ctx, "WatchEvents", "sandbox=" + sandbox::Printable(req->sandbox_id()));
      !a.ok()) {
    return a;
  }
  auto w = node_.events().Subscribe();
  grpc::Status result = grpc::Status::OK;
  // Send headers now, so a client knows it is subscribed before any event.
  out->SendInitialMetadata();
  while (!ctx->IsCancelled()) {
    auto e = w->Next(200ms);
    if (w->overflowed()) {
      result = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "event stream fell too far behind; resubscribe");
      break;
    }
    if (!e) continue;
    if (!req->sandbox_id().empty() && e->sandbox_id() != req->sandbox_id()) continue;
    if (!out->Write(*e)) break;
  }
  node_.events().Unsubscribe(w);
  return result;
}

}  // namespace forkd::daemon
