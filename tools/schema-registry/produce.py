#!/usr/bin/env python3
"""Produces records in Confluent's wire format with Confluent's own serializers (confluent-kafka's
AvroSerializer, ProtobufSerializer, JSONSerializer), which register their schemas over the registry's REST
API, as a Confluent producer does. Runs in the virtualenv scripts/install-deps.sh makes
(tools/schema-registry/venv-python).

  produce.py --format avro|protobuf|json --schema FILE [--message NAME] --registry URL --broker HOST:PORT
             --topic T [--records FILE|-] [--key-format string|avro|protobuf|json] [--key-schema FILE]
             [--key-message NAME] [--reference NAME=SUBJECT=FILE ...] [--proto-path DIR ...]
             [--no-auto-register] [--use-latest-version] [--subject-name-strategy topic|record|topic_record]
             [--registry-credentials FILE] [--no-validate]

Records are JSON lines, each {"value": ..., "key": ..., "headers": {"name": "text"}, "partition": n} (all but
"value" optional; a "value" of null produces a tombstone). An Avro value writes bytes as {"$bytes": BASE64} and
a decimal as {"$decimal": "12.34"}. For Protobuf a value is the message in its
canonical JSON form (json_format), built into a message class compiled at run time from --schema and its
imports (protoc from grpcio-tools; the well-known types such as google/protobuf/timestamp.proto come with
it; --proto-path adds directories to search). --message names the message (full name; default the file's
first).

--reference NAME=SUBJECT=FILE (Avro and JSON Schema, repeatable, in dependency order) registers FILE
under SUBJECT first and makes the schema reference it as NAME (Avro: the full name of the referenced type;
JSON Schema: the $ref URL). Protobuf imports are registered by the serializer itself, each under its
import path, google/protobuf/* excepted (Confluent's `skip.known.types`).

--no-validate (JSON Schema): the serializer writes a record that does not match its schema, as a producer
without validation can (for the specs of records failing schema validation).

--registry-credentials FILE: JSON with the registry client's authentication properties (e.g.
{"basic.auth.user.info": "user:password"} or the bearer.auth.* ones), kept off the command line.

Prints one JSON line: {"topic", "records": [{"partition", "offset", "value_schema_id", "key_schema_id"}],
"schema_ids": [distinct value schema ids]}; exits 1 with the cause on stderr when a record is not delivered.
"""
import argparse
import base64
import decimal
import importlib.resources
import json
import os
import struct
import sys
import tempfile

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry import record_subject_name_strategy, topic_record_subject_name_strategy
from confluent_kafka.schema_registry import topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError
from confluent_kafka.serialization import StringSerializer

SCHEMA_TYPES = {"avro": "AVRO", "json": "JSON", "protobuf": "PROTOBUF"}
STRATEGIES = {"topic": topic_subject_name_strategy, "record": record_subject_name_strategy,
              "topic_record": topic_record_subject_name_strategy}


def message_class(proto_file, message_name, proto_paths):
    """The message class `message_name` (default: the file's first message) of `proto_file`, compiled with
    its imports into a descriptor pool of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    directory, name = os.path.split(os.path.abspath(proto_file))
    with tempfile.TemporaryDirectory() as scratch:
        descriptor_set = os.path.join(scratch, "set.pb")
        includes = [f"-I{d}" for d in [directory, *proto_paths, well_known]]
        if protoc.main(["protoc", *includes, "--include_imports", f"--descriptor_set_out={descriptor_set}",
                        name]) != 0:
            sys.exit(f"protoc could not compile {proto_file}")
        files = descriptor_pb2.FileDescriptorSet()
        with open(descriptor_set, "rb") as f:
            files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:  # --include_imports lists dependencies before their dependents
        pool.Add(file_proto)
    main = files.file[-1]
    if message_name is None:
        message_name = f"{main.package}.{main.message_type[0].name}" if main.package else main.message_type[0].name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(message_name))


def serializer(fmt, schema_file, message_name, references, registry, args):
    """(serializer, to_object): confluent-kafka's serializer for `fmt` and what turns a JSON record into
    what that serializer takes."""
    conf = {"auto.register.schemas": not args.no_auto_register, "use.latest.version": args.use_latest_version,
            "subject.name.strategy": STRATEGIES[args.subject_name_strategy]}
    if fmt == "string":
        return StringSerializer("utf_8"), lambda value: value if isinstance(value, str) else json.dumps(value)
    if fmt == "protobuf":
        cls = message_class(schema_file, message_name, args.proto_path)
        from google.protobuf import json_format
        return ProtobufSerializer(cls, registry, conf), lambda value: json_format.ParseDict(value, cls())
    with open(schema_file) as f:
        schema = Schema(f.read(), SCHEMA_TYPES[fmt], references)
    if fmt == "avro":
        return AvroSerializer(registry, schema, conf=conf), avro_datum
    # validate: False writes records that break their schema, as a producer without validation can
    return JSONSerializer(schema, registry, conf=dict(conf, validate=not args.no_validate)), lambda value: value


def avro_datum(value):
    """A JSON value as the Avro serializer takes it: {"$bytes": BASE64} becomes bytes and {"$decimal": "1.50"}
    a Decimal, which JSON cannot express; everything else is as it is."""
    if isinstance(value, dict):
        if value.keys() == {"$bytes"}:
            return base64.b64decode(value["$bytes"])
        if value.keys() == {"$decimal"}:
            return decimal.Decimal(value["$decimal"])
        return {k: avro_datum(v) for k, v in value.items()}
    if isinstance(value, list):
        return [avro_datum(v) for v in value]
    return value


def register_references(specs, schema_type, registry):
    references = []
    for spec in specs:
        name, subject, schema_file = spec.split("=", 2)
        with open(schema_file) as f:
            # a reference may itself refer to the ones registered before it
            schema = Schema(f.read(), schema_type, list(references))
        registry.register_schema(subject, schema)
        version = registry.lookup_schema(subject, schema).version
        references.append(SchemaReference(name, subject, version))
    return references


def schema_id(data):
    """The schema id of Confluent's wire format: magic byte 0, then the id as 4 bytes big-endian."""
    if data is None or len(data) < 5 or data[0] != 0:
        return None
    return struct.unpack(">I", data[1:5])[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=sorted(SCHEMA_TYPES), required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--message")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--registry-credentials")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", default="-")
    parser.add_argument("--key-format", choices=["string", *sorted(SCHEMA_TYPES)])
    parser.add_argument("--key-schema")
    parser.add_argument("--key-message")
    parser.add_argument("--reference", action="append", default=[])
    parser.add_argument("--proto-path", action="append", default=[])
    parser.add_argument("--no-auto-register", action="store_true")
    parser.add_argument("--use-latest-version", action="store_true")
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--subject-name-strategy", choices=sorted(STRATEGIES), default="topic")
    args = parser.parse_args()
    if args.key_format not in (None, "string") and not args.key_schema:
        parser.error(f"--key-format {args.key_format} needs --key-schema")

    registry_conf = {"url": args.registry}
    if args.registry_credentials:
        with open(args.registry_credentials) as f:
            registry_conf.update(json.load(f))
    registry = SchemaRegistryClient(registry_conf)
    references = register_references(args.reference, SCHEMA_TYPES[args.format], registry) \
        if args.format != "protobuf" else []
    value_serializer, to_value = serializer(args.format, args.schema, args.message, references, registry, args)
    key_serializer, to_key = serializer(args.key_format, args.key_schema, args.key_message, [], registry, args) \
        if args.key_format else (None, None)

    producer = Producer({"bootstrap.servers": args.broker, "client.id": "produce.py", "acks": "all",
                         "linger.ms": 5})
    delivered, failures = [], []

    def on_delivery(err, message):
        if err is not None:
            failures.append(str(err))
        else:
            delivered.append({"partition": message.partition(), "offset": message.offset(),
                              "value_schema_id": schema_id(message.value()), "key_schema_id": schema_id(message.key())})

    source = sys.stdin if args.records == "-" else open(args.records)
    for line in source:
        if not line.strip():
            continue
        record = json.loads(line)
        value, key = record.get("value"), record.get("key")
        value_bytes = None if value is None else \
            value_serializer(to_value(value), SerializationContext(args.topic, MessageField.VALUE))
        key_bytes = None
        if key is not None:
            if key_serializer is None:
                key_bytes = key.encode() if isinstance(key, str) else json.dumps(key).encode()
            else:
                key_bytes = key_serializer(to_key(key), SerializationContext(args.topic, MessageField.KEY))
        extra = {"partition": record["partition"]} if "partition" in record else {}
        headers = [(k, None if v is None else str(v).encode()) for k, v in (record.get("headers") or {}).items()]
        while True:
            try:
                producer.produce(args.topic, value=value_bytes, key=key_bytes, headers=headers,
                                 on_delivery=on_delivery, **extra)
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: serve delivery reports, then try again
        producer.poll(0)
    remaining = producer.flush(60)
    if failures or remaining:
        sys.exit(f"produce.py: {len(failures)} records failed ({failures[:1]}), {remaining} undelivered")
    delivered.sort(key=lambda d: (d["partition"], d["offset"]))
    ids = sorted({d["value_schema_id"] for d in delivered if d["value_schema_id"] is not None})
    print(json.dumps({"topic": args.topic, "records": delivered, "schema_ids": ids}))


if __name__ == "__main__":
    try:
        main()
    except (SchemaRegistryError, SerializationError) as e:
        sys.exit(f"produce.py: {type(e).__name__}: {e}")
