"""A real OTLP/gRPC trace receiver for Meshplane's tracing tests.

It serves OpenTelemetry's TraceService (the protobuf definitions of the
opentelemetry-proto package, over grpcio) on 127.0.0.1, prints the port it bound on its
first line, then one JSON object per span received:

    {"trace_id", "span_id", "parent_span_id" (hex; "" for a root), "name", "kind",
     "service" (the resource's service.name), "attributes": {key: value}}

Run with the project's venv (scripts/install-test-deps.sh installs both packages):
    .tools/venv/bin/python tests/otlp/receiver.py
"""

import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(v):
    kind = v.WhichOneof("value")
    return str(getattr(v, kind)) if kind else ""


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            service = ""
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    service = value(attribute.value)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "service": service,
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                    }
                    sys.stdout.write(json.dumps(line) + "\n")
                    sys.stdout.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
