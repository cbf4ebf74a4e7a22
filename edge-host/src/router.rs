//! Spin's HTTP routing: an exact route beats a wildcard, and a longer
//! wildcard prefix beats a shorter one. Private routes are never matched.

use crate::manifest::{HttpRoute, RoutePattern};

#[derive(Debug, Clone)]
pub struct Router {
    exact: Vec<(String, usize)>,
    /// Sorted longest prefix first.
    wildcard: Vec<(String, usize)>,
    routes: Vec<HttpRoute>,
}

/// The outcome of routing one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub component: &'a str,
    /// The route as the manifest writes it (`/api/...`).
    pub matched_route: String,
    /// The route without its wildcard (`/api`).
    pub component_route: String,
    /// The part of the path after the route's prefix.
    pub path_info: String,
}

impl Router {
    pub fn new(routes: &[HttpRoute]) -> Self {
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match &r.pattern {
                RoutePattern::Exact(p) => exact.push((p.clone(), i)),
                RoutePattern::Wildcard(p) => wildcard.push((p.clone(), i)),
                RoutePattern::Private => {}
            }
        }
        wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        Self { exact, wildcard, routes: routes.to_vec() }
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        if let Some((p, i)) = self.exact.iter().find(|(p, _)| p == trimmed) {
            return Some(RouteMatch {
                component: &self.routes[*i].component,
                matched_route: p.clone(),
                component_route: p.clone(),
                path_info: String::new(),
            });
        }
        for (prefix, i) in &self.wildcard {
            let rest = if prefix == "/" {
                Some(path)
            } else {
                path.strip_prefix(prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            if let Some(rest) = rest {
                return Some(RouteMatch {
                    component: &self.routes[*i].component,
                    matched_route: self.routes[*i].pattern.as_manifest_str(),
                    component_route: if prefix == "/" { String::new() } else { prefix.clone() },
                    path_info: rest.to_string(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: RoutePattern, c: &str) -> HttpRoute {
        HttpRoute { pattern: p, component: c.into() }
    }

    #[test]
    fn precedence() {
        let router = Router::new(&[
            r(RoutePattern::Wildcard("/".into()), "root"),
            r(RoutePattern::Wildcard("/api".into()), "api"),
            r(RoutePattern::Wildcard("/api/v2".into()), "v2"),
            r(RoutePattern::Exact("/api/health".into()), "health"),
            r(RoutePattern::Private, "private"),
        ]);
        assert_eq!(router.route("/api/health").unwrap().component, "health");
        let m = router.route("/api/v2/x").unwrap();
        assert_eq!((m.component, m.path_info.as_str()), ("v2", "/x"));
        let m = router.route("/api").unwrap();
        assert_eq!((m.component, m.path_info.as_str(), m.matched_route.as_str()), ("api", "", "/api/..."));
        assert_eq!(router.route("/apix").unwrap().component, "root");
        assert_eq!(router.route("/other").unwrap().path_info, "/other");
        let none = Router::new(&[r(RoutePattern::Exact("/a".into()), "a")]);
        assert!(none.route("/b").is_none());
        assert!(none.route("/a/").is_some());
    }

    /// The chat API's routes in spin.toml rely on these beating progress's `/v1/...`.
    #[test]
    fn chat_routes_beat_the_v1_wildcard() {
        let router = Router::new(&[
            r(RoutePattern::Exact("/v1/chat/completions".into()), "api"),
            r(RoutePattern::Wildcard("/v1/keys".into()), "api"),
            r(RoutePattern::Wildcard("/v1".into()), "progress"),
        ]);
        assert_eq!(router.route("/v1/chat/completions").unwrap().component, "api");
        assert_eq!(router.route("/v1/keys").unwrap().component, "api");
        assert_eq!(router.route("/v1/keys/key_1").unwrap().component, "api");
        assert_eq!(router.route("/v1/keysx").unwrap().component, "progress");
        assert_eq!(router.route("/v1/chat/other").unwrap().component, "progress");
        assert_eq!(router.route("/v1/clients").unwrap().component, "progress");
    }
}
