#!/usr/bin/env python3
"""An OAuth 2.0 token endpoint for the SASL/OAUTHBEARER specs (stdlib only), on 127.0.0.1:--port.

A POST whose HTTP Basic credentials are --client-id and the secret in the environment variable named by
--secret-env (so the secret is on no command line) gets 200 and a JSON token response: an unsigned JWT
whose payload has the `sub` and `exp` claims, valid for an hour; as --short-client-id (with the same
secret), valid for --short-lifetime seconds. A POST as --busy-client-id gets 503
(an identity provider that is down). A POST as --slow-client-id is answered (401) only after
--slow-seconds (an identity provider that hangs). Any other POST gets 401 {"error": "invalid_client"}, as an
identity provider answers a wrong secret.

Every request is appended to --requests as one JSON line: method, path, content type, accept, the form
fields of the body, the Basic user, whether the Basic password was the right secret, and the status
answered. The password itself is never written anywhere.
"""
import argparse
import base64
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(subject, lifetime_s):
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": subject, "exp": int(time.time()) + lifetime_s,
                                 "iat": int(time.time())}).encode())
    return f"{header}.{payload}."


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--secret-env", required=True)
    parser.add_argument("--busy-client-id")
    parser.add_argument("--slow-client-id")
    parser.add_argument("--short-client-id")
    parser.add_argument("--short-lifetime", type=int, default=3600)
    parser.add_argument("--slow-seconds", type=float, default=0)
    parser.add_argument("--requests", required=True)
    args = parser.parse_args()
    secret = os.environ[args.secret_env]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("latin-1")
            user, password_ok = None, False
            scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
            if scheme == "Basic":
                user, _, password = base64.b64decode(credentials).decode("latin-1").partition(":")
                password_ok = password == secret
            short = args.short_client_id is not None and user == args.short_client_id
            granted = (user == args.client_id or short) and password_ok
            if granted:
                status = 200
                lifetime = args.short_lifetime if short else 3600
                answer = {"access_token": unsigned_jwt(user, lifetime), "token_type": "Bearer",
                          "expires_in": lifetime}
            elif args.busy_client_id is not None and user == args.busy_client_id:
                status, answer = 503, {"error": "temporarily_unavailable"}
            else:
                status, answer = 401, {"error": "invalid_client"}
                if args.slow_client_id is not None and user == args.slow_client_id:
                    time.sleep(args.slow_seconds)
            record = {
                "method": "POST", "path": self.path,
                "content_type": self.headers.get("Content-Type"), "accept": self.headers.get("Accept"),
                # keep_blank_values: an empty scope is still worth seeing
                "form": dict(urllib.parse.parse_qsl(body, keep_blank_values=True)),
                "basic_user": user, "basic_password_ok": password_ok, "status": status,
            }
            with lock, open(args.requests, "a") as out:
                out.write(json.dumps(record) + "\n")
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except BrokenPipeError:
                pass  # a client that stopped waiting

        def log_message(self, *_):
            pass  # the requests file is the record

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
