//! The browser guest page at `/`: the files of `web/` embedded at build time, or a directory
//! from disk (`--web-dir`, for developing the page without rebuilding).

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Where the page served at `/` comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WebRoot {
    /// The guest page built into this binary.
    #[default]
    Embedded,
    /// Files from this directory (`index.html` for `/`).
    Dir(PathBuf),
    /// No page: only socket.io, `/healthz` and `/ice-servers` answer.
    Off,
}

impl WebRoot {
    /// Whether the embedded build carries a page at all (an empty `web/` embeds nothing).
    pub fn embedded_page_present() -> bool {
        embedded::ASSETS.iter().any(|(p, _)| *p == "index.html")
    }
}

/// Maps a request path to a relative file path; `None` for anything that could leave the root.
fn relative_path(uri_path: &str) -> Option<PathBuf> {
    let trimmed = uri_path.trim_start_matches('/');
    let rel = if trimmed.is_empty() || trimmed.ends_with('/') {
        format!("{trimmed}index.html")
    } else {
        trimmed.to_string()
    };
    let path = Path::new(&rel);
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => {
                // Hidden files stay hidden (and so do `.`/`..` tricks that survive parsing).
                if part.to_string_lossy().starts_with('.') {
                    return None;
                }
                clean.push(part);
            }
            _ => return None,
        }
    }
    Some(clean)
}

fn embedded_file(rel: &Path) -> Option<&'static [u8]> {
    let key = rel.to_string_lossy().replace('\\', "/");
    embedded::ASSETS
        .iter()
        .find(|(p, _)| *p == key)
        .map(|(_, bytes)| *bytes)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Serves one GET/HEAD for the page from `root`.
pub(crate) async fn serve(root: &WebRoot, method: &Method, uri: &Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    let Some(rel) = relative_path(uri.path()) else {
        return not_found();
    };
    // Embedded files are served from the binary's static data, without a copy.
    let body: Body = match root {
        WebRoot::Off => return not_found(),
        WebRoot::Embedded => match embedded_file(&rel) {
            Some(bytes) => Body::from(bytes),
            None => return not_found(),
        },
        // Files missing from the directory come from the build (the modules shared with the
        // app's ui/ are not in web/).
        WebRoot::Dir(dir) => match tokio::fs::read(dir.join(&rel)).await {
            Ok(bytes) => Body::from(bytes),
            Err(_) => match embedded_file(&rel) {
                Some(bytes) => Body::from(bytes),
                None => return not_found(),
            },
        },
    };
    let mut resp = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        body
    });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&rel)),
    );
    // The page and the server are one version: never run a stale cached script against it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        assert_eq!(relative_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(relative_path(""), Some(PathBuf::from("index.html")));
        assert_eq!(relative_path("/app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(
            relative_path("/vendor/x.js"),
            Some(PathBuf::from("vendor/x.js"))
        );
        assert_eq!(
            relative_path("/vendor/"),
            Some(PathBuf::from("vendor/index.html"))
        );
        assert_eq!(relative_path("/../etc/passwd"), None);
        assert_eq!(relative_path("/a/../../b"), None);
        assert_eq!(relative_path("/.git/config"), None);
        assert_eq!(
            relative_path("//etc/passwd"),
            Some(PathBuf::from("etc/passwd"))
        );
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(
            content_type(Path::new("a.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.bin")), "application/octet-stream");
    }
}
