//! Access control: HS256 JWT access tokens (`obj`, `perm`, `exp`, and who
//! holds them: `sub`, `name`, free-form `claims`, `jti`, `iat`), their
//! revocation, the secret's rotation, the admin token, and where a
//! request's token comes from.
//!
//! With no secret configured every request is anonymous and may write (the
//! server then refuses to bind anything but loopback unless told
//! `--allow-anonymous`). With a secret, every object route needs a token:
//! missing, malformed, expired, not yet valid (`nbf`), wrongly signed or
//! unsigned (`alg: none`) tokens are `unauthorized` (401); a valid token
//! for another object is `forbidden` (403). This module knows nothing of
//! HTTP beyond reading a header value.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roost_protocol::{ErrorCode, ErrorDetail};
use serde::{Deserialize, Serialize};

use crate::id::ObjectKey;

/// What a token lets its holder do to the objects it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    /// Connect, call and receive; every write fails with `forbidden`.
    Read,
    /// Read and write.
    Write,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Objects the token opens: `class/name` or `class/*`.
    pub obj: Vec<String>,
    /// What the token allows (`read` or `write`).
    pub perm: Perm,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch (revoking a `sub` refuses its
    /// tokens issued until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Who holds the token (`sub`, `name`, `claims`, `jti`).
    #[serde(flatten)]
    pub identity: Identity,
}

/// Who holds a token, as its issuer vouched: handed to objects as the
/// caller of each event (`Ctx::identity`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user (JWT `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Anything else the issuer put in (`roost token --claim k=v`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The token's id (JWT `jti`), for revoking this one token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// What a request may do, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The token is `read`-only: every write fails with `forbidden`.
    pub read_only: bool,
    /// When the token expires (ms since the epoch); `None` for anonymous access.
    pub expires_ms: Option<i64>,
    /// The token's holder; `None` for anonymous access.
    pub identity: Option<Arc<Identity>>,
    /// Which of the server's secrets signed the token (`Auth::generation`);
    /// 0 for anonymous access. A socket's token signed by a secret whose
    /// grace period ended is closed (`Runtime::close_sockets_signed_before`).
    pub signed_by: u64,
}

/// Signing secrets: the current one, and the one it replaced while its
/// grace period lasts (`rotate`).
#[derive(Default)]
struct Secrets {
    current: Option<Vec<u8>>,
    previous: Option<(Vec<u8>, Instant)>,
    /// The current secret's number: 1, then one more at each rotation (the
    /// previous secret's is one less).
    generation: u64,
}

/// Revoked token ids, and subjects whose tokens issued until a moment are
/// refused (seconds since the epoch).
#[derive(Default, Debug, Clone)]
pub struct Revoked {
    /// Token ids (`jti`) revoked one by one.
    pub jtis: HashSet<String>,
    /// Subjects (`sub`) whose tokens issued at or before this time (seconds
    /// since the epoch) are refused.
    pub subs: HashMap<String, u64>,
}

/// The server's token verification: signing secrets, revocations and the
/// admin token (cheap to clone; clones share state).
#[derive(Clone, Default)]
pub struct Auth {
    secrets: Arc<RwLock<Secrets>>,
    revoked: Arc<RwLock<Revoked>>,
    admin_token: Option<String>,
}

/// How far ahead of this server's clock a token's `iat` may be.
const MAX_CLOCK_AHEAD_SECS: u64 = 60;

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

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs an access token for no one in particular.
pub fn mint(secret: &[u8], obj: Vec<String>, perm: Perm, ttl: Duration) -> Result<String, String> {
    mint_for(secret, obj, perm, ttl, Identity::default())
}

/// Signs an access token for `identity`.
pub fn mint_for(
    secret: &[u8],
    obj: Vec<String>,
    perm: Perm,
    ttl: Duration,
    identity: Identity,
) -> Result<String, String> {
    let now = now_secs();
    let claims = Claims {
        obj,
        perm,
        exp: now + ttl.as_secs().max(1),
        iat: Some(now),
        identity,
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

impl Auth {
    /// Auth with this signing secret and admin token; an empty or absent
    /// secret lets every request in anonymously, an empty or absent admin
    /// token turns the admin API off.
    pub fn new(secret: Option<Vec<u8>>, admin_token: Option<String>) -> Auth {
        let secrets = Secrets {
            current: secret.filter(|s| !s.is_empty()),
            previous: None,
            generation: 1,
        };
        Auth {
            secrets: Arc::new(RwLock::new(secrets)),
            revoked: Arc::default(),
            admin_token: admin_token.filter(|t| !t.is_empty()),
        }
    }

    /// Whether object routes need a token (a signing secret is set).
    pub fn requires_tokens(&self) -> bool {
        self.read_secrets().current.is_some()
    }

    fn read_secrets(&self) -> std::sync::RwLockReadGuard<'_, Secrets> {
        self.secrets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `secret` the signing secret; tokens signed with the one it
    /// replaces stay valid for `grace`. Returns whether the secret changed.
    pub fn rotate(&self, secret: Vec<u8>, grace: Duration) -> bool {
        let mut secrets = self
            .secrets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if secret.is_empty() || secrets.current.as_deref() == Some(&secret[..]) {
            return false;
        }
        let old = secrets.current.replace(secret);
        secrets.previous = old.map(|old| (old, Instant::now() + grace));
        secrets.generation += 1;
        true
    }

    /// The current secret's number (see [`Access::signed_by`]).
    pub fn generation(&self) -> u64 {
        self.read_secrets().generation
    }

    /// Adds revocations (from the catalog at start-up, or the admin route).
    pub fn revoke(&self, jti: Option<String>, sub: Option<(String, u64)>) {
        let mut revoked = self
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(jti) = jti {
            revoked.jtis.insert(jti);
        }
        if let Some((sub, until)) = sub {
            let at = revoked.subs.entry(sub).or_insert(until);
            *at = (*at).max(until);
        }
    }

    /// Whether a token with these claims was revoked.
    fn is_revoked(&self, claims: &Claims) -> bool {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = &claims.identity;
        id.jti.as_ref().is_some_and(|j| revoked.jtis.contains(j))
            || id.sub.as_ref().is_some_and(|s| {
                revoked
                    .subs
                    .get(s)
                    .is_some_and(|until| claims.iat.is_none_or(|iat| iat <= *until))
            })
    }

    /// Whether the admin API is on (an admin token is set).
    pub fn admin_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Verifies a token's signature and expiry and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, ErrorDetail> {
        self.verify_signed(token).map(|(claims, _)| claims)
    }

    /// `verify`, and the number of the secret that signed the token.
    fn verify_signed(&self, token: &str) -> Result<(Claims, u64), ErrorDetail> {
        let (current, previous, generation) = {
            let secrets = self.read_secrets();
            let previous = secrets
                .previous
                .as_ref()
                .filter(|(_, until)| Instant::now() < *until)
                .map(|(s, _)| s.clone());
            (secrets.current.clone(), previous, secrets.generation)
        };
        let Some(secret) = current else {
            return Err(unauthorized("this server has no auth secret"));
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // `nbf` is optional, but a token that carries one is refused before it.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        let decoded = decode::<Claims>(token, &DecodingKey::from_secret(&secret), &validation);
        let decoded = match (decoded, previous) {
            (Err(e), Some(old))
                if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature =>
            {
                decode::<Claims>(token, &DecodingKey::from_secret(&old), &validation)
                    .map(|d| (d.claims, generation - 1))
            }
            (decoded, _) => decoded.map(|d| (d.claims, generation)),
        };
        let decoded = decoded.map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => unauthorized("token expired"),
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                unauthorized("token is not valid yet (nbf)")
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                unauthorized("token signature is invalid")
            }
            _ => unauthorized(format!("token is invalid: {e}")),
        })?;
        // Revoking a `sub` refuses its tokens issued until then: one
        // issued "later" by a clock far ahead would outlive that.
        if decoded
            .0
            .iat
            .is_some_and(|iat| iat > now_secs() + MAX_CLOCK_AHEAD_SECS)
        {
            return Err(unauthorized(
                "token is issued in the future (iat): check the issuer's clock",
            ));
        }
        Ok(decoded)
    }

    /// Decides what a request with `token` may do to `key`.
    pub fn check(&self, token: Option<&str>, key: &ObjectKey) -> Result<Access, ErrorDetail> {
        if !self.requires_tokens() {
            return Ok(Access {
                read_only: false,
                expires_ms: None,
                identity: None,
                signed_by: 0,
            });
        }
        let token = token.ok_or_else(|| {
            unauthorized("a token is required (Authorization: Bearer or ?token=)")
        })?;
        let (claims, signed_by) = self.verify_signed(token)?;
        let exact = format!("{}/{}", key.class, key.name);
        let wildcard = format!("{}/*", key.class);
        if !claims.obj.iter().any(|o| *o == exact || *o == wildcard) {
            return Err(forbidden(format!("the token does not open {exact}")));
        }
        if self.is_revoked(&claims) {
            return Err(forbidden("the token was revoked"));
        }
        Ok(Access {
            read_only: claims.perm == Perm::Read,
            expires_ms: Some(i64::try_from(claims.exp.saturating_mul(1000)).unwrap_or(i64::MAX)),
            identity: Some(Arc::new(claims.identity)),
            signed_by,
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

impl std::fmt::Debug for Auth {
    /// Never prints a secret or the admin token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("requires_tokens", &self.requires_tokens())
            .field("admin_enabled", &self.admin_enabled())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
