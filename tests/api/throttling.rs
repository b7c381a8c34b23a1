//! Login throttling: per e-mail address and per client address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, PASSWORD};

/// Asserts `429 too_many_requests` with a `Retry-After` of 1..=`window`
/// seconds, and returns it.
async fn assert_throttled(response: reqwest::Response, window: u64) -> u64 {
    let (headers, _) =
        assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let retry_after: u64 = headers
        .get(RETRY_AFTER)
        .expect("a 429 has Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(
        (1..=window).contains(&retry_after),
        "Retry-After within the window: {retry_after}"
    );
    retry_after
}

async fn fail_logins(app: &TestApp, email: &str, times: usize) {
    for attempt in 1..=times {
        let response = app.login(email, "wrong password").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "failed attempt {attempt} for {email}"
        );
    }
}

/// A client whose connections come from `ip` (any 127/8 address is loopback).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn five_failed_logins_block_the_email_with_429_and_retry_after() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    fail_logins(&app, &user.email, 5).await;

    let wrong = app.login(&user.email, "wrong password").await;
    let retry_after = assert_throttled(wrong, 900).await;
    assert!(
        retry_after > 800,
        "the default window is 900 s: {retry_after}"
    );

    // Even the right password is refused while blocked.
    let right = app.login(&user.email, &user.password).await;
    assert_throttled(right, 900).await;
}

#[tokio::test]
async fn throttling_ignores_the_email_case() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    for email in [
        "ada@example.com",
        "ADA@example.com",
        "Ada@Example.com",
        "ada@EXAMPLE.COM",
        "aDa@example.com",
    ] {
        fail_logins(&app, email, 1).await;
    }
    assert_throttled(app.login("ada@example.com", &user.password).await, 900).await;
}

#[tokio::test]
async fn four_failed_logins_do_not_block() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    fail_logins(&app, &user.email, 4).await;

    let response = app.login(&user.email, &user.password).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_emails_are_throttled_like_known_ones() {
    let app = spawn_app().await;
    fail_logins(&app, "nobody@example.com", 5).await;

    assert_throttled(app.login("nobody@example.com", PASSWORD).await, 900).await;
}

#[tokio::test]
async fn blocking_one_email_does_not_block_another() {
    let app = spawn_app().await;
    let other = app.register_user("bob@example.com").await;
    fail_logins(&app, "ada@example.com", 5).await;
    assert_throttled(app.login("ada@example.com", PASSWORD).await, 900).await;

    let response = app.login(&other.email, &other.password).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn successful_login_clears_the_emails_failures() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    fail_logins(&app, &user.email, 4).await;
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::OK
    );

    // Without the reset, the second of these would be the sixth failure
    // in the window and get 429.
    fail_logins(&app, &user.email, 4).await;
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn email_limit_and_window_are_configurable() {
    let app = spawn_app_with(|s| {
        s.login_max_failures = 2;
        s.login_window = 60;
    })
    .await;
    fail_logins(&app, "ada@example.com", 2).await;

    let retry_after = assert_throttled(app.login("ada@example.com", PASSWORD).await, 60).await;
    assert!(retry_after > 50, "{retry_after}");
}

#[tokio::test]
async fn validation_failures_do_not_count_as_failed_logins() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    for _ in 0..6 {
        let response = app
            .post_json(
                "/api/v1/login",
                &json!({"email": user.email, "password": "short"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn failed_logins_from_one_client_block_that_client_only() {
    let app = spawn_app_with(|s| {
        s.login_max_failures_per_client = 3;
        s.login_max_failures = 100;
    })
    .await;
    let user = app.register_user("ada@example.com").await;
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let bystander = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let login = |client: &reqwest::Client, email: &str, password: &str| {
        client
            .post(app.url("/api/v1/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };

    for i in 0..3 {
        let response = login(&attacker, &format!("guess{i}@example.com"), PASSWORD)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }

    // The attacker's client is blocked, for any address, even a right password.
    let response = login(&attacker, "fresh@example.com", PASSWORD)
        .await
        .unwrap();
    assert_throttled(response, 900).await;
    let response = login(&attacker, &user.email, &user.password).await.unwrap();
    assert_throttled(response, 900).await;

    // Another client address is unaffected.
    let response = login(&bystander, &user.email, &user.password)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = login(&bystander, "fresh@example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn successful_login_does_not_clear_the_clients_failures() {
    // The client limit stops one client guessing across many addresses; a
    // login to its own account must not reset it.
    let app = spawn_app_with(|s| {
        s.login_max_failures_per_client = 3;
        s.login_max_failures = 100;
    })
    .await;
    let user = app.register_user("ada@example.com").await;
    fail_logins(&app, "guess1@example.com", 1).await;
    fail_logins(&app, "guess2@example.com", 1).await;
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::OK
    );
    fail_logins(&app, "guess3@example.com", 1).await;

    assert_throttled(app.login("guess4@example.com", PASSWORD).await, 900).await;
}

#[tokio::test]
async fn email_block_lifts_once_the_window_has_passed() {
    // A window long enough that two failed logins (two password hashes)
    // surely fall inside it, short enough to wait for.
    const WINDOW: u64 = 5;
    let app = spawn_app_with(|s| {
        s.login_max_failures = 2;
        s.login_window = WINDOW;
    })
    .await;
    let user = app.register_user("ada@example.com").await;
    fail_logins(&app, &user.email, 2).await;
    assert_throttled(app.login(&user.email, &user.password).await, WINDOW).await;

    // Poll, boundedly, until the window has passed.
    let deadline = Instant::now() + Duration::from_secs(WINDOW + 30);
    loop {
        let response = app.login(&user.email, &user.password).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_throttled(response, WINDOW).await;
        assert!(Instant::now() < deadline, "the block never lifted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `logins` (e-mail, password) all at once; returns the statuses in
/// the same order.
async fn concurrent_logins(app: &TestApp, logins: &[(String, String)]) -> Vec<StatusCode> {
    let tasks: Vec<_> = logins
        .iter()
        .map(|(email, password)| {
            let request = app
                .client
                .post(app.url("/api/v1/login"))
                .json(&json!({"email": email, "password": password}));
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

#[tokio::test]
async fn concurrent_failed_logins_for_one_email_get_exactly_the_limit_checked() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    let wrong = vec![(user.email.clone(), "wrong password".to_owned()); 40];

    let statuses = concurrent_logins(&app, &wrong).await;

    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        35,
        "{statuses:?}"
    );
    assert_throttled(app.login(&user.email, &user.password).await, 900).await;
}

#[tokio::test]
async fn the_right_password_in_a_concurrent_burst_never_gets_past_five_failures() {
    let app = spawn_app().await;
    let user = app.register_user("ada@example.com").await;
    let mut logins = vec![(user.email.clone(), "wrong password".to_owned()); 39];
    logins.push((user.email.clone(), user.password.clone()));

    let statuses = concurrent_logins(&app, &logins).await;

    let failed = count(&statuses, StatusCode::UNAUTHORIZED);
    match statuses[39] {
        // It was reserved among the first five: its success cleared the
        // count, so at most 4 failures before it and 5 after it.
        StatusCode::OK => assert!(failed <= 9, "{statuses:?}"),
        StatusCode::TOO_MANY_REQUESTS => assert_eq!(failed, 5, "{statuses:?}"),
        other => panic!("the right password got {other}: {statuses:?}"),
    }
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS) + failed + count(&statuses, StatusCode::OK),
        40,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn concurrent_failed_logins_from_one_client_get_exactly_its_limit_checked() {
    let app = spawn_app_with(|s| {
        s.login_max_failures_per_client = 3;
        s.login_max_failures = 100;
    })
    .await;
    let guesses: Vec<_> = (0..30)
        .map(|i| (format!("guess{i}@example.com"), PASSWORD.to_owned()))
        .collect();

    let statuses = concurrent_logins(&app, &guesses).await;

    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        27,
        "{statuses:?}"
    );
}

/// A failed login carrying `X-Forwarded-For: forwarded_for`.
async fn fail_login_forwarded_for(app: &TestApp, forwarded_for: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"email": "nobody@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_count() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        s.login_max_failures_per_client = 2;
        s.login_max_failures = 100;
    })
    .await;
    for _ in 0..2 {
        let response = fail_login_forwarded_for(&app, "203.0.113.7").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(fail_login_forwarded_for(&app, "203.0.113.7").await, 900).await;
    // A client-written address left of the proxy's is not believed.
    assert_throttled(
        fail_login_forwarded_for(&app, "198.51.100.1, 203.0.113.7").await,
        900,
    )
    .await;

    // Another client behind the same proxy is unaffected.
    let response = fail_login_forwarded_for(&app, "203.0.113.8").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        s.login_max_failures_per_client = 2;
        s.login_max_failures = 100;
    })
    .await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        let response = fail_login_forwarded_for(&app, client).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Both counted against the socket peer, whatever the header says.
    assert_throttled(fail_login_forwarded_for(&app, "203.0.113.3").await, 900).await;
}

#[tokio::test]
async fn forwarded_ipv6_clients_are_counted_per_64() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.login_max_failures_per_client = 2;
        s.login_max_failures = 100;
    })
    .await;
    for client in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"] {
        let response = fail_login_forwarded_for(&app, client).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_throttled(
        fail_login_forwarded_for(&app, "2001:db8:1:2:abcd::9").await,
        900,
    )
    .await;
    let response = fail_login_forwarded_for(&app, "2001:db8:1:3::1").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "another /64");
}

#[tokio::test]
async fn the_rfc_7239_forwarded_header_is_honoured_from_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.login_max_failures_per_client = 1;
        s.login_max_failures = 100;
    })
    .await;
    let login = |forwarded: &'static str| {
        app.client
            .post(app.url("/api/v1/login"))
            .header("Forwarded", forwarded)
            .json(&json!({"email": "nobody@example.com", "password": PASSWORD}))
            .send()
    };
    let response = login("for=\"[2001:db8::1]:4711\";proto=https")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_throttled(login("for=\"[2001:db8::2]\"").await.unwrap(), 900).await;
    let response = login("for=192.0.2.60").await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
