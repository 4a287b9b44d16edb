"""A stand-in Google REST API on loopback: the OAuth token endpoint a user's login refreshes against, and
JSON routes that a test fills in. The real client libraries talk to it (google-cloud-compute,
google-cloud-billing), pointed at it by their endpoint option, with a real login flow: `key_file(path, api)`
writes a service account key (GOOGLE_APPLICATION_CREDENTIALS) whose `token_uri` is this server, so
google-auth signs its JWT grant, gets the token here and sends it as `Authorization: Bearer ...`; every API
route refuses a request without that token, or without a JWT signed by that key (a service account's
self-signed JWT, which the gapic clients send in place of a token), with 401 as Google does.
(A user login's file cannot be used: google-auth always sends its refresh to oauth2.googleapis.com.)

    api = GoogleAPI()                      # started on 127.0.0.1:<free port>
    api.route("GET", r"/compute/v1/projects/(?P<project>[^/]+)", handler)
    # handler(match, query) -> (status, JSON body)
    ...
    api.requests                           # [(method, path), ...] of the API routes answered (not /token)
    api.close()

Errors look like Google's JSON errors (`error(code, status, message, reason)`), so the clients raise
their real exception classes (Forbidden, NotFound, ...). Standard library only.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "stand-in-access-token"
Handler = Callable[[re.Match, dict[str, list[str]]], tuple[int, Any]]


def error(code: int, status: str, message: str, reason: str = "", domain: str = "googleapis.com") -> dict:
    """A Google API error body (google.rpc.Status as JSON, with ErrorInfo when a reason is given)."""
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        body["errors"] = [{"message": message, "domain": "global", "reason": reason}]
        body["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}
        ]
    return {"error": body}


class GoogleAPI:
    def __init__(self, host: str = "127.0.0.1"):
        self.routes: list[tuple[str, re.Pattern, Handler]] = []
        self.requests: list[tuple[str, str]] = []
        self.tokens_issued = 0
        self.key = _new_key()
        api = self

        class Handle(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if method == "POST" and url.path == "/token":
                    api.tokens_issued += 1
                    self._answer(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})
                    return
                for verb, pattern, handler in api.routes:
                    match = pattern.fullmatch(url.path)
                    if verb == method and match:
                        api.requests.append((method, url.path))
                        if not api.authorized(self.headers.get("Authorization") or ""):
                            missing = error(401, "UNAUTHENTICATED", "Request is missing a valid token")
                            self._answer(401, missing)
                            return
                        status, body = handler(match, parse_qs(url.query))
                        self._answer(status, body)
                        return
                self._answer(404, error(404, "NOT_FOUND", f"no route for {method} {url.path}"))

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

        self.server = ThreadingHTTPServer((host, 0), Handle)
        self.server.daemon_threads = True
        # A short poll: shutdown() waits for it, once per test.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def authorized(self, header: str) -> bool:
        from cryptography.hazmat.primitives import serialization
        from google.auth import jwt

        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            return False
        if token == TOKEN:
            return True
        public = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        try:
            jwt.decode(token, certs=public.decode(), verify=True)
        except ValueError:
            return False
        return True

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(pattern), handler))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def key_file(path: Path, api: GoogleAPI, project: str = "stand-in-project") -> Path:
    """A service account key file (what `gcloud iam service-accounts keys create` writes), with a fresh RSA
    key, whose token grant goes to the stand-in."""
    from cryptography.hazmat.primitives import serialization

    pem = api.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "stand-in-key",
        "private_key": pem, "client_email": f"trainer@{project}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{api.url}/token",
    }))  # fmt: skip
    return path


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
