//! `GET /openapi.json`: the OpenAPI 3.0 description of every HTTP route,
//! written by hand (`openapi.json` beside this file) and embedded.
//!
//! It is kept true by tests, not generated: `the_description_lists_every_route`
//! below reads the routers' source (`mod.rs`, `demos.rs`) and compares
//! paths and methods both ways; `tests/tests/openapi.rs` sends each
//! described operation to the binary and checks that a route answers, and
//! fuzzes them with schemathesis (`tests/openapi/fuzz.sh`).

use axum::http::header;
use axum::response::IntoResponse;

const SPEC: &str = include_str!("openapi.json");

/// The description, as JSON.
pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], SPEC)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (path, method) pairs routed in a router's source: each `.route(`
    /// call's path and the method functions named in its arguments; axum's
    /// `{*rest}` is OpenAPI's `{rest}`; `any` stands for the five methods
    /// the description lists.
    fn routed(source: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let call = &rest[..end];
            let path = call.split('"').nth(1).expect("a route has a path");
            let path = path.replace("{*", "{");
            for method in ["get", "post", "put", "delete", "patch", "any"] {
                let named = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0
                        || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && call.as_bytes()[i - 1] != b'_'
                });
                if !named {
                    continue;
                }
                if method == "any" {
                    for m in ["get", "post", "put", "delete", "patch"] {
                        out.insert((path.clone(), m.to_owned()));
                    }
                } else {
                    out.insert((path.clone(), method.to_owned()));
                }
            }
        }
        out
    }

    fn described() -> BTreeSet<(String, String)> {
        let spec: serde_json::Value =
            serde_json::from_str(super::SPEC).expect("openapi.json is JSON");
        let mut out = BTreeSet::new();
        for (path, ops) in spec["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                out.insert((path.clone(), method.clone()));
            }
        }
        out
    }

    #[test]
    fn the_description_lists_every_route() {
        let mut routes = routed(include_str!("mod.rs"));
        routes.extend(routed(include_str!("demos.rs")));
        assert!(routes.len() > 20, "the parser found the routes: {routes:?}");
        let spec = described();
        let missing: Vec<_> = routes.difference(&spec).collect();
        let extra: Vec<_> = spec.difference(&routes).collect();
        assert!(
            missing.is_empty(),
            "routed but not in openapi.json: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "in openapi.json but not routed: {extra:?}"
        );
    }

    #[test]
    fn every_operation_has_an_id_a_summary_and_responses() {
        let spec: serde_json::Value = serde_json::from_str(super::SPEC).expect("JSON");
        let mut ids = BTreeSet::new();
        for (path, ops) in spec["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("ops") {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(
                    ids.insert(id.to_owned()),
                    "{method} {path}: duplicate id {id:?}"
                );
                assert!(op["summary"].is_string(), "{method} {path}: no summary");
                assert!(op["responses"].is_object(), "{method} {path}: no responses");
            }
        }
    }
}
