"""A real gRPC server and client (grpcio) for Meshplane's protocol tests.

No generated code: the service `meshplane.test.Echo` carries raw bytes.

    echo.py server NAME [unavailable]
        Serves on 127.0.0.1 (h2c) and prints the port on its first line (with
        `unavailable`, Unary fails with UNAVAILABLE, as a server shedding load). Methods:
        Unary(b) -> b"NAME:" + b; Deadline(_) -> the seconds left of the call's deadline
        as text ("none" without one); Stream(b"N") -> N messages b"NAME:0".. b"NAME:N-1";
        Collect(stream) -> the messages joined with ","; Sleep(b"S") sleeps S seconds,
        then answers b"woke"; a call whose deadline passed first prints
        "cancelled Sleep" on stdout. grpc.health.v1.Health/Check answers SERVING.

    echo.py client TARGET AUTHORITY
        Reads one JSON call per line on stdin ({"method", "payload", "timeout"} or
        {"method": "Stream", "count"} or {"method": "Collect", "messages"}) and prints one
        JSON line per call: {"ok": true, "reply"} or {"ok": false, "code", "details"}, with
        the call's duration in "seconds".

    echo.py client-xds
        A proxyless client: channels to `xds:///SERVICE` targets, resolved through the
        control plane named by the bootstrap in GRPC_XDS_BOOTSTRAP (`meshplane bootstrap
        --grpc`), kept open across calls. Reads one JSON command per line on stdin:
        {"target", "method", "payload", "count", "metadata", "timeout", "until",
        "max_seconds"}: `count` Unary calls (default 1), or with `until`, calls until a reply
        starts with it (at most `max_seconds`); prints one JSON line per command:
        {"ok": true, "replies": [...]} or {"ok": false, "code", "details", "replies"}.

    echo.py client-xds xds-credentials
        The same with gRPC's xDS channel credentials (gRFC A29), plaintext as the fallback:
        mTLS where the control plane's clusters ask for it, with the certificate provider
        of the bootstrap (`meshplane bootstrap --grpc --certs-dir`).

Run with the project's venv (scripts/install-test-deps.sh installs grpcio).
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc
import grpc.experimental

SERVICE = "meshplane.test.Echo"


def serve(name, unavailable=False):
    prefix = name.encode() + b":"

    def unary(request, context):
        if unavailable:
            sys.stdout.write("refused Unary\n")
            sys.stdout.flush()
            context.abort(grpc.StatusCode.UNAVAILABLE, "shedding load")
        return prefix + request

    def deadline(request, context):
        # grpcio reports a call without a deadline as one ~292 years away.
        left = context.time_remaining()
        return b"none" if left is None or left > 1e6 else ("%.3f" % left).encode()

    def stream(request, context):
        for i in range(int(request or b"0")):
            yield prefix + str(i).encode()

    def collect(requests, context):
        return b",".join(requests)

    def sleep(request, context):
        woke = threading.Event()
        context.add_callback(woke.set)
        if woke.wait(float(request)) and not context.is_active():
            sys.stdout.write("cancelled Sleep\n")
            sys.stdout.flush()
        return b"woke"

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
    }
    # grpc.health.v1.Health/Check answers HealthCheckResponse{status: SERVING}, encoded by
    # hand (field 1, varint 1), for the sidecar's health check of a gRPC app.
    health = {"Check": grpc.unary_unary_rpc_method_handler(lambda request, context: b"\x08\x01")}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, handlers),
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write("%d\n" % port)
    sys.stdout.flush()
    try:
        sys.stdin.read()  # until the test closes stdin (or kills the process)
    finally:
        server.stop(0)


def call(channel, spec):
    method = "/%s/%s" % (SERVICE, spec["method"])
    timeout = spec.get("timeout")
    if spec["method"] == "Stream":
        replies = channel.unary_stream(method)(str(spec["count"]).encode(), timeout=timeout)
        return [r.decode() for r in replies]
    if spec["method"] == "Collect":
        messages = iter([m.encode() for m in spec["messages"]])
        return channel.stream_unary(method)(messages, timeout=timeout).decode()
    return channel.unary_unary(method)(spec.get("payload", "").encode(), timeout=timeout).decode()


def client(target, authority):
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        for line in sys.stdin:
            if not line.strip():
                continue
            spec = json.loads(line)
            start = time.monotonic()
            try:
                result = {"ok": True, "reply": call(channel, spec)}
            except grpc.RpcError as e:
                result = {"ok": False, "code": e.code().name, "details": e.details() or ""}
            result["seconds"] = round(time.monotonic() - start, 3)
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()


def client_xds(xds_credentials=False):
    channels = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        target = spec["target"]
        if target not in channels:
            if xds_credentials:
                fallback = grpc.experimental.insecure_channel_credentials()
                credentials = grpc.xds_channel_credentials(fallback)
                channels[target] = grpc.secure_channel(target, credentials)
            else:
                channels[target] = grpc.insecure_channel(target)
        unary = channels[target].unary_unary("/%s/%s" % (SERVICE, spec.get("method", "Unary")))
        metadata = tuple((spec.get("metadata") or {}).items())
        payload = spec.get("payload", "").encode()
        until = spec.get("until")
        give_up = time.monotonic() + spec.get("max_seconds", 10)
        replies = []
        result = None
        count = spec.get("count", 1)
        while result is None:
            try:
                reply = unary(payload, timeout=spec.get("timeout", 5), metadata=metadata)
                replies.append(reply.decode())
            except grpc.RpcError as e:
                result = {"ok": False, "code": e.code().name, "details": e.details() or ""}
                break
            if until is not None:
                if replies[-1].startswith(until):
                    result = {"ok": True}
                elif time.monotonic() > give_up:
                    result = {"ok": False, "code": "TIMEOUT", "details": "no reply from %s" % until}
            elif len(replies) >= count:
                result = {"ok": True}
        result["replies"] = replies
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    for channel in channels.values():
        channel.close()


def main():
    if sys.argv[1:2] == ["server"] and len(sys.argv) == 3:
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["server"] and sys.argv[3:] == ["unavailable"]:
        serve(sys.argv[2], unavailable=True)
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 4:
        client(sys.argv[2], sys.argv[3])
    elif sys.argv[1:] == ["client-xds"]:
        client_xds()
    elif sys.argv[1:] == ["client-xds", "xds-credentials"]:
        client_xds(xds_credentials=True)
    else:
        sys.exit("usage: echo.py server NAME [unavailable] | echo.py client TARGET AUTHORITY | echo.py client-xds [xds-credentials]")


if __name__ == "__main__":
    main()
