//! The web panel at `/`: static HTML, CSS and JavaScript modules compiled into the binary, so
//! the control plane serves it without a separate server, a build step or internet access.
//!
//! The panel is a client of the JSON API and nothing else; the files are in
//! `crates/admin/assets/` (start at `app.js`). Adding a file there means adding it to
//! [`ASSETS`]; a test checks that every file the panel references is embedded.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal) => {
        Asset {
            name: $name,
            body: include_str!(concat!("../assets/", $name)),
        }
    };
}

/// Everything under `/assets/`. `index.html` is served at `/` only.
const ASSETS: &[Asset] = &[
    asset!("api.js"),
    asset!("app.js"),
    asset!("chart.js"),
    asset!("consistency.js"),
    asset!("datacenters.js"),
    asset!("dom.js"),
    asset!("favicon.svg"),
    asset!("logging.js"),
    asset!("migration.js"),
    asset!("panel.css"),
    asset!("proxies.js"),
    asset!("proxy.js"),
    asset!("rollout.js"),
    asset!("services.js"),
    asset!("snapshot.js"),
    asset!("stats.js"),
    asset!("traffic.js"),
    asset!("tree.js"),
];

const INDEX: &str = include_str!("../assets/index.html");

/// Only the panel's own files may run or load: API responses are data, rendered as text, and
/// a string that slipped into markup would still not execute. No framing (clickjacking on the
/// log-level control).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// `/` and `/assets/{file}`; merged into the admin router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { respond("index.html", INDEX) }))
        .route("/assets/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    match find(&file) {
        Some(a) => respond(a.name, a.body),
        None => (StatusCode::NOT_FOUND, format!("no panel asset `{file}`\n")).into_response(),
    }
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn respond(name: &str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    // Revalidate every time: after an upgrade the browser must not mix old and new modules.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names a file references: `from './x.js'` in modules, `/assets/x` in the page.
    fn references(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (prefix, end) in [("from './", '\''), ("/assets/", '"')] {
            let mut rest = text;
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                if let Some(stop) = rest.find(end) {
                    out.push(rest[..stop].to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn every_referenced_file_is_embedded() {
        let mut checked = 0;
        for text in std::iter::once(INDEX).chain(ASSETS.iter().map(|a| a.body)) {
            for name in references(text) {
                assert!(
                    find(&name).is_some(),
                    "`{name}` is referenced but not in ASSETS"
                );
                checked += 1;
            }
        }
        assert!(
            checked > 10,
            "the reference scan found only {checked} references"
        );
    }

    #[test]
    fn every_embedded_file_is_used() {
        let all: Vec<String> = std::iter::once(INDEX)
            .chain(ASSETS.iter().map(|a| a.body))
            .flat_map(references)
            .collect();
        for a in ASSETS {
            assert!(
                all.iter().any(|r| r == a.name),
                "`{}` is never referenced",
                a.name
            );
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("panel.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        for a in ASSETS {
            assert_ne!(
                content_type(a.name),
                "application/octet-stream",
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn nothing_is_loaded_from_elsewhere() {
        for text in std::iter::once(INDEX).chain(ASSETS.iter().map(|a| a.body)) {
            for scheme in ["http://", "https://", "//cdn"] {
                // The SVG namespace is a name, not a download.
                let stripped = text.replace("http://www.w3.org/2000/svg", "");
                assert!(!stripped.contains(scheme), "an asset refers to `{scheme}`");
            }
        }
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_with_their_types() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, routes::<()>()).await;
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

        let page = get("/").await.expect("GET /");
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert!(page.text().await.expect("body").contains("/assets/app.js"));

        let js = get("/assets/app.js").await.expect("GET app.js");
        assert_eq!(js.status(), 200);
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );

        for missing in ["/assets/nope.js", "/assets/..%2Fsrc%2Flib.rs"] {
            assert_eq!(get(missing).await.expect("GET").status(), 404, "{missing}");
        }
        server.abort();
    }
}
