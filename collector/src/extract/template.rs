//! Endpoint templates: a raw path -> the endpoint it is an instance of.
//!
//! A request without a route (`url.path` or `http.target` only, a log
//! line's path) would make one endpoint per id: `/users/18273/profile`,
//! `/users/18274/profile`, ... thousands of series of a few requests each,
//! none ever judged, and a huge `/metrics`. Here the id-like segments
//! become a placeholder (`/users/{id}/profile`), so the requests of one
//! handler are one endpoint again.
//!
//! Pure and cheap: a path with nothing to replace is returned borrowed
//! (less its query string); only a replaced one allocates. It must never
//! touch a route (`http.route` is a template already) and never merge
//! segments that name things (`v2`, `oauth2`, `users`).

use std::borrow::Cow;

use crate::config::EndpointTemplates;

/// `path` with its query and fragment dropped and every id-like segment
/// replaced by `config.placeholder`; unchanged when templates are off.
pub fn template<'a>(path: &'a str, config: &EndpointTemplates) -> Cow<'a, str> {
    if !config.templates {
        return Cow::Borrowed(path);
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let is_id = |segment: &str| id_like(segment, config);
    if !path.split('/').any(is_id) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if is_id(segment) {
            &config.placeholder
        } else {
            segment
        });
    }
    Cow::Owned(out)
}

/// Whether `segment` is an id rather than a name: a number, a UUID, a hex
/// token (8 or more hex digits with a digit among them, or 16 or more), a
/// segment with a run of 4 or more digits (dates, `order-20931`), or a
/// token of `min_token_length` or more characters mixing letters and
/// digits (base64, base64url, slugs with ids). A segment in `keep` never is.
fn id_like(segment: &str, config: &EndpointTemplates) -> bool {
    if segment.is_empty() || segment == config.placeholder {
        return false;
    }
    if config.keep.iter().any(|k| k == segment) {
        return false;
    }
    let bytes = segment.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() {
        return true;
    }
    if is_uuid(bytes) {
        return true;
    }
    let hex = bytes.iter().all(u8::is_ascii_hexdigit);
    if hex && (bytes.len() >= 16 || (bytes.len() >= 8 && digits > 0)) {
        return true;
    }
    let longest_run = bytes
        .split(|b| !b.is_ascii_digit())
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    if longest_run >= 4 {
        return true;
    }
    let letters = bytes.iter().any(u8::is_ascii_alphabetic);
    let token_chars = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~=+%".contains(b));
    bytes.len() >= config.min_token_length && digits > 0 && letters && token_chars
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> String {
        template(path, &EndpointTemplates::default()).into_owned()
    }

    #[test]
    fn ids_become_the_placeholder_and_names_stay() {
        let cases = [
            ("/users/18273/profile", "/users/{id}/profile"),
            (
                "/orders/3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b",
                "/orders/{id}",
            ),
            ("/blobs/5f3a9c21", "/blobs/{id}"),
            (
                "/commits/a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
                "/commits/{id}",
            ),
            ("/sessions/deadbeefcafebabe", "/sessions/{id}"),
            ("/t/dGhpcyBpcyBhIHRva2VuMTIz", "/t/{id}"),
            ("/reports/2024-01-15/summary", "/reports/{id}/summary"),
            ("/orders/order-20931", "/orders/{id}"),
            ("/api/v2/users", "/api/v2/users"),
            ("/oauth2/callback", "/oauth2/callback"),
            ("/risk-score", "/risk-score"),
            ("/facade/added", "/facade/added"),
            ("/user-preferences-settings", "/user-preferences-settings"),
            ("/GetUserProfileSettings", "/GetUserProfileSettings"),
            ("/", "/"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(t(raw), want, "{raw}");
        }
    }

    #[test]
    fn the_query_and_fragment_are_dropped_without_copying() {
        let config = EndpointTemplates::default();
        let path = "/search?q=42&page=3#top";
        match template(path, &config) {
            Cow::Borrowed(p) => assert_eq!(p, "/search"),
            Cow::Owned(p) => panic!("copied: {p}"),
        }
        assert_eq!(t("/items/77?full=1"), "/items/{id}");
    }

    #[test]
    fn the_settings_are_honoured() {
        let config = EndpointTemplates {
            placeholder: ":id".into(),
            keep: vec!["2024".into()],
            min_token_length: 6,
            ..EndpointTemplates::default()
        };
        assert_eq!(template("/y/2024/7", &config), "/y/2024/:id");
        assert_eq!(template("/p/ab12cd", &config), "/p/:id");
        let off = EndpointTemplates {
            templates: false,
            ..EndpointTemplates::default()
        };
        assert_eq!(template("/users/1?x=2", &off), "/users/1?x=2");
    }
}
