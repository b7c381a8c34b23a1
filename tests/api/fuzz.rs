//! Fuzzing the `Authorization` header over real HTTP: arbitrary header values
//! (generated with proptest strategies) and mutated valid tokens never get a
//! 2xx or a 5xx from an authenticated route, always the JSON 401 with a
//! challenge, and the server keeps serving.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRng, TestRunner};
use reqwest::header::HeaderValue;
use reqwest::StatusCode;

use crate::helpers::{spawn_app, TestApp};

/// Header values as a client can send them: visible ASCII, spaces, tabs and
/// obs-text bytes, often starting with a Bearer-like scheme.
fn header_values() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        8 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        1 => 0x80u8..=0xff,
    ];
    let scheme = prop_oneof![
        Just(b"Bearer ".to_vec()),
        Just(b"bearer ".to_vec()),
        Just(b"BEARER\t".to_vec()),
        Just(b"Bearer".to_vec()),
        Just(b"Basic ".to_vec()),
        Just(Vec::new()),
    ];
    (scheme, proptest::collection::vec(byte, 0..400)).prop_map(|(mut s, rest)| {
        s.extend(rest);
        s
    })
}

fn sample<T: std::fmt::Debug>(
    strategy: impl Strategy<Value = T>,
    count: usize,
    seed: u8,
) -> Vec<T> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[seed; 32]),
    );
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

async fn assert_refused(app: &TestApp, path: &str, value: HeaderValue) {
    let request = if path.ends_with("logout") {
        app.client.delete(app.url(path))
    } else {
        app.client.get(app.url(path))
    };
    let response = request
        .header("Authorization", value.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "Authorization {value:?} on {path}"
    );
    assert!(response.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = response.json().await.unwrap();
    let code = body["error"].as_str().unwrap();
    assert!(
        code == "invalid_token" || code == "unauthenticated",
        "{body}"
    );
}

#[tokio::test]
async fn arbitrary_authorization_headers_are_always_refused_with_a_json_401() {
    let app = spawn_app().await;
    let mut sent = 0;
    for (i, bytes) in sample(header_values(), 1500, 7).into_iter().enumerate() {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            continue;
        };
        let path = if i % 2 == 0 {
            "/api/v1/user"
        } else {
            "/api/v1/logout"
        };
        assert_refused(&app, path, value).await;
        sent += 1;
    }
    assert!(sent > 1000, "only {sent} header values were sendable");
    app.assert_still_serving().await;
}

#[tokio::test]
async fn mutated_valid_tokens_are_always_refused() {
    let app = spawn_app().await;
    let (_, token) = app.user_with_token("fuzz@example.com").await;
    let mutations = sample(
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec(0x21u8..0x7f, 0..4),
            0usize..4,
        ),
        800,
        11,
    );
    let mut tried = 0;
    for (position, insert, remove) in mutations {
        let mut bytes = token.clone().into_bytes();
        let at = position.index(bytes.len());
        let end = (at + remove).min(bytes.len());
        bytes.splice(at..end, insert);
        if bytes == token.as_bytes() {
            continue;
        }
        let mut value = b"Bearer ".to_vec();
        value.extend(&bytes);
        let value = HeaderValue::from_bytes(&value).unwrap();
        assert_refused(&app, "/api/v1/user", value).await;
        tried += 1;
    }
    assert!(tried > 700);
    // The original token still works: the refusals were about the mutations.
    let response = app.current_user_with(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
}
