//! The demo pages (`demos/web/dist/`, built by `npm run build` there and
//! committed), embedded in the binary: `/` is the index, `/demos/{file}` the
//! pages and their bundles. Nothing is fetched from the internet at run time.
//!
//! Deliberately not a general static-file server: the set of files is fixed
//! at compile time, and nothing is read from disk.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../../demos/web/dist/", $name)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("editor.html", HTML),
    asset!("lobby.html", HTML),
    asset!("chat.html", HTML),
    asset!("editor.js", JS),
    asset!("lobby.js", JS),
    asset!("chat.js", JS),
    asset!("style.css", CSS),
];

/// The demo routes; merged into the main router by `http::router`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route("/demos", get(|| async { Redirect::permanent("/") }))
        .route("/demos/", get(|| async { Redirect::permanent("/") }))
        .route(
            "/demos/{file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn find(file: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == file).or_else(|| {
        // `/demos/editor` is `/demos/editor.html`.
        let with_html = format!("{file}.html");
        ASSETS
            .iter()
            .find(|a| a.name == with_html && a.content_type == HTML)
    })
}

fn serve(file: &str) -> Response {
    match find(file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
                // The files change with the binary: always revalidate.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            a.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, HeaderValue::from_static(HTML))],
            "<!doctype html><title>Not found</title><p>No such demo file. <a href=\"/\">All demos</a></p>",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_bundle_is_embedded_with_its_type() {
        for (file, ty) in [
            ("index.html", HTML),
            ("editor", HTML),
            ("lobby.js", JS),
            ("style.css", CSS),
        ] {
            let a = find(file).expect("embedded");
            assert_eq!(a.content_type, ty, "{file}");
            assert!(!a.body.is_empty(), "{file}");
        }
        assert!(find("../Cargo.toml").is_none());
        assert!(find("nope").is_none());
    }

    #[test]
    fn pages_load_nothing_from_other_hosts() {
        for a in ASSETS.iter().filter(|a| a.content_type == HTML) {
            let text = std::str::from_utf8(a.body).expect("utf-8");
            assert!(!text.contains("src=\"http"), "{}", a.name);
            assert!(!text.contains("href=\"http"), "{}", a.name);
        }
    }
}
