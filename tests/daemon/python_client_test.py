#!/usr/bin/python3
"""A client not written in C++: Python gRPC stubs generated from
forkd/api/forkd.proto (python3-grpc-tools) run CreateTemplate, Fork, Exec
and Terminate against a real forkd on its unix socket.

argv: <forkd> <vmm> <probe guest> <repo root> <forkd-vmm-keeper>. Exits 77 (skip) unless root.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def main():
    forkd, vmm, probe, root, keeper = sys.argv[1:6]
    if os.geteuid() != 0:
        print("SKIP: needs root (network namespaces, taps, nftables)")
        return 77
    try:
        import grpc
        from grpc_tools import protoc
    except ImportError as e:
        print(f"FAIL: python3-grpcio / python3-grpc-tools missing: {e}")
        return 1
    tmp = tempfile.mkdtemp(prefix="forkd_py.")
    proc = None
    try:
        gen = os.path.join(tmp, "gen")
        os.makedirs(gen)
        rc = protoc.main(["protoc", f"-I{root}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                          os.path.join(root, "forkd/api/forkd.proto")])
        assert rc == 0, f"protoc failed: {rc}"
        sys.path.insert(0, gen)
        from forkd.api import forkd_pb2 as pb, forkd_pb2_grpc as rpc

        sock = os.path.join(tmp, "forkd.sock")
        log = open(os.path.join(tmp, "forkd.log"), "w")
        proc = subprocess.Popen([forkd, "--data-dir", os.path.join(tmp, "data"), "--listen",
                                 "unix:" + sock, "--vmm", vmm, "--vmm-keeper", keeper,
                                 "--probe-guest", probe,
                                 # the client is the subject here; cgroups are daemon_test's
                                 "--no-vmm-cgroup"],
                                stderr=log)
        channel = grpc.insecure_channel("unix:" + sock)
        grpc.channel_ready_future(channel).result(timeout=60)  # hang guard
        api = rpc.ForkdStub(channel)

        stages = [p.stage for p in api.CreateTemplate(
            pb.CreateTemplateRequest(template_id="py", probe=pb.ProbeGuest()))]
        assert stages[-1] == pb.TemplateProgress.DONE, stages
        resp = api.Fork(pb.ForkRequest(template_id="py", count=2))
        assert len(resp.sandboxes) == 2, resp
        for sb in resp.sandboxes:
            assert sb.state == pb.Sandbox.READY, sb
            out = api.Exec(pb.ExecRequest(sandbox_id=sb.sandbox_id, argv=["echo", "from", "python"]))
            assert out.exit_code == 0 and out.stdout == b"from python\n", out
        try:
            api.Fork(pb.ForkRequest(template_id="../py", count=1))
            raise AssertionError("a bad template id was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        for sb in resp.sandboxes:
            api.Terminate(pb.TerminateRequest(sandbox_id=sb.sandbox_id))
        assert len(api.ListSandboxes(pb.ListSandboxesRequest()).sandboxes) == 0
        for sub in ("sandboxes", "netns", "journal"):
            left = os.listdir(os.path.join(tmp, "data", sub))
            assert not left, f"{sub} left: {left}"
        print("PASS: python client ran CreateTemplate, Fork, Exec, Terminate")
        return 0
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
