//! Bad request bodies are problems that say which field is wrong, and nothing runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use api_common::Json;
use api_common::layers::{self, HttpSettings};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::ServiceExt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Start {
    definition_key: String,
    variables: Variables,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Variables {
    amount: u64,
}

fn app(calls: Arc<AtomicUsize>) -> Router {
    let router = Router::new().route(
        "/start",
        post(move |Json(_): Json<Start>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            StatusCode::CREATED
        }),
    );
    layers::apply(
        router,
        &HttpSettings {
            body_limit: 2048,
            ..HttpSettings::default()
        },
    )
}

async fn send(body: &str, content_type: &str) -> (StatusCode, serde_json::Value, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let response = app(calls.clone())
        .oneshot(
            Request::post("/start")
                .header("content-type", content_type)
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap(),
        calls.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_wrongly_typed_field_is_named() {
    let (status, body, calls) = send(
        r#"{"definition_key": "po", "variables": {"amount": "lots"}}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "validation_failed");
    assert_eq!(body["errors"][0]["field"], "variables.amount");
    assert_eq!(body["errors"][0]["code"], "invalid");
    assert_eq!(calls, 0);
}

#[tokio::test]
async fn a_missing_field_is_named() {
    let (status, body, _) = send(r#"{"variables": {"amount": 1}}"#, "application/json").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["code"], "required");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("definition_key")
    );
}

#[tokio::test]
async fn an_unknown_field_is_rejected() {
    let (status, body, _) = send(
        r#"{"definition_key": "po", "variables": {"amount": 1}, "extra": true}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["code"], "unknown_field");
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let (status, body, _) = send(r#"{"definition_key": "#, "application/json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "malformed_json");
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_unsupported() {
    let (status, body, _) = send("{}", "text/plain").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "unsupported_media_type");
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let big = format!(r#"{{"definition_key": "{}"}}"#, "x".repeat(4096));
    let (status, body, calls) = send(&big, "application/json").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "body_too_large");
    assert_eq!(calls, 0);
}

#[tokio::test]
async fn text_with_a_nul_character_is_refused_naming_the_field() {
    let (status, body, calls) = send(
        r#"{"definition_key": "po\u0000", "variables": {"amount": 1}}"#,
        "application/json",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "definition_key");
    assert_eq!(body["errors"][0]["code"], "nul_character");
    assert_eq!(calls, 0);
}

#[tokio::test]
async fn a_json_subtype_is_json_and_its_parameters_do_not_matter() {
    let calls = Arc::new(AtomicUsize::new(0));
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        let response = app(calls.clone())
            .oneshot(
                Request::post("/start")
                    .header("content-type", content_type)
                    .body(Body::from(
                        r#"{"definition_key": "po", "variables": {"amount": 1}}"#,
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{content_type}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_problem() {
    let router = Router::new().route(
        "/items/{id}",
        axum::routing::get(
            |axum::extract::Path(id): axum::extract::Path<String>| async move { id },
        ),
    );
    let response = layers::apply(router, &HttpSettings::default())
        .oneshot(Request::get("/items/%FF").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], "bad_request");
}
