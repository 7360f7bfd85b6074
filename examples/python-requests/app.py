"""A small app using the interceptor: calls a dependency every `--every` seconds and prints
one line per call, `<status> <body>`, flushed; with `--count N`, N calls, then it reports its
direct calls to the sidecar and exits. The test suite drives it
(crates/cli/tests/sidecar_egress_flags.rs); run it yourself next to a sidecar:

    python app.py --egress-port 31000 --call http://payments/ --direct payments=http://127.0.0.1:8080
"""

import argparse
import sys
import time

from meshplane_egress import EgressFlags, MeshplaneSession


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--egress-port", type=int, required=True)
    parser.add_argument("--call", required=True, help="the URL to call, e.g. http://payments/")
    parser.add_argument("--direct", action="append", default=[], help="service=base URL")
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--count", type=int, default=0, help="calls to make, then exit (0: forever)")
    args = parser.parse_args()
    direct = dict(d.split("=", 1) for d in args.direct)
    flags = EgressFlags(args.egress_port)
    flags.wait_ready(timeout=10)
    session = MeshplaneSession(flags, direct=direct)
    made = 0
    while args.count == 0 or made < args.count:
        made += 1
        try:
            r = session.get(args.call, timeout=5)
            print(r.status_code, r.text.strip(), flush=True)
        except Exception as e:  # noqa: BLE001 - a line per call, whatever happened
            print(0, type(e).__name__, flush=True)
        time.sleep(args.every)
    # Reports the last direct calls to the sidecar before leaving.
    flags.close()


if __name__ == "__main__":
    sys.exit(main())
