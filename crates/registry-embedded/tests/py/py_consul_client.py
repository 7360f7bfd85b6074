"""Drives Meshplane's embedded registry with py-consul, an unmodified third-party Consul client.

Usage: python py_consul_client.py HOST:PORT [TOKEN]

Registers a service with a TTL check and one with an HTTP check, heartbeats the TTL check,
reads health with a blocking query that must return on change, and deregisters. Exits non-zero
with a message on the first mismatch; prints OK on success.
"""

import sys
import threading
import time

import consul


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    token = sys.argv[2] if len(sys.argv) > 2 else None
    c = consul.Consul(host=host, port=int(port), token=token)

    expect(c.status.leader(), "status.leader() returned nothing")

    ok = c.agent.service.register(
        "pyweb",
        service_id="pyweb-1",
        address="127.0.0.1",
        port=8080,
        tags=["v1", "canary"],
        meta={"owner": "py"},
        weights={"Passing": 5, "Warning": 1},
        check=consul.Check.ttl("10s"),
    )
    expect(ok is True, "register with TTL check did not return True")

    health_url = f"http://{host}:{port}/v1/status/leader"
    ok = c.agent.service.register(
        "pyhttp",
        service_id="pyhttp-1",
        port=9000,
        check=consul.Check.http(health_url, "200ms", timeout="1s", deregister="1h"),
    )
    expect(ok is True, "register with HTTP check did not return True")

    expect(c.agent.check.ttl_pass("service:pyweb-1", notes="all good") is True, "ttl_pass failed")
    index, nodes = c.health.service("pyweb")
    expect(len(nodes) == 1, f"expected one pyweb instance, got {nodes}")
    entry = nodes[0]
    expect(entry["Service"]["ID"] == "pyweb-1", f"bad service id: {entry['Service']}")
    expect(entry["Service"]["Port"] == 8080, "bad port")
    expect(entry["Service"]["Weights"] == {"Passing": 5, "Warning": 1}, "bad weights")
    expect(sorted(entry["Service"]["Tags"]) == ["canary", "v1"], "bad tags")
    statuses = {ch["CheckID"]: ch["Status"] for ch in entry["Checks"]}
    expect(statuses.get("service:pyweb-1") == "passing", f"TTL check not passing: {statuses}")
    _, passing = c.health.service("pyweb", passing=True, tag="canary")
    expect(len(passing) == 1, "passing+tag filter lost the instance")

    # Blocking query: must return once the check changes, long before the 30s wait.
    result = {}

    def block():
        started = time.monotonic()
        result["index"], result["nodes"] = c.health.service("pyweb", index=index, wait="30s")
        result["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=block)
    waiter.start()
    time.sleep(0.3)  # let the query reach the server and block; the assertion below is on elapsed time
    expect(c.agent.check.ttl_fail("service:pyweb-1", notes="down") is True, "ttl_fail failed")
    waiter.join(timeout=20)
    expect(not waiter.is_alive(), "blocking query did not return after a change")
    expect(int(result["index"]) > int(index), f"index did not advance: {index} -> {result['index']}")
    expect(result["elapsed"] < 10, f"blocking query took {result['elapsed']:.1f}s")
    statuses = {ch["CheckID"]: ch["Status"] for ch in result["nodes"][0]["Checks"]}
    expect(statuses["service:pyweb-1"] == "critical", f"change not visible: {statuses}")
    _, passing = c.health.service("pyweb", passing=True)
    expect(passing == [], "critical instance returned with passing=True")

    # The registry runs the HTTP check itself.
    deadline = time.monotonic() + 10
    while True:
        _, http_nodes = c.health.service("pyhttp", passing=True)
        if http_nodes:
            break
        expect(time.monotonic() < deadline, "HTTP check never turned passing")
        time.sleep(0.05)

    _, services = c.catalog.services()
    expect({"pyweb", "pyhttp"} <= set(services), f"catalog.services(): {services}")
    me = c.agent.self()
    expect(me["Config"]["Datacenter"] == "dc1", f"agent.self(): {me}")

    # The key/value store, as the control plane uses it on Consul.
    expect(c.kv.put("meshplane/py", "one") is True, "kv.put failed")
    kv_index, entry = c.kv.get("meshplane/py")
    expect(entry["Value"] == b"one", f"kv.get(): {entry}")
    expect(c.kv.put("meshplane/py", "stale", cas=entry["ModifyIndex"] + 99) is False, "cas accepted a stale index")
    expect(c.kv.put("meshplane/py", "two", cas=entry["ModifyIndex"]) is True, "cas refused the current index")
    _, entry = c.kv.get("meshplane/py", index=kv_index, wait="5s")
    expect(entry["Value"] == b"two", f"blocking kv.get(): {entry}")
    expect(c.kv.delete("meshplane/py") is True, "kv.delete failed")
    _, entry = c.kv.get("meshplane/py")
    expect(entry is None, f"deleted key still there: {entry}")
    _, catalog_nodes = c.catalog.service("pyweb")
    expect(catalog_nodes[0]["ServicePort"] == 8080, "catalog.service() shape")

    expect(c.agent.service.deregister("pyweb-1") is True, "deregister pyweb failed")
    expect(c.agent.service.deregister("pyhttp-1") is True, "deregister pyhttp failed")
    _, nodes = c.health.service("pyweb")
    expect(nodes == [], "pyweb still listed after deregistration")
    print("OK")


if __name__ == "__main__":
    main()
