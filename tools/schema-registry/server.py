#!/usr/bin/env python3
"""A Confluent-compatible Schema Registry for the project's tests, `make run` and `make bench`.

No Confluent-compatible registry can be installed from the package registries the project's machines reach,
so the specs run this one. It serves the part of Confluent's Schema Registry REST API (v1) that Confluent's
serializers and a consumer call, with Confluent's response shapes, content type
(application/vnd.schemaregistry.v1+json) and error bodies ({"error_code": 40401, "message": "..."}):

  POST /subjects/{subject}/versions      register (the same schema again gets the same id and version)
  POST /subjects/{subject}               look a schema up under a subject
  GET  /subjects                         subjects
  GET  /subjects/{subject}/versions      versions of a subject
  GET  /subjects/{subject}/versions/{v}  a version (a number, `latest` or -1); .../schema: its schema alone
  GET  /schemas/ids/{id}                 a schema by its global id ({"schema", "schemaType" unless AVRO,
                                         "references" when it has any}); .../schema, .../versions, .../subjects
  GET  /schemas/types
  GET|PUT /config, GET|PUT|DELETE /config/{subject}   compatibility levels

Schema ids are global: the same schema (type, text, references) has one id under every subject. An Avro
schema is checked by fastavro (with the named types of its references), a JSON Schema against its
metaschema (an invalid one: 42201); compatibility levels are stored but not enforced. A Protobuf
schema registered as a base64 FileDescriptorProto (what Confluent's Python serializer sends) is stored as
.proto text, as Confluent's registry does; `?format=serialized` returns the descriptor again.

Authentication (--auth): none; basic (HTTP Basic, the credentials file's basic.username/password); oauth2
(Bearer tokens issued by this server's own token endpoint, POST /oauth2/token: grant types
client_credentials and password, client authentication client_secret_basic, client_secret_post or
client_secret_jwt (HS256/384/512), tokens valid --token-lifetime seconds). A request without valid
credentials gets 401 {"error_code": 401, "message": "Unauthorized"}. Credentials come from a JSON file
(--credentials) so no secret is on a command line; the server never prints or logs one.

Test-only endpoints (never authenticated, not part of Confluent's API):
  GET  /_test/counters   {"schema_id_requests": n, "schema_id_requests_by_id": {"1": n}, "token_requests": n,
                          "token_requests_granted": n, "unauthorized": n, "requests": n}
  GET  /_test/token_requests  the token endpoint's requests: grant type, client authentication method,
                          client id, username, and every other form field by name (values of scope, audience
                          and fields named in no secret list), never a secret
  POST /_test/reset      counters and recorded token requests back to zero
  PUT  /_test/delay      {"seconds": s}: every registry API answer (not the token endpoint's) waits s first

--state FILE keeps the schemas, subjects and configs across restarts (written after every change), so a
spec can stop the registry and start it again on the same port with the same schemas. Binds 127.0.0.1 only.
Runs in the serializers' virtualenv (tools/schema-registry/run server ...) for the protobuf package, which
reads the descriptors, fastavro and jsonschema, which check schemas; the rest is the standard library.
"""
import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fastavro
import jsonschema
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_TYPES = ("AVRO", "PROTOBUF", "JSON")
COMPATIBILITY_LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
                        "FULL_TRANSITIVE")
# Form fields of a token request whose values are secrets: recorded by name only.
SECRET_FORM_FIELDS = ("client_secret", "password", "client_assertion")
JWT_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ApiError(Exception):
    """An answer in Confluent's error shape: HTTP `status`, body {"error_code", "message"}."""

    def __init__(self, status, error_code, message):
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def subject_not_found(subject):
    return ApiError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(version):
    return ApiError(404, 40402, f"Version {version} not found.")


def schema_not_found(schema_id=None):
    return ApiError(404, 40403, "Schema not found" if schema_id is None else f"Schema {schema_id} not found")


def invalid_schema(detail):
    return ApiError(422, 42201, f"Invalid schema: {detail}")


# ---------------------------------------------------------------------------------------------------------
# Protobuf: a FileDescriptorProto (base64, as Confluent's Python serializer registers it) as .proto text

class ProtoWriter:
    """Writes a FileDescriptorProto as .proto source that parses back to the same messages, in the same
    order (a record's message indexes count messages in declaration order). Type references are written
    fully qualified (".pkg.Msg"), as the descriptor holds them."""

    def __init__(self, file_proto):
        self.fd = descriptor_pb2.FieldDescriptorProto
        self.file = file_proto
        self.proto3 = file_proto.syntax == "proto3"
        self.lines = []

    def write(self):
        f = self.file
        self.lines.append(f'syntax = "{f.syntax or "proto2"}";')
        if f.package:
            self.lines.append(f"package {f.package};")
        for index, dependency in enumerate(f.dependency):
            public = " public" if index in f.public_dependency else ""
            self.lines.append(f'import{public} "{dependency}";')
        options = f.options
        for name in ("java_package", "java_outer_classname", "java_multiple_files", "go_package",
                     "csharp_namespace", "objc_class_prefix", "php_namespace", "ruby_package"):
            if options.HasField(name):
                self.lines.append(f"option {name} = {json.dumps(getattr(options, name))};")
        scope = f".{f.package}" if f.package else ""
        for message in f.message_type:
            self._message(message, f"{scope}.{message.name}", 0)
        for enum in f.enum_type:
            self._enum(enum, 0)
        return "\n".join(self.lines) + "\n"

    def _line(self, depth, text):
        self.lines.append("  " * depth + text)

    def _message(self, message, full_name, depth):
        self._line(depth, f"message {message.name} {{")
        # map<K, V> fields are declared through a nested entry message the source never names
        map_entries = {f"{full_name}.{nested.name}": nested
                       for nested in message.nested_type if nested.options.map_entry}
        written_oneofs = set()
        for field in message.field:
            if field.HasField("oneof_index") and not field.proto3_optional:
                if field.oneof_index not in written_oneofs:
                    written_oneofs.add(field.oneof_index)
                    self._oneof(message, field.oneof_index, depth + 1)
            elif field.type_name in map_entries:
                key, value = map_entries[field.type_name].field
                self._line(depth + 1, f"map<{self._type(key)}, {self._type(value)}> {field.name} = {field.number};")
            else:
                self._line(depth + 1, self._field(field, with_label=True))
        for nested in message.nested_type:
            if not nested.options.map_entry:
                self._message(nested, f"{full_name}.{nested.name}", depth + 1)
        for enum in message.enum_type:
            self._enum(enum, depth + 1)
        for reserved in message.reserved_range:
            last = reserved.end - 1  # the descriptor's end is exclusive, the source's inclusive
            self._line(depth + 1, f"reserved {reserved.start}" + (f" to {last};" if last != reserved.start else ";"))
        if message.reserved_name:
            self._line(depth + 1, "reserved " + ", ".join(json.dumps(n) for n in message.reserved_name) + ";")
        self._line(depth, "}")

    def _oneof(self, message, index, depth):
        self._line(depth, f"oneof {message.oneof_decl[index].name} {{")
        for field in message.field:
            if field.HasField("oneof_index") and field.oneof_index == index and not field.proto3_optional:
                self._line(depth + 1, self._field(field, with_label=False))
        self._line(depth, "}")

    def _field(self, field, with_label):
        fd = self.fd
        label = ""
        if with_label:
            if field.label == fd.LABEL_REPEATED:
                label = "repeated "
            elif field.label == fd.LABEL_REQUIRED:
                label = "required "
            elif not self.proto3 or field.proto3_optional:
                label = "optional "
        options = []
        if field.HasField("default_value"):
            quoted = field.type in (fd.TYPE_STRING, fd.TYPE_BYTES)
            options.append(f"default = {json.dumps(field.default_value) if quoted else field.default_value}")
        if field.HasField("json_name") and field.json_name != _default_json_name(field.name):
            options.append(f"json_name = {json.dumps(field.json_name)}")
        suffix = f" [{', '.join(options)}]" if options else ""
        return f"{label}{self._type(field)} {field.name} = {field.number}{suffix};"

    def _type(self, field):
        return field.type_name or self.fd.Type.Name(field.type)[len("TYPE_"):].lower()

    def _enum(self, enum, depth):
        self._line(depth, f"enum {enum.name} {{")
        if enum.options.HasField("allow_alias"):
            self._line(depth + 1, f"option allow_alias = {str(enum.options.allow_alias).lower()};")
        for value in enum.value:
            self._line(depth + 1, f"{value.name} = {value.number};")
        self._line(depth, "}")


def _default_json_name(name):
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def decode_descriptor(text):
    """The FileDescriptorProto that `text` holds as base64, or None when `text` is .proto source."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    descriptor = descriptor_pb2.FileDescriptorProto()
    try:
        descriptor.ParseFromString(raw)
    except DecodeError as e:
        raise invalid_schema(f"a base64 schema that is no FileDescriptorProto ({e})")
    return descriptor


# ---------------------------------------------------------------------------------------------------------
# The registry's state

class Registry:
    def __init__(self, state_path):
        self.lock = threading.Lock()
        self.state_path = state_path
        self.schemas = []            # index id-1: {"schemaType", "schema", "references", "serialized"?}
        self.subjects = {}           # subject -> [schema id of version 1, of version 2, ...]
        self.config = {"compatibilityLevel": "BACKWARD"}
        self.subject_config = {}     # subject -> level
        if state_path and os.path.exists(state_path):
            with open(state_path) as f:
                state = json.load(f)
            self.schemas, self.subjects = state["schemas"], state["subjects"]
            self.config, self.subject_config = state["config"], state["subject_config"]

    def save(self):
        if not self.state_path:
            return
        temporary = self.state_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump({"schemas": self.schemas, "subjects": self.subjects, "config": self.config,
                       "subject_config": self.subject_config}, f)
        os.replace(temporary, self.state_path)  # a restart never reads half a file

    # What a registration is compared by: its type, its canonical text and its references.
    def canonical(self, body):
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type not in SCHEMA_TYPES:
            raise ApiError(422, 42201, f"Invalid schema type {schema_type}")
        text = body.get("schema")
        if not isinstance(text, str):
            raise ApiError(422, 42201, "Empty schema")
        references = []
        for reference in body.get("references") or []:
            name, subject, version = reference.get("name"), reference.get("subject"), reference.get("version")
            if not isinstance(name, str) or not isinstance(subject, str) or not isinstance(version, int):
                raise invalid_schema(f"a reference needs name, subject and version: {json.dumps(reference)}")
            if version == -1:
                version = len(self.subjects.get(subject, []))
            if not 1 <= version <= len(self.subjects.get(subject, [])):
                raise invalid_schema(f"reference {name!r}: subject {subject!r} has no version {version}")
            references.append({"name": name, "subject": subject, "version": version})
        serialized = None
        if schema_type == "PROTOBUF":
            descriptor = decode_descriptor(text)
            if descriptor is not None:
                serialized = text
                text = ProtoWriter(descriptor).write()
        else:
            try:
                parsed = json.loads(text)
            except ValueError as e:
                raise invalid_schema(f"not JSON ({e})")
            self.check(schema_type, parsed, references)
            # Confluent stores the schema's canonical form: the same JSON without insignificant whitespace
            text = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
        entry = {"schemaType": schema_type, "schema": text, "references": references}
        if serialized is not None:
            entry["serialized"] = serialized
        return entry

    def check(self, schema_type, parsed, references):
        """Refuses (42201) what is no Avro schema, with the named types of its references, or no JSON Schema."""
        try:
            if schema_type == "JSON":
                jsonschema.validators.validator_for(parsed).check_schema(parsed)
                return
            named = {}
            for reference in self.referenced(references):
                fastavro.parse_schema(json.loads(reference["schema"]), named_schemas=named)
            fastavro.parse_schema(parsed, named_schemas=named)
        except jsonschema.SchemaError as e:
            raise invalid_schema(f"JSON schema: {e.message}")
        except fastavro.schema.UnknownType as e:
            raise invalid_schema(f"AVRO schema: unknown type {e.name}")
        except (fastavro.schema.SchemaParseException, ValueError, TypeError, KeyError, AttributeError) as e:
            raise invalid_schema(f"AVRO schema: {e}")

    def referenced(self, references):
        """The schemas `references` name, each after the ones it refers to itself."""
        ordered = []
        for reference in references:
            entry = self.schemas[self.subjects[reference["subject"]][reference["version"] - 1] - 1]
            ordered += self.referenced(entry["references"]) + [entry]
        return ordered

    @staticmethod
    def same(a, b):
        return (a["schemaType"], a["schema"], a["references"]) == (b["schemaType"], b["schema"], b["references"])

    def register(self, subject, body):
        with self.lock:
            entry = self.canonical(body)
            versions = self.subjects.setdefault(subject, [])
            for schema_id in versions:
                if self.same(self.schemas[schema_id - 1], entry):
                    return schema_id
            schema_id = next((i + 1 for i, s in enumerate(self.schemas) if self.same(s, entry)), None)
            if schema_id is None:
                self.schemas.append(entry)
                schema_id = len(self.schemas)
            versions.append(schema_id)
            self.save()
            return schema_id

    def lookup(self, subject, body):
        with self.lock:
            if subject not in self.subjects:
                raise subject_not_found(subject)
            entry = self.canonical(body)
            for index, schema_id in enumerate(self.subjects[subject]):
                if self.same(self.schemas[schema_id - 1], entry):
                    return self.version_body(subject, index + 1, serialized=False)
            raise schema_not_found()

    def schema(self, schema_id):
        if not 1 <= schema_id <= len(self.schemas):
            raise schema_not_found(schema_id)
        return self.schemas[schema_id - 1]

    def version_number(self, subject, version):
        versions = self.subjects.get(subject)
        if versions is None:
            raise subject_not_found(subject)
        if version in ("latest", "-1"):
            return len(versions)
        try:
            number = int(version)
        except ValueError:
            number = 0
        if not 1 <= number <= 2**31 - 1:
            raise ApiError(422, 42202, f"The specified version '{version}' is not a valid version id. Allowed "
                                       "values are between [1, 2^31-1] and the string \"latest\"")
        if number > len(versions):
            raise version_not_found(number)
        return number

    def version_body(self, subject, number, serialized):
        schema_id = self.subjects[subject][number - 1]
        body = {"subject": subject, "version": number, "id": schema_id}
        body.update(schema_body(self.schemas[schema_id - 1], serialized))
        return body


def schema_body(entry, serialized):
    """A schema as Confluent answers it: schemaType left out for AVRO, references only when there are any."""
    body = {}
    if entry["schemaType"] != "AVRO":
        body["schemaType"] = entry["schemaType"]
    if entry["references"]:
        body["references"] = entry["references"]
    body["schema"] = entry["serialized"] if serialized and "serialized" in entry else entry["schema"]
    return body


# ---------------------------------------------------------------------------------------------------------
# Authentication and the token endpoint

class Auth:
    def __init__(self, mode, credentials, token_lifetime):
        self.mode = mode
        self.credentials = credentials
        self.token_lifetime = token_lifetime
        self.tokens = {}  # access token -> expiry (time.time())
        self.lock = threading.Lock()

    def allows(self, headers):
        if self.mode == "none":
            return True
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if self.mode == "basic":
            basic = self.credentials.get("basic", {})
            if scheme.lower() != "basic":
                return False
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, ValueError):
                return False
            return (hmac.compare_digest(user, basic.get("username", "")) and
                    hmac.compare_digest(password, basic.get("password", "")))
        if scheme.lower() != "bearer":
            return False
        with self.lock:
            expiry = self.tokens.get(value.strip())
        return expiry is not None and expiry > time.time()

    def client(self, headers, form):
        """Who a token request says it is and whether it proved it: (client id, authenticated, method)."""
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                return None, False, "client_secret_basic"
            # RFC 6749 2.3.1: both parts are form-urlencoded before they are joined
            client, _, secret = (urllib.parse.unquote_plus(p) for p in decoded.partition(":"))
            return client, self._client_secret_ok(client, secret), "client_secret_basic"
        if form.get("client_assertion_type") == CLIENT_ASSERTION_TYPE:
            client, verified = self._client_from_jwt(form.get("client_assertion", ""))
            return client, verified, "client_secret_jwt"
        client = form.get("client_id")
        if "client_secret" in form:
            return client, self._client_secret_ok(client or "", form["client_secret"]), "client_secret_post"
        return client, False, "none"

    def _client_secret_ok(self, client, secret):
        oauth2 = self.credentials.get("oauth2", {})
        return (hmac.compare_digest(client, oauth2.get("client_id", "")) and
                hmac.compare_digest(secret, oauth2.get("client_secret", "")))

    def _client_from_jwt(self, assertion):
        """(the client id a client_secret_jwt assertion (RFC 7523) names, whether it is signed with that
        client's secret and still valid)."""
        oauth2 = self.credentials.get("oauth2", {})
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(header_b64))
            payload = json.loads(_b64url_decode(payload_b64))
            digest = JWT_HASHES[header.get("alg")]
            signature = _b64url_decode(signature_b64)
        except (ValueError, KeyError, binascii.Error):
            return None, False
        client = payload.get("iss") if isinstance(payload, dict) else None
        expected = hmac.new(oauth2.get("client_secret", "").encode(), f"{header_b64}.{payload_b64}".encode(),
                            digest).digest()
        verified = (hmac.compare_digest(expected, signature) and client == oauth2.get("client_id") and
                    payload.get("sub") == client and isinstance(payload.get("exp"), (int, float)) and
                    payload["exp"] >= time.time())
        return client, verified

    def token(self, headers, form):
        """(status, body, record) for a token request; `record` names no secret."""
        oauth2 = self.credentials.get("oauth2", {})
        client, authenticated, method = self.client(headers, form)
        grant_type = form.get("grant_type")
        record = {"grant_type": grant_type, "client_auth_method": method, "client_id": client,
                  "client_authenticated": authenticated,
                  "username": form.get("username"),
                  "fields": {k: (None if k in SECRET_FORM_FIELDS else v) for k, v in form.items()},
                  "headers": {k.lower(): v for k, v in headers.items() if k.lower() != "authorization"}}
        if not authenticated:
            return 401, {"error": "invalid_client"}, record
        if grant_type == "password":
            if not (hmac.compare_digest(form.get("username", ""), oauth2.get("username", "")) and
                    hmac.compare_digest(form.get("password", ""), oauth2.get("password", ""))):
                return 400, {"error": "invalid_grant"}, record
        elif grant_type != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, record
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime}, record


def _b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------------------------------------------------
# HTTP

class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.schema_id_requests = 0
        self.by_id = {}
        self.token_requests = 0
        self.token_requests_granted = 0
        self.unauthorized = 0
        self.requests = 0
        self.token_log = []

    def snapshot(self):
        return {"schema_id_requests": self.schema_id_requests, "schema_id_requests_by_id": dict(self.by_id),
                "token_requests": self.token_requests, "token_requests_granted": self.token_requests_granted,
                "unauthorized": self.unauthorized, "requests": self.requests}


def make_handler(registry, auth, counters, delay):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a registry client expects
        # TCP_NODELAY, as Confluent's registry (Jetty) sets it: an answer goes out as two writes (headers,
        # then body), and under Nagle's algorithm the body waited for the client's delayed ACK of the
        # headers, 40 ms per request on Linux
        disable_nagle_algorithm = True

        def do_GET(self):
            self.dispatch("GET")

        def do_POST(self):
            self.dispatch("POST")

        def do_PUT(self):
            self.dispatch("PUT")

        def do_DELETE(self):
            self.dispatch("DELETE")

        def log_message(self, *_):
            pass  # the counters are the record (and a log line could carry what a client sent)

        def answer(self, status, body, content_type=CONTENT_TYPE):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if status == 401 and auth.mode == "basic":
                self.send_header("WWW-Authenticate", 'Basic realm="SchemaRegistry"')
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that stopped waiting

        def read_json(self):
            try:
                body = json.loads(self.body or b"null")
            except ValueError as e:
                raise ApiError(400, 400, f"Unexpected character in the request body ({e})")
            if not isinstance(body, dict):
                raise ApiError(422, 422, "The request body is not a JSON object")
            return body

        def dispatch(self, method):
            # read whatever the answer: a body left unread would be taken for the next request on the connection
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")] if url.path.strip("/") else []
            try:
                if parts[:1] == ["_test"]:
                    self.answer(*self.test_endpoint(method, parts[1:]))
                    return
                if parts == ["oauth2", "token"] and method == "POST" and auth.mode == "oauth2":
                    self.token_endpoint()
                    return
                with counters.lock:
                    counters.requests += 1
                if not auth.allows(self.headers):
                    with counters.lock:
                        counters.unauthorized += 1
                    raise ApiError(401, 401, "Unauthorized")
                if delay["seconds"] > 0:
                    time.sleep(delay["seconds"])  # an artificially slow registry (PUT /_test/delay)
                self.answer(200, self.route(method, parts, query))
            except ApiError as e:
                self.answer(e.status, {"error_code": e.error_code, "message": e.message})

        def test_endpoint(self, method, parts):
            if method == "GET" and parts == ["counters"]:
                with counters.lock:
                    return 200, counters.snapshot(), "application/json"
            if method == "GET" and parts == ["token_requests"]:
                with counters.lock:
                    return 200, list(counters.token_log), "application/json"
            if method == "POST" and parts == ["reset"]:
                with counters.lock:
                    counters.reset()
                return 200, {}, "application/json"
            if method == "PUT" and parts == ["delay"]:
                seconds = self.read_json().get("seconds")
                if not isinstance(seconds, (int, float)) or seconds < 0:
                    raise ApiError(422, 422, "seconds must be a number >= 0")
                delay["seconds"] = seconds
                return 200, {"seconds": seconds}, "application/json"
            raise ApiError(404, 404, "HTTP 404 Not Found")

        def token_endpoint(self):
            form = dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
            status, body, record = auth.token(self.headers, form)
            with counters.lock:
                counters.token_requests += 1
                counters.token_requests_granted += status == 200
                counters.token_log.append(dict(record, status=status))
            self.answer(status, body, "application/json")

        def route(self, method, parts, query):
            serialized = query.get("format") == "serialized"
            n = len(parts)
            if parts[:2] == ["schemas", "types"] and n == 2 and method == "GET":
                return list(SCHEMA_TYPES)
            if parts[:2] == ["schemas", "ids"] and n >= 3 and method == "GET":
                try:
                    schema_id = int(parts[2])
                except ValueError:
                    raise ApiError(404, 404, "HTTP 404 Not Found")
                if n == 3:
                    with counters.lock:
                        counters.schema_id_requests += 1
                        counters.by_id[str(schema_id)] = counters.by_id.get(str(schema_id), 0) + 1
                with registry.lock:
                    entry = registry.schema(schema_id)
                    if n == 3:
                        return schema_body(entry, serialized)
                    if n == 4 and parts[3] == "schema":
                        return schema_body(entry, serialized)["schema"]
                    uses = [(s, i + 1) for s, ids in registry.subjects.items() for i, v in enumerate(ids)
                            if v == schema_id]
                    if n == 4 and parts[3] == "versions":
                        return [{"subject": s, "version": v} for s, v in uses]
                    if n == 4 and parts[3] == "subjects":
                        return sorted({s for s, _ in uses})
            if parts[:1] == ["subjects"]:
                if n == 1 and method == "GET":
                    with registry.lock:
                        return sorted(registry.subjects)
                subject = parts[1] if n > 1 else None
                if n == 2 and method == "POST":
                    return registry.lookup(subject, self.read_json())
                if n == 3 and parts[2] == "versions":
                    if method == "POST":
                        return {"id": registry.register(subject, self.read_json())}
                    if method == "GET":
                        with registry.lock:
                            if subject not in registry.subjects:
                                raise subject_not_found(subject)
                            return list(range(1, len(registry.subjects[subject]) + 1))
                if n in (4, 5) and parts[2] == "versions" and method == "GET":
                    with registry.lock:
                        number = registry.version_number(subject, parts[3])
                        body = registry.version_body(subject, number, serialized)
                    if n == 4:
                        return body
                    if parts[4] == "schema":
                        return body["schema"]
            if parts[:1] == ["config"] and n in (1, 2):
                return self.config(method, parts[1] if n == 2 else None, query)
            raise ApiError(404, 404, "HTTP 404 Not Found")

        def config(self, method, subject, query):
            if method == "GET":
                with registry.lock:
                    if subject is None:
                        return dict(registry.config)
                    if subject in registry.subject_config:
                        return {"compatibilityLevel": registry.subject_config[subject]}
                    if query.get("defaultToGlobal") == "true":
                        return dict(registry.config)
                    raise ApiError(404, 40408,
                                   f"Subject '{subject}' does not have subject-level compatibility configured")
            if method == "PUT":
                level = self.read_json().get("compatibility")
                if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
                    raise ApiError(422, 42203, "Invalid compatibility level. Valid values are none, backward, "
                                               "forward, full, backward_transitive, forward_transitive, and "
                                               "full_transitive")
                with registry.lock:
                    if subject is None:
                        registry.config = {"compatibilityLevel": level.upper()}
                    else:
                        registry.subject_config[subject] = level.upper()
                    registry.save()
                return {"compatibility": level.upper()}
            if method == "DELETE" and subject is not None:
                with registry.lock:
                    level = registry.subject_config.pop(subject, None)
                    if level is None:
                        raise subject_not_found(subject)
                    registry.save()
                return {"compatibilityLevel": level}
            raise ApiError(405, 405, "HTTP 405 Method Not Allowed")

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth", choices=("none", "basic", "oauth2"), default="none")
    parser.add_argument("--credentials", help="JSON file: {basic: {username, password}, oauth2: {client_id, "
                                              "client_secret, username, password}}")
    parser.add_argument("--token-lifetime", type=int, default=3600, help="expires_in of issued tokens (s)")
    parser.add_argument("--state", help="file that keeps the schemas across restarts")
    parser.add_argument("--delay", type=float, default=0, help="seconds every registry API answer waits")
    args = parser.parse_args()
    credentials = {}
    if args.credentials:
        with open(args.credentials) as f:
            credentials = json.load(f)
    if args.auth != "none" and args.auth not in credentials:
        parser.error(f"--auth {args.auth} needs the {args.auth!r} block in --credentials")
    registry = Registry(args.state)
    handler = make_handler(registry, Auth(args.auth, credentials, args.token_lifetime), Counters(),
                           {"seconds": args.delay})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    print(json.dumps({"listening": f"http://127.0.0.1:{args.port}", "auth": args.auth}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
