//! Unit tests of token checking, minting, revocation and rotation.
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
            iat: None,
            identity: Identity::default(),
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
    // Identity travels from the token to the access.
    let identity = Identity {
        sub: Some("alice".into()),
        name: Some("Alice".into()),
        claims: serde_json::Map::from_iter([("role".to_owned(), serde_json::json!("admin"))]),
        jti: Some("t1".into()),
    };
    let who = mint_for(
        b"s3cret",
        vec!["room/*".into()],
        Perm::Write,
        Duration::from_secs(60),
        identity.clone(),
    )
    .expect("mint");
    let access = auth.check(Some(&who), &key("room", "r")).expect("valid");
    assert_eq!(access.identity.as_deref(), Some(&identity));
    // Revoked by jti, then by sub (tokens issued until then).
    auth.revoke(Some("t1".into()), None);
    assert_eq!(
        auth.check(Some(&who), &key("room", "r"))
            .map_err(|e| e.code),
        Err(ErrorCode::Forbidden)
    );
    let other = mint_for(
        b"s3cret",
        vec!["room/*".into()],
        Perm::Write,
        Duration::from_secs(60),
        Identity {
            sub: Some("alice".into()),
            ..Identity::default()
        },
    )
    .expect("mint");
    assert!(auth.check(Some(&other), &key("room", "r")).is_ok());
    auth.revoke(None, Some(("alice".into(), now_secs())));
    assert_eq!(
        auth.check(Some(&other), &key("room", "r"))
            .map_err(|e| e.code),
        Err(ErrorCode::Forbidden)
    );
    // Rotation: the old secret keeps working only within its grace.
    assert!(auth.rotate(b"n3w".to_vec(), Duration::from_secs(60)));
    assert!(auth.check(Some(&t), &key("ydoc", "a")).is_ok(), "grace");
    assert!(!auth.rotate(b"n3w".to_vec(), Duration::ZERO), "unchanged");
    assert!(auth.rotate(b"n3wer".to_vec(), Duration::ZERO));
    assert_eq!(
        auth.check(Some(&t), &key("ydoc", "a")).map_err(|e| e.code),
        Err(ErrorCode::Unauthorized)
    );
    assert!(
        auth.check_admin(Some(&t)).is_err(),
        "access tokens are not admin tokens"
    );
    assert!(auth.check_admin(Some("admin2")).is_err());
}

/// A write token for `ydoc/a` valid for two hours, signed with `s3cret`,
/// with `extra` claims.
fn signed(extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "obj": ["ydoc/a"], "perm": "write", "exp": now_secs() + 7200,
    });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"s3cret"),
    )
    .expect("encode")
}

/// A token that names a `nbf` (not before) is refused until then.
#[test]
fn not_before_is_honoured() {
    let auth = Auth::new(Some(b"s3cret".to_vec()), None);
    let with_nbf = |nbf: u64| signed(serde_json::json!({ "nbf": nbf }));
    let e = auth
        .check(Some(&with_nbf(now_secs() + 3600)), &key("ydoc", "a"))
        .expect_err("not valid yet");
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::Unauthorized, "token is not valid yet (nbf)")
    );
    assert!(auth
        .check(Some(&with_nbf(now_secs() - 1)), &key("ydoc", "a"))
        .is_ok());
}

/// A token issued more than a minute ahead of the server's clock is
/// refused: revoking its `sub` would not reach it.
#[test]
fn an_iat_in_the_future_is_refused() {
    let auth = Auth::new(Some(b"s3cret".to_vec()), None);
    let with_iat = |iat: u64| signed(serde_json::json!({ "iat": iat, "sub": "u" }));
    let e = auth
        .check(Some(&with_iat(now_secs() + 3600)), &key("ydoc", "a"))
        .expect_err("issued in the future");
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(e.message.contains("iat"), "{}", e.message);
    // A few seconds of skew are fine.
    assert!(auth
        .check(Some(&with_iat(now_secs() + 5)), &key("ydoc", "a"))
        .is_ok());
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
