#!/usr/bin/env python3
"""HTTP(S) server for the kernel-stage integration tests. Test code only.

Serves the files in --dir on 127.0.0.1 (a port the kernel picks) and prints "PORT <n>" once it
listens. Paths:
  /file/<name>          the file, with Content-Length
  /truncated/<name>     announces the full length, sends half, closes the connection
  /redirect/<k>/<name>  k redirects, then /file/<name>
  anything else         404
With --cert/--key it speaks TLS only.
"""
import argparse
import http.server
import os
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    root = "."

    def log_message(self, *args):  # quiet: the test reads only our PORT line
        pass

    def _file(self, name):
        path = os.path.join(self.root, os.path.basename(name))
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def do_GET(self):
        parts = self.path.split("/")
        if len(parts) == 3 and parts[1] == "file":
            body = self._file(parts[2])
            if body is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        if len(parts) == 3 and parts[1] == "truncated":
            body = self._file(parts[2])
            if body is not None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
        if len(parts) == 4 and parts[1] == "redirect" and parts[2].isdigit():
            k = int(parts[2])
            target = "/file/%s" % parts[3] if k <= 1 else "/redirect/%d/%s" % (k - 1, parts[3])
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    Handler.root = a.dir
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("PORT %d" % httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
