// The forkd.v1.Forkd gRPC service over a pipeline::Node: authorization of
// every call (unix peers by their credentials, TCP peers by their client
// certificate's SAN), one log line per call naming the peer, and the
// mapping of absl::Status to gRPC status codes.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "forkd/api/forkd.grpc.pb.h"
#include "forkd/pipeline/node.h"
#include "grpcpp/grpcpp.h"

namespace forkd::daemon {

// Unix peers, by the transport's peer string for their connection ("fd:N"):
// who is on the other side (SO_PEERCRED at accept).
class PeerRegistry {
 public:
  void Set(const std::string& peer, const std::string& who);
  std::string Who(const std::string& peer) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> peers_;
};

class Service final : public v1::Forkd::Service {
 public:
  Service(pipeline::Node& node, const PeerRegistry& peers, std::set<std::string> allowed_sans,
          bool tls)
      : node_(node), peers_(peers), allowed_sans_(std::move(allowed_sans)), tls_(tls) {}

  grpc::Status CreateTemplate(grpc::ServerContext* ctx, const v1::CreateTemplateRequest* req,
                              grpc::ServerWriter<v1::TemplateProgress>* out) override;
  grpc::Status DeleteTemplate(grpc::ServerContext* ctx, const v1::DeleteTemplateRequest* req,
                              v1::DeleteTemplateResponse* resp) override;
  grpc::Status ListTemplates(grpc::ServerContext* ctx, const v1::ListTemplatesRequest* req,
                             v1::ListTemplatesResponse* resp) override;
  grpc::Status Fork(grpc::ServerContext* ctx, const v1::ForkRequest* req,
                    v1::ForkResponse* resp) override;
  grpc::Status ForkRunning(grpc::ServerContext* ctx, const v1::ForkRunningRequest* req,
                           v1::ForkResponse* resp) override;
  grpc::Status Exec(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                    v1::ExecResponse* resp) override;
  grpc::Status ExecStream(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                          grpc::ServerWriter<v1::ExecChunk>* out) override;
  grpc::Status ReadFile(grpc::ServerContext* ctx, const v1::ReadFileRequest* req,
                        v1::ReadFileResponse* resp) override;
  grpc::Status WriteFile(grpc::ServerContext* ctx, const v1::WriteFileRequest* req,
                         v1::WriteFileResponse* resp) override;
  grpc::Status Terminate(grpc::ServerContext* ctx, const v1::TerminateRequest* req,
                         v1::TerminateResponse* resp) override;
  grpc::Status ListSandboxes(grpc::ServerContext* ctx, const v1::ListSandboxesRequest* req,
                             v1::ListSandboxesResponse* resp) override;
  grpc::Status GetSandbox(grpc::ServerContext* ctx, const v1::GetSandboxRequest* req,
                          v1::Sandbox* resp) override;
  grpc::Status GetCapacity(grpc::ServerContext* ctx, const v1::GetCapacityRequest* req,
                           v1::Capacity* resp) override;
  grpc::Status WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest* req,
                           grpc::ServerWriter<v1::Event>* out) override;

 private:
  // Authorizes the call and logs it; `what` never holds secret values.
  grpc::Status Admit(grpc::ServerContext* ctx, const char* method, const std::string& what);

  pipeline::Node& node_;
  const PeerRegistry& peers_;
  std::set<std::string> allowed_sans_;
  bool tls_;
};

grpc::Status ToGrpc(const absl::Status& s);

}  // namespace forkd::daemon
