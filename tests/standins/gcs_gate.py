"""A least-privilege gate in front of the GCS emulator, standing in for Cloud Storage's IAM check.

The emulator answers every call; GCS answers only those the caller's roles allow. This gate sits on
loopback between the trainer (on the stand-in VM) and the emulator, maps each GCS JSON API call
(method + path) to the IAM permissions GCS checks for it, and lets it through only when the roles
that infra/iam.tf grants to the VM's service account include them. Everything else gets GCS's own
403 body. So a role removed from iam.tf, or a call that needs more than the roles give (e.g.
`bucket.exists()`, which needs storage.buckets.get), fails here as it would on GCP.

Limits (what real IAM does and this gate does not): conditions, deny policies, per-object ACLs,
the extra storage.objects.delete GCS asks for when an upload replaces an existing object, and
batch requests (refused as unmapped).
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import hcl2

# Permissions of the predefined Cloud Storage roles, from Google's reference "IAM roles for Cloud
# Storage" (https://cloud.google.com/storage/docs/access-control/iam-roles, checked 2026-11), limited
# to the storage.* permissions the JSON API checks (resourcemanager.* and the like are left out).
_OBJECTS_READ = {"storage.objects.get", "storage.objects.list"}
_OBJECTS_ALL = _OBJECTS_READ | {
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.update",
    "storage.objects.restore",
    "storage.objects.getIamPolicy",
    "storage.objects.setIamPolicy",
}
_MULTIPART = {
    "storage.multipartUploads.create",
    "storage.multipartUploads.abort",
    "storage.multipartUploads.listParts",
    "storage.multipartUploads.list",
}
_BUCKETS_ALL = {
    "storage.buckets.create",
    "storage.buckets.delete",
    "storage.buckets.get",
    "storage.buckets.list",
    "storage.buckets.update",
    "storage.buckets.getIamPolicy",
    "storage.buckets.setIamPolicy",
}
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/storage.objectViewer": frozenset(_OBJECTS_READ),
    "roles/storage.objectCreator": frozenset(
        {"storage.objects.create"} | (_MULTIPART - {"storage.multipartUploads.list"})
    ),
    "roles/storage.objectUser": frozenset(
        _OBJECTS_ALL - {"storage.objects.getIamPolicy", "storage.objects.setIamPolicy"} | _MULTIPART
    ),
    "roles/storage.objectAdmin": frozenset(_OBJECTS_ALL | _MULTIPART),
    "roles/storage.legacyBucketReader": frozenset({"storage.buckets.get", "storage.objects.list"}),
    "roles/storage.legacyBucketWriter": frozenset(
        {"storage.buckets.get", "storage.objects.list", "storage.objects.create", "storage.objects.delete"}
    ),
    "roles/storage.admin": frozenset(_BUCKETS_ALL | _OBJECTS_ALL | _MULTIPART),
}
# Permissions checked on the project rather than on a bucket.
PROJECT_LEVEL = {"storage.buckets.create", "storage.buckets.list"}


class UnmappedCall(Exception):
    """A request the gate does not know the permissions of: refused, so nothing slips through."""


def _unquote(value: str) -> str:
    return value.strip('"')


def granted_roles(iam_tf: Path, account: str = "google_service_account.trainer") -> dict[str, set[str]]:
    """Roles that iam.tf grants to `account` (python-hcl2): {"bucket": on the run's own bucket (the
    artifacts bucket), "other buckets": on the buckets the user lists (data_read_buckets), "project": ...}."""
    parsed = hcl2.loads(iam_tf.read_text(encoding="utf-8"))
    found: dict[str, set[str]] = {"bucket": set(), "other buckets": set(), "project": set()}
    scopes = {
        "google_storage_bucket_iam_member": "bucket",
        "google_storage_bucket_iam_binding": "bucket",
        "google_project_iam_member": "project",
        "google_project_iam_binding": "project",
    }
    for block in parsed.get("resource", []):
        for rtype, named in block.items():
            scope = scopes.get(_unquote(rtype))
            if scope is None:
                continue
            for body in named.values():
                members = body.get("members") or [body.get("member", "")]
                if any(f"{account}.email" in str(m) for m in members):
                    own = scope != "bucket" or "google_storage_bucket.artifacts" in str(body.get("bucket"))
                    found[scope if own else "other buckets"].add(_unquote(str(body["role"])))
    return found


def permissions_of(roles: set[str]) -> frozenset[str]:
    """The storage permissions a set of roles grants; roles of other services grant none here."""
    unknown = {r for r in roles if r.startswith("roles/storage.") and r not in ROLE_PERMISSIONS}
    if unknown:
        raise ValueError(f"no permission table for {sorted(unknown)}: add it from Google's IAM reference")
    return frozenset().union(*(ROLE_PERMISSIONS.get(r, frozenset()) for r in roles))


@dataclass(frozen=True)
class Check:
    permission: str
    bucket: str | None  # None: checked on the project
    kind: str  # "bucket" or "object": the resource GCS names in its 403


_API = "/storage/v1"


def required(method: str, raw_path: str) -> list[Check]:
    """The permissions GCS checks for one JSON API call. Raises UnmappedCall for anything else."""
    path = urlsplit(raw_path).path
    for prefix in ("/upload", "/download"):
        if path.startswith(prefix + _API + "/"):
            return _media(prefix, method, path[len(prefix + _API) :], raw_path)
    if path == _API + "/b" or path.startswith(_API + "/b/"):
        return _json(method, [unquote(p) for p in path[len(_API) :].split("/")[1:]], raw_path)
    raise UnmappedCall(f"{method} {raw_path}")


def _media(prefix: str, method: str, rest: str, raw: str) -> list[Check]:
    parts = [unquote(p) for p in rest.split("/")[1:]]
    is_upload = prefix == "/upload" and len(parts) == 3 and parts[0] == "b" and parts[2] == "o"
    if is_upload and method in ("POST", "PUT", "DELETE"):  # start, continue or cancel an upload
        return [Check("storage.objects.create", parts[1], "object")]
    is_download = prefix == "/download" and len(parts) >= 4 and parts[0] == "b" and parts[2] == "o"
    if is_download and method == "GET":
        return [Check("storage.objects.get", parts[1], "object")]
    raise UnmappedCall(f"{method} {raw}")


_BUCKET_VERBS = {"GET": "get", "PATCH": "update", "PUT": "update", "DELETE": "delete"}
_OBJECT_VERBS = {"GET": "get", "PATCH": "update", "PUT": "update", "DELETE": "delete"}


def _json(method: str, parts: list[str], raw: str) -> list[Check]:
    # parts: ["b"], ["b", bucket], ["b", bucket, "iam"], ["b", bucket, "o"], ["b", bucket, "o", name...]
    if parts == ["b"]:
        verb = {"GET": "list", "POST": "create"}.get(method)
        if verb:
            return [Check(f"storage.buckets.{verb}", None, "bucket")]
    elif len(parts) == 2 and method in _BUCKET_VERBS:
        return [Check(f"storage.buckets.{_BUCKET_VERBS[method]}", parts[1], "bucket")]
    elif len(parts) == 3 and parts[2] == "iam":
        verb = {"GET": "getIamPolicy", "PUT": "setIamPolicy"}.get(method)
        if verb:
            return [Check(f"storage.buckets.{verb}", parts[1], "bucket")]
    elif len(parts) == 4 and parts[2:] == ["iam", "testPermissions"] and method == "GET":
        return []  # anyone may ask which permissions they hold
    elif len(parts) == 3 and parts[2] == "o" and method == "GET":
        return [Check("storage.objects.list", parts[1], "object")]
    elif len(parts) >= 4 and parts[2] == "o":
        return _object_call(method, parts[1], parts[3:], raw)
    raise UnmappedCall(f"{method} {raw}")


def _object_call(method: str, bucket: str, rest: list[str], raw: str) -> list[Check]:
    # The client percent-encodes '/' in object names, so the name is one path segment.
    read, create = (
        Check("storage.objects.get", bucket, "object"),
        Check("storage.objects.create", bucket, "object"),
    )
    if len(rest) == 1 and method in _OBJECT_VERBS:
        return [Check(f"storage.objects.{_OBJECT_VERBS[method]}", bucket, "object")]
    if len(rest) == 2 and rest[1] == "compose" and method == "POST":
        return [read, create]
    is_copy = len(rest) == 6 and rest[1] in ("copyTo", "rewriteTo") and rest[2] == "b" and rest[4] == "o"
    if is_copy and method == "POST":
        return [read, Check("storage.objects.create", rest[3], "object")]
    if len(rest) == 2 and rest[1] == "restore" and method == "POST":
        return [Check("storage.objects.restore", bucket, "object")]
    raise UnmappedCall(f"{method} {raw}")


@dataclass(frozen=True)
class Policy:
    """What one principal may do: permissions on its bucket, and permissions on the whole project."""

    principal: str
    bucket: str
    on_bucket: frozenset[str]
    on_project: frozenset[str]

    @classmethod
    def from_iam_tf(cls, iam_tf: Path, principal: str, bucket: str) -> Policy:
        roles = granted_roles(iam_tf)
        return cls(principal, bucket, permissions_of(roles["bucket"]), permissions_of(roles["project"]))

    def denied(self, checks: list[Check]) -> Check | None:
        for check in checks:
            if check.permission in self.on_project:
                continue
            if check.bucket == self.bucket and check.permission in self.on_bucket - PROJECT_LEVEL:
                continue
            return check
        return None

    def forbidden_body(self, check: Check) -> bytes:
        """GCS's JSON API 403, word for word in its shape."""
        message = (
            f"{self.principal} does not have {check.permission} access to the Google Cloud Storage "
            f"{check.kind}. Permission '{check.permission}' denied on resource (or it may not exist)."
        )
        errors = [{"message": message, "domain": "global", "reason": "forbidden"}]
        return json.dumps({"error": {"code": 403, "message": message, "errors": errors}}).encode()


_MISSING = "The specified bucket does not exist."
NOT_FOUND = json.dumps(
    {
        "error": {
            "code": 404,
            "message": _MISSING,
            "errors": [{"message": _MISSING, "domain": "global", "reason": "notFound"}],
        }
    }
).encode()
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class Gate:
    """The gate as a loopback HTTP server: `with Gate(upstream_port, policy) as gate: gate.url`.

    Records every decision in `log` as (method, path, "allowed"|permission denied|"unmapped")."""

    def __init__(self, upstream_port: int, policy: Policy):
        self.upstream_port = upstream_port
        self.policy = policy
        self.log: list[tuple[str, str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Gate:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bucket_exists(self, name: str) -> bool:
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            upstream.request("GET", f"/storage/v1/b/{quote(name, safe='')}")
            answer = upstream.getresponse()
            answer.read()
        finally:
            upstream.close()
        return answer.status != 404

    def denials(self) -> list[tuple[str, str, str]]:
        return [entry for entry in self.log if entry[2] != "allowed"]

    def _handler(self):
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # the decisions are kept in gate.log instead
                return

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    denied = gate.policy.denied(required(self.command, self.path))
                except UnmappedCall:
                    gate.log.append((self.command, self.path, "unmapped"))
                    message = (
                        f"gate: {self.command} {urlsplit(self.path).path} is not a mapped GCS JSON API call"
                    )
                    body = json.dumps({"error": {"code": 403, "message": message}}).encode()
                    self._reply(403, [("Content-Type", "application/json")], body)
                    return
                if denied and denied.bucket and not gate.bucket_exists(denied.bucket):
                    # Bucket names are global: GCS tells anyone that a bucket does not exist.
                    gate.log.append((self.command, self.path, "no such bucket"))
                    self._reply(404, [("Content-Type", "application/json; charset=UTF-8")], NOT_FOUND)
                    return
                if denied:
                    gate.log.append((self.command, self.path, denied.permission))
                    headers = [("Content-Type", "application/json; charset=UTF-8")]
                    self._reply(403, headers, gate.policy.forbidden_body(denied))
                    return
                gate.log.append((self.command, self.path, "allowed"))
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection("127.0.0.1", gate.upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                # Links the emulator wrote with its own address (mediaLink, resumable Location) must
                # lead back through the gate, as every URL GCS hands out leads to GCS.
                own = f"127.0.0.1:{gate.upstream_port}".encode()
                data = data.replace(own, f"127.0.0.1:{gate.port}".encode())
                out = [
                    (k, v.replace(own.decode(), f"127.0.0.1:{gate.port}"))
                    for k, v in answer.getheaders()
                    if k.lower() not in _HOP_BY_HOP
                ]
                self._reply(answer.status, out, data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler
