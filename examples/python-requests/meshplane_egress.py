"""Meshplane egress rollout flags for Python `requests`: the reference interceptor.

The app names its dependencies the way its descriptor does (`http://payments/...` for a mesh
service, `https://api.example.com/...` for a domain). Per call, the interceptor looks up this
instance's decision for that dependency, which the local sidecar serves on its egress port
(`GET /.meshplane/egress`), and either sends the call through the egress proxy (Envoy) or
straight to the callee, at the address the app used before the mesh. A background thread
long-polls the sidecar (`If-None-Match` + `?wait=`), so a flag flipped by an operator takes
effect on the next call, without a restart. Calls sent straight to a mesh service are counted
and posted to the sidecar every few seconds (`POST /.meshplane/egress/report`), so the
control plane's migration view can show which share of the app's calls still bypasses Envoy.

    flags = EgressFlags(egress_port=31000)
    session = MeshplaneSession(flags, direct={"payments": "http://10.0.0.5:8080"})
    session.get("http://payments/api/charge")

The protocol, for authors of interceptors in other languages, is in docs/egress-flags.md of
the Meshplane repository: this file only uses what it describes. Thread-safe: decisions are
replaced as a whole, never mutated.
"""

import threading
import urllib.parse

import requests

PATH = "/.meshplane/egress"
REPORT_PATH = "/.meshplane/egress/report"


class EgressFlags:
    """This instance's decisions, followed from the sidecar in a background thread."""

    def __init__(self, egress_port, host="127.0.0.1", wait="30s", retry=0.5, report_every=5.0):
        self.egress_port = egress_port
        self._url = f"http://{host}:{egress_port}{PATH}"
        self._report_url = f"http://{host}:{egress_port}{REPORT_PATH}"
        self._report_every = report_every
        self._direct = {}  # mesh service -> calls sent direct since the last report
        self._direct_lock = threading.Lock()
        self._wait = wait
        self._retry = retry
        self._decisions = None  # the last answer (a dict), replaced whole
        self._etag = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        # Never through an environment proxy: the sidecar is local.
        self._http = requests.Session()
        self._http.trust_env = False
        # One session per thread: requests does not promise a shared one is thread-safe.
        self._report_http = requests.Session()
        self._report_http.trust_env = False
        self._flushing = threading.Lock()
        self._thread = threading.Thread(target=self._follow, name="meshplane-egress-flags", daemon=True)
        self._thread.start()
        self._reporter = threading.Thread(target=self._report, name="meshplane-egress-report", daemon=True)
        self._reporter.start()

    def _follow(self):
        while not self._stop.is_set():
            headers = {"If-None-Match": self._etag} if self._etag else {}
            params = {"wait": self._wait} if self._etag else {}
            try:
                r = self._http.get(self._url, headers=headers, params=params, timeout=(2, 300))
            except requests.RequestException:
                self._stop.wait(self._retry)
                continue
            if r.status_code == 200:
                decisions = r.json()
                with self._changed:
                    self._decisions, self._etag = decisions, r.headers.get("ETag")
                    self._changed.notify_all()
            elif r.status_code != 304:
                # 503: the sidecar does not know them yet; keep what we have.
                self._stop.wait(self._retry)

    def _report(self):
        while not self._stop.wait(self._report_every):
            self.flush()

    def count_direct(self, dependency):
        """Counts one call sent straight to `dependency`: only mesh services (a domain is not
        compared with what Envoy forwards)."""
        if "://" in dependency or not dependency:
            return
        with self._direct_lock:
            self._direct[dependency] = self._direct.get(dependency, 0) + 1

    def flush(self):
        """Posts the direct calls counted since the last post. Kept for the next post only
        when the sidecar could not be reached or failed (5xx); a refusal (4xx) would be
        refused again, and an answer that timed out may have been taken: both dropped."""
        with self._flushing:
            with self._direct_lock:
                direct, self._direct = self._direct, {}
            if not direct:
                return True
            keep = False
            try:
                r = self._report_http.post(self._report_url, json={"direct": direct}, timeout=2)
                keep = r.status_code >= 500
            except requests.ConnectionError:
                keep = True
            except requests.RequestException:
                pass
            if keep:
                with self._direct_lock:
                    for dependency, n in direct.items():
                        self._direct[dependency] = self._direct.get(dependency, 0) + n
            return not keep

    def wait_ready(self, timeout=None):
        """Waits until the first decisions are known; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._decisions is not None, timeout)

    def decisions(self):
        """The last decisions, or None before the first answer."""
        return self._decisions

    def proxy(self, dependency):
        """Whether calls to `dependency` go through the egress proxy. Before the sidecar ever
        answered: no (the app keeps calling directly, as before the mesh)."""
        decisions = self._decisions
        if decisions is None:
            return False
        decision = decisions.get("dependencies", {}).get(dependency, decisions.get("default", {}))
        return bool(decision.get("proxy", False))

    def close(self):
        """Stops following and reporting; the last direct calls are posted first."""
        self._stop.set()
        self._reporter.join(timeout=5)
        self.flush()


def dependency_of(url):
    """The dependency a URL calls, named as the descriptor names it: a mesh service by its
    host (`payments`), a domain by its scheme and host (`https://api.example.com`, with the
    port when it is not the scheme's default)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if "." not in host:
        return host
    default = 443 if parts.scheme == "https" else 80
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{host}{port}"


class MeshplaneSession(requests.Session):
    """A `requests.Session` that sends each call through the egress proxy or directly, as the
    flags decide. `direct` maps a mesh service to the base URL the app used before the mesh
    (`{"payments": "http://10.0.0.5:8080"}`); domains are called at their own address."""

    def __init__(self, flags, direct=None):
        super().__init__()
        self.flags = flags
        self.direct = dict(direct or {})
        # The choice of proxy is ours, per call, never the environment's.
        self.trust_env = False

    def request(self, method, url, **kwargs):
        dependency = dependency_of(url)
        if self.flags.proxy(dependency):
            egress = f"http://127.0.0.1:{self.flags.egress_port}"
            # Envoy's egress listener is an explicit HTTP proxy: absolute URLs for http://,
            # CONNECT tunnels for https://.
            kwargs["proxies"] = {"http": egress, "https": egress}
        else:
            kwargs["proxies"] = {}
            # Counted when it is a mesh service this app declares or maps.
            decisions = self.flags.decisions() or {}
            if dependency in self.direct or dependency in decisions.get("dependencies", {}):
                self.flags.count_direct(dependency)
            base = self.direct.get(dependency)
            if base is not None:
                parts = urllib.parse.urlsplit(url)
                target = urllib.parse.urlsplit(base)
                url = urllib.parse.urlunsplit(
                    (target.scheme, target.netloc, parts.path, parts.query, parts.fragment)
                )
        return super().request(method, url, **kwargs)
