//! Forged and doctored tokens. Each is built with the test server's secret
//! (unless the point is a wrong one), so the only reason to refuse it is the
//! flaw under test. The first test checks that a correctly forged token is
//! accepted, which keeps every refusal below meaningful.

use jsonwebtoken::{Algorithm, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_invalid_token, b64, claims_of, forge, forge_raw_header, forge_with, now, spawn_app,
    unb64, valid_claims, TestApp, AUDIENCE, TEST_SECRET,
};

/// A server with one user; returns the app and the user's id.
async fn app_with_user() -> (TestApp, i64) {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    (app, user.id)
}

async fn assert_accepted(app: &TestApp, token: &str) {
    let response = app.current_user_with(token).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "token should be accepted: {text}");
}

async fn assert_rejected(app: &TestApp, token: &str) {
    assert_invalid_token(app.current_user_with(token).await).await;
    assert_invalid_token(app.logout_with(token).await).await;
}

/// `valid_claims(sub)` with `key` removed.
fn claims_without(sub: i64, key: &str) -> Value {
    let mut claims = valid_claims(sub);
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// `valid_claims(sub)` with `key` set to `value`.
fn claims_with(sub: i64, key: &str, value: Value) -> Value {
    let mut claims = valid_claims(sub);
    claims[key] = value;
    claims
}

#[tokio::test]
async fn token_forged_with_the_right_secret_and_claims_is_accepted() {
    let (app, id) = app_with_user().await;
    assert_accepted(&app, &forge(&valid_claims(id))).await;
}

#[tokio::test]
async fn alg_none_token_is_rejected() {
    let (app, id) = app_with_user().await;
    let payload = b64(valid_claims(id).to_string().as_bytes());
    for header in [
        "eyJhbGciOiJub25lIn0".to_owned(), // {"alg":"none"}
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(br#"{"alg":"None","typ":"JWT"}"#),
        b64(br#"{"alg":"NONE","typ":"JWT"}"#),
    ] {
        assert_rejected(&app, &format!("{header}.{payload}.")).await;
    }
}

#[tokio::test]
async fn alg_none_header_with_a_valid_hs256_signature_is_rejected() {
    let (app, id) = app_with_user().await;
    let token = forge_raw_header(&json!({"alg": "none", "typ": "JWT"}), &valid_claims(id));
    assert_rejected(&app, &token).await;
}

#[tokio::test]
async fn hs384_token_signed_with_the_right_secret_is_rejected() {
    let (app, id) = app_with_user().await;
    let token = forge_with(Algorithm::HS384, TEST_SECRET.as_bytes(), &valid_claims(id));
    assert_rejected(&app, &token).await;
}

#[tokio::test]
async fn hs512_token_signed_with_the_right_secret_is_rejected() {
    let (app, id) = app_with_user().await;
    let token = forge_with(Algorithm::HS512, TEST_SECRET.as_bytes(), &valid_claims(id));
    assert_rejected(&app, &token).await;
}

#[tokio::test]
async fn token_claiming_another_algorithm_family_is_rejected() {
    // Algorithm confusion: the header names a public-key algorithm while the
    // signature is an HMAC with the shared secret.
    let (app, id) = app_with_user().await;
    for alg in ["RS256", "ES256", "PS256", "EdDSA"] {
        let token = forge_raw_header(&json!({"alg": alg, "typ": "JWT"}), &valid_claims(id));
        assert_rejected(&app, &token).await;
    }
}

#[tokio::test]
async fn token_signed_with_a_wrong_secret_is_rejected() {
    let (app, id) = app_with_user().await;
    let token = forge_with(
        Algorithm::HS256,
        b"another-secret-that-is-also-32-bytes-long!!",
        &valid_claims(id),
    );
    assert_rejected(&app, &token).await;
}

#[tokio::test]
async fn token_with_a_tampered_payload_is_rejected() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    let other = app.register_user("eve@example.com").await;

    let mut claims = claims_of(&token);
    claims["sub"] = json!(other.id.to_string());
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_rejected(&app, &tampered).await;
}

#[tokio::test]
async fn token_with_a_tampered_signature_is_rejected() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = unb64(signature);
    bytes[0] ^= 1;
    assert_rejected(&app, &format!("{message}.{}", b64(&bytes))).await;
    assert_rejected(&app, &format!("{message}.")).await;
}

#[tokio::test]
async fn token_expired_beyond_the_leeway_is_rejected() {
    let (app, id) = app_with_user().await;
    // Default leeway: 30 s.
    let mut claims = valid_claims(id);
    claims["iat"] = json!(now() - 3600);
    claims["nbf"] = json!(now() - 3600);
    claims["exp"] = json!(now() - 120);
    assert_rejected(&app, &forge(&claims)).await;
}

#[tokio::test]
async fn token_expired_within_the_leeway_is_accepted() {
    let (app, id) = app_with_user().await;
    let mut claims = valid_claims(id);
    claims["iat"] = json!(now() - 3600);
    claims["nbf"] = json!(now() - 3600);
    claims["exp"] = json!(now() - 5);
    assert_accepted(&app, &forge(&claims)).await;
}

#[tokio::test]
async fn leeway_is_configurable() {
    let app = crate::helpers::spawn_app_with(|s| s.leeway = 0).await;
    let user = app.register_user("ada@example.com").await;
    let mut claims = valid_claims(user.id);
    claims["exp"] = json!(now() - 5);
    assert_rejected(&app, &forge(&claims)).await;
}

#[tokio::test]
async fn token_not_valid_before_a_time_beyond_the_leeway_is_rejected() {
    let (app, id) = app_with_user().await;
    let token = forge(&claims_with(id, "nbf", json!(now() + 120)));
    assert_rejected(&app, &token).await;
}

#[tokio::test]
async fn token_not_valid_before_a_time_within_the_leeway_is_accepted() {
    let (app, id) = app_with_user().await;
    let token = forge(&claims_with(id, "nbf", json!(now() + 5)));
    assert_accepted(&app, &token).await;
}

#[tokio::test]
async fn token_without_nbf_is_accepted() {
    let (app, id) = app_with_user().await;
    assert_accepted(&app, &forge(&claims_without(id, "nbf"))).await;
}

#[tokio::test]
async fn token_without_jti_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_without(id, "jti"))).await;
}

#[tokio::test]
async fn token_with_an_empty_or_non_string_jti_is_rejected() {
    let (app, id) = app_with_user().await;
    for jti in [json!(""), json!(null), json!(12345), json!(["a"])] {
        assert_rejected(&app, &forge(&claims_with(id, "jti", jti))).await;
    }
}

#[tokio::test]
async fn token_without_sub_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_without(id, "sub"))).await;
}

#[tokio::test]
async fn token_with_a_numeric_or_non_numeric_text_sub_is_rejected_on_current_user() {
    let (app, id) = app_with_user().await;
    // sub must be the id as a string; a JSON number is not a string.
    assert_rejected(&app, &forge(&claims_with(id, "sub", json!(id)))).await;
    let token = forge(&claims_with(id, "sub", json!("not-a-number")));
    assert_invalid_token(app.current_user_with(&token).await).await;
}

#[tokio::test]
async fn token_without_exp_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_without(id, "exp"))).await;
}

#[tokio::test]
async fn token_without_aud_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_without(id, "aud"))).await;
}

#[tokio::test]
async fn token_without_iss_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_without(id, "iss"))).await;
}

#[tokio::test]
async fn token_with_a_wrong_issuer_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_with(id, "iss", json!("evil")))).await;
}

#[tokio::test]
async fn token_with_a_wrong_audience_is_rejected() {
    let (app, id) = app_with_user().await;
    assert_rejected(&app, &forge(&claims_with(id, "aud", json!("evil")))).await;
    assert_rejected(
        &app,
        &forge(&claims_with(id, "aud", json!(["evil", "other"]))),
    )
    .await;
    assert_rejected(&app, &forge(&claims_with(id, "aud", json!([])))).await;
}

#[tokio::test]
async fn token_with_an_audience_array_containing_ours_is_accepted() {
    let (app, id) = app_with_user().await;
    let token = forge(&claims_with(id, "aud", json!(["other", AUDIENCE])));
    assert_accepted(&app, &token).await;
}

#[tokio::test]
async fn token_with_exp_as_a_string_is_rejected() {
    let (app, id) = app_with_user().await;
    let exp = (now() + 600).to_string();
    assert_rejected(&app, &forge(&claims_with(id, "exp", json!(exp)))).await;
    // Also an already-expired one: skipping string claims would accept it.
    let expired = (now() - 3600).to_string();
    assert_rejected(&app, &forge(&claims_with(id, "exp", json!(expired)))).await;
}

#[tokio::test]
async fn token_with_nbf_as_a_string_is_rejected() {
    let (app, id) = app_with_user().await;
    let nbf = (now() + 3600).to_string();
    assert_rejected(&app, &forge(&claims_with(id, "nbf", json!(nbf)))).await;
    let past = (now() - 60).to_string();
    assert_rejected(&app, &forge(&claims_with(id, "nbf", json!(past)))).await;
}

#[tokio::test]
async fn token_for_a_user_that_does_not_exist_is_rejected_on_current_user() {
    let (app, id) = app_with_user().await;
    let token = forge(&claims_with(id, "sub", json!((id + 1000).to_string())));
    assert_invalid_token(app.current_user_with(&token).await).await;
}

#[tokio::test]
async fn key_location_header_fields_are_ignored() {
    // jku / x5u point at an address where nothing listens: were a key
    // fetched from them, the request would hang or fail; kid names no key.
    let (app, id) = app_with_user().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("../../../../etc/passwd".into());
    header.jku = Some("http://127.0.0.1:9/keys.json".into());
    header.x5u = Some("http://127.0.0.1:9/cert.pem".into());
    let token = jsonwebtoken::encode(
        &header,
        &valid_claims(id),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    assert_accepted(&app, &token).await;

    // And a token signed with another secret stays refused whatever they say.
    let wrong = jsonwebtoken::encode(
        &header,
        &valid_claims(id),
        &jsonwebtoken::EncodingKey::from_secret(b"attacker-controlled-secret-0123456789abcdef"),
    )
    .unwrap();
    assert_rejected(&app, &wrong).await;
}

#[tokio::test]
async fn token_revoked_by_its_jti_is_rejected_even_if_reissued_by_a_forger() {
    // The denylist keys on jti: a copy of a revoked token's claims, re-signed,
    // is the same token.
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("ada@example.com").await;
    assert_eq!(
        app.logout_with(&token).await.status(),
        StatusCode::NO_CONTENT
    );
    let reissued = forge(&claims_of(&token));
    assert_rejected(&app, &reissued).await;
}

#[tokio::test]
async fn token_with_a_crit_header_is_rejected() {
    // RFC 7515 4.1.11: a recipient that does not understand a listed
    // extension must refuse the token; tokengate understands none.
    let (app, id) = app_with_user().await;
    for crit in [json!(["exp"]), json!(["b64"]), json!(["x-unknown"])] {
        let header = json!({"alg": "HS256", "typ": "JWT", "crit": crit});
        assert_rejected(&app, &forge_raw_header(&header, &valid_claims(id))).await;
    }
    // The same header without `crit` is fine, so `crit` is the reason.
    let plain = forge_raw_header(&json!({"alg": "HS256", "typ": "JWT"}), &valid_claims(id));
    assert_accepted(&app, &plain).await;
}

#[tokio::test]
async fn token_whose_iss_is_not_a_string_is_rejected() {
    let (app, id) = app_with_user().await;
    for iss in [json!(["tokengate"]), json!(["tokengate", "evil"]), json!(1)] {
        assert_rejected(&app, &forge(&claims_with(id, "iss", iss))).await;
    }
}

#[tokio::test]
async fn token_whose_iat_is_not_a_number_is_rejected() {
    let (app, id) = app_with_user().await;
    for iat in [json!(now().to_string()), json!(true), json!([now()])] {
        assert_rejected(&app, &forge(&claims_with(id, "iat", iat))).await;
    }
    // A token without iat at all is still fine (the contract does not require it).
    assert_accepted(&app, &forge(&claims_without(id, "iat"))).await;
}

#[tokio::test]
async fn token_whose_sub_is_not_the_canonical_decimal_id_is_rejected() {
    let (app, id) = app_with_user().await;
    for sub in [
        format!("+{id}"),
        format!("0{id}"),
        format!("00{id}"),
        format!(" {id}"),
        format!("{id} "),
        format!("{id}.0"),
        format!("-{id}"),
        "0".to_owned(),
        "99999999999999999999".to_owned(),
    ] {
        assert_rejected(&app, &forge(&claims_with(id, "sub", json!(sub)))).await;
    }
    assert_accepted(&app, &forge(&claims_with(id, "sub", json!(id.to_string())))).await;
}

#[tokio::test]
async fn token_expiring_absurdly_far_away_is_rejected() {
    // A token tokengate issues now expires at most one TTL (plus leeway)
    // from now; anything later is not ours, and its revocation would have
    // to be stored for ever.
    let (app, id) = app_with_user().await;
    let ttl = app.settings.token_ttl as i64;
    let leeway = app.settings.leeway as i64;
    for exp in [
        now() + ttl + leeway + 120,
        now() + 10 * 365 * 86_400,
        32_503_680_000,
    ] {
        assert_rejected(&app, &forge(&claims_with(id, "exp", json!(exp)))).await;
    }
    assert_accepted(&app, &forge(&claims_with(id, "exp", json!(now() + ttl)))).await;
}

#[tokio::test]
async fn token_with_an_oversized_jti_is_rejected() {
    let (app, id) = app_with_user().await;
    let jti = "j".repeat(129);
    assert_rejected(&app, &forge(&claims_with(id, "jti", json!(jti)))).await;
}
