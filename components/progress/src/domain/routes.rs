//! The API's operations: one table that the HTTP router dispatches through
//! and that the OpenAPI document (`openapi.json`) must list exactly.

/// Every operation as (method, path template). A request is served only if
/// it matches one of these; the router has one arm per entry.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/openapi.json"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/logout"),
    ("GET", "/v1/auth/me"),
    ("POST", "/v1/users"),
    ("GET", "/v1/users"),
    ("POST", "/v1/assignments"),
    ("DELETE", "/v1/assignments/{therapist_id}/{client_id}"),
    ("POST", "/v1/admin/retention"),
    ("POST", "/v1/clients"),
    ("GET", "/v1/clients"),
    ("GET", "/v1/clients/{client_id}"),
    ("POST", "/v1/clients/{client_id}/archive"),
    ("POST", "/v1/clients/{client_id}/sessions"),
    ("GET", "/v1/clients/{client_id}/sessions"),
    ("GET", "/v1/clients/{client_id}/sessions/{entry_id}"),
    ("POST", "/v1/clients/{client_id}/sessions/{entry_id}/amendments"),
    ("POST", "/v1/clients/{client_id}/measures"),
    ("GET", "/v1/clients/{client_id}/measures"),
    ("POST", "/v1/clients/{client_id}/goals"),
    ("GET", "/v1/clients/{client_id}/goals"),
    ("PATCH", "/v1/clients/{client_id}/goals/{goal_id}"),
    ("POST", "/v1/clients/{client_id}/goals/{goal_id}/milestones"),
    ("PATCH", "/v1/clients/{client_id}/goals/{goal_id}/milestones/{milestone_id}"),
    ("GET", "/v1/clients/{client_id}/trends"),
    ("GET", "/v1/clients/{client_id}/report"),
    ("GET", "/v1/clients/{client_id}/history-context"),
    ("GET", "/v1/clients/{client_id}/export"),
    ("POST", "/v1/clients/{client_id}/erase"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("POST", "/v1/break-glass"),
    ("GET", "/v1/break-glass"),
    ("POST", "/v1/break-glass/{grant_id}/review"),
];

/// What a request path resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// The operation's path template and the path parameters, in order.
    Found(&'static str, Vec<&'a str>),
    /// The path exists, the method does not.
    MethodNotAllowed,
    NotFound,
}

fn match_template<'a>(template: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut t = template.trim_start_matches('/').split('/');
    let mut p = path.trim_start_matches('/').split('/');
    let mut params = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') && ts.ends_with('}') => {
                if ps.is_empty() {
                    return None;
                }
                params.push(ps);
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// Resolves `method` and `path` (trailing `/` ignored) against [`ROUTES`].
pub fn resolve<'a>(method: &str, path: &'a str) -> Resolved<'a> {
    let path = path.trim_end_matches('/');
    let mut path_known = false;
    for &(m, template) in ROUTES {
        if let Some(params) = match_template(template, path) {
            if m == method {
                return Resolved::Found(template, params);
            }
            path_known = true;
        }
    }
    if path_known {
        Resolved::MethodNotAllowed
    } else {
        Resolved::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, _) in ops.as_object().unwrap() {
                if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(routed.len(), ROUTES.len(), "duplicate routes");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(undocumented.is_empty() && unrouted.is_empty(), "routed but not documented: {undocumented:?}; documented but not routed: {unrouted:?}");
    }

    #[test]
    fn resolving() {
        let id = "0f8a2c1e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(resolve("GET", &format!("/v1/clients/{id}/")), Resolved::Found("/v1/clients/{client_id}", vec![id]));
        assert_eq!(
            resolve("PATCH", &format!("/v1/clients/{id}/goals/g/milestones/m")),
            Resolved::Found("/v1/clients/{client_id}/goals/{goal_id}/milestones/{milestone_id}", vec![id, "g", "m"])
        );
        assert_eq!(resolve("DELETE", "/v1/clients"), Resolved::MethodNotAllowed);
        assert_eq!(resolve("GET", "/v1/clients//sessions"), Resolved::NotFound);
        assert_eq!(resolve("GET", "/v1/no-such-thing"), Resolved::NotFound);
        assert_eq!(resolve("GET", "/v2/clients"), Resolved::NotFound);
        assert_eq!(resolve("GET", "/v1/audit/verify"), Resolved::Found("/v1/audit/verify", vec![]));
    }
}
