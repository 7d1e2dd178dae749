//! Access control: HS256 JWT access tokens (`obj`, `perm`, `exp`), the admin
//! token, and where a request's token comes from.
//!
//! With no secret configured every request is anonymous and may write (the
//! server then refuses to bind anything but loopback unless told
//! `--allow-anonymous`). With a secret, every object route needs a token:
//! missing, malformed, expired, wrongly signed or unsigned (`alg: none`)
//! tokens are `unauthorized` (401); a valid token for another object is
//! `forbidden` (403). This module knows nothing of HTTP beyond reading a
//! header value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roost_protocol::{ErrorCode, ErrorDetail};
use serde::{Deserialize, Serialize};

use crate::id::ObjectKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    Read,
    Write,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Objects the token opens: `class/name` or `class/*`.
    pub obj: Vec<String>,
    pub perm: Perm,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub read_only: bool,
    /// When the token expires (ms since the epoch); `None` for anonymous access.
    pub expires_ms: Option<i64>,
}

#[derive(Clone, Default)]
pub struct Auth {
    secret: Option<Vec<u8>>,
    admin_token: Option<String>,
}

fn unauthorized(message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: ErrorCode::Unauthorized,
        message: message.into(),
    }
}

fn forbidden(message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: ErrorCode::Forbidden,
        message: message.into(),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs an access token.
pub fn mint(secret: &[u8], obj: Vec<String>, perm: Perm, ttl: Duration) -> Result<String, String> {
    let claims = Claims {
        obj,
        perm,
        exp: now_secs() + ttl.as_secs().max(1),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

impl Auth {
    pub fn new(secret: Option<Vec<u8>>, admin_token: Option<String>) -> Auth {
        Auth {
            secret: secret.filter(|s| !s.is_empty()),
            admin_token: admin_token.filter(|t| !t.is_empty()),
        }
    }

    pub fn requires_tokens(&self) -> bool {
        self.secret.is_some()
    }

    pub fn admin_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Verifies a token's signature and expiry and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, ErrorDetail> {
        let Some(secret) = &self.secret else {
            return Err(unauthorized("this server has no auth secret"));
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthorized("token expired"),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    unauthorized("token signature is invalid")
                }
                _ => unauthorized(format!("token is invalid: {e}")),
            })
    }

    /// Decides what a request with `token` may do to `key`.
    pub fn check(&self, token: Option<&str>, key: &ObjectKey) -> Result<Access, ErrorDetail> {
        if self.secret.is_none() {
            return Ok(Access {
                read_only: false,
                expires_ms: None,
            });
        }
        let token = token.ok_or_else(|| {
            unauthorized("a token is required (Authorization: Bearer or ?token=)")
        })?;
        let claims = self.verify(token)?;
        let exact = format!("{}/{}", key.class, key.name);
        let wildcard = format!("{}/*", key.class);
        if !claims.obj.iter().any(|o| *o == exact || *o == wildcard) {
            return Err(forbidden(format!("the token does not open {exact}")));
        }
        Ok(Access {
            read_only: claims.perm == Perm::Read,
            expires_ms: Some(i64::try_from(claims.exp.saturating_mul(1000)).unwrap_or(i64::MAX)),
        })
    }

    /// Checks an admin bearer token (constant-time comparison).
    pub fn check_admin(&self, token: Option<&str>) -> Result<(), ErrorDetail> {
        let Some(expected) = &self.admin_token else {
            return Err(ErrorDetail {
                code: ErrorCode::NotFound,
                message: "the admin API is disabled (start with --admin-token)".into(),
            });
        };
        let token = token.ok_or_else(|| unauthorized("the admin token is required"))?;
        // Equal lengths are compared in constant time; a length mismatch
        // answers at once (it reveals only the length).
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            token.as_bytes(),
            expected.as_bytes(),
        )) {
            Ok(())
        } else {
            Err(unauthorized("wrong admin token"))
        }
    }
}

/// The token of a request: `Authorization: Bearer ...` or `?token=...`.
pub fn token_from<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or(query_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(class: &str, name: &str) -> ObjectKey {
        ObjectKey::new(class, name).expect("key")
    }

    #[test]
    fn matrix() {
        let auth = Auth::new(Some(b"s3cret".to_vec()), Some("admin".into()));
        let t = mint(
            b"s3cret",
            vec!["ydoc/a".into(), "room/*".into()],
            Perm::Read,
            Duration::from_secs(60),
        )
        .expect("mint");
        let a = auth.check(Some(&t), &key("ydoc", "a")).expect("exact");
        assert!(a.read_only);
        assert!(
            auth.check(Some(&t), &key("room", "anything")).is_ok(),
            "wildcard"
        );
        assert_eq!(
            auth.check(Some(&t), &key("ydoc", "b")).map_err(|e| e.code),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(
            auth.check(None, &key("ydoc", "a")).map_err(|e| e.code),
            Err(ErrorCode::Unauthorized)
        );
        let wrong = mint(
            b"other",
            vec!["ydoc/a".into()],
            Perm::Write,
            Duration::from_secs(60),
        )
        .expect("mint");
        assert_eq!(
            auth.check(Some(&wrong), &key("ydoc", "a"))
                .map_err(|e| e.code),
            Err(ErrorCode::Unauthorized)
        );
        // alg: none, hand-made.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJvYmoiOlsieWRvYy9hIl0sInBlcm0iOiJ3cml0ZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(
            auth.check(Some(none), &key("ydoc", "a"))
                .map_err(|e| e.code),
            Err(ErrorCode::Unauthorized)
        );
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                obj: vec!["ydoc/a".into()],
                perm: Perm::Write,
                exp: now_secs() - 10,
            },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .expect("encode");
        let e = auth
            .check(Some(&expired), &key("ydoc", "a"))
            .expect_err("expired");
        assert_eq!(e.message, "token expired");
        assert_eq!(
            auth.check(Some("garbage"), &key("ydoc", "a"))
                .map_err(|e| e.code),
            Err(ErrorCode::Unauthorized)
        );
        assert!(auth.check_admin(Some("admin")).is_ok());
        assert!(
            auth.check_admin(Some(&t)).is_err(),
            "access tokens are not admin tokens"
        );
        assert!(auth.check_admin(Some("admin2")).is_err());
    }

    #[test]
    fn anonymous_without_secret() {
        let auth = Auth::new(None, None);
        let a = auth.check(None, &key("ydoc", "a")).expect("anonymous");
        assert!(!a.read_only);
        assert_eq!(
            auth.check_admin(Some("x")).map_err(|e| e.code),
            Err(ErrorCode::NotFound)
        );
    }

    #[test]
    fn bearer_or_query() {
        assert_eq!(token_from(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(token_from(None, Some("q")), Some("q"));
        assert_eq!(token_from(Some("Basic x"), Some("q")), Some("q"));
    }
}
