use crate::helpers::spawn;

#[tokio::test]
async fn every_command_route_is_documented_with_bearer_security_and_problem_answers() {
    let app = spawn().await;
    let doc = serde_json::to_value(app.api.router().into_openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/sessions", "get"),
        ("/api/v1/auth/sessions/{id}/revoke", "post"),
        ("/api/v1/auth/sessions/revoke-others", "post"),
        ("/api/v1/auth/two-factor", "post"),
        ("/api/v1/auth/two-factor/confirm", "post"),
        ("/api/v1/tenants", "post"),
        ("/api/v1/tenants/{id}/two-factor-policy", "put"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{id}/groups", "put"),
        ("/api/v1/users/{id}/roles", "put"),
        ("/api/v1/users/{id}/password", "put"),
        ("/api/v1/users/{id}/deactivate", "post"),
        ("/api/v1/users/{id}/reactivate", "post"),
        ("/api/v1/users/{id}/notifications", "put"),
        ("/api/v1/users/{id}/sessions/revoke", "post"),
        ("/api/v1/users/{id}/erase", "post"),
        ("/api/v1/users/{id}/two-factor", "post"),
        ("/api/v1/users/{id}/two-factor/confirm", "post"),
        ("/api/v1/users/{id}/two-factor/disable", "post"),
        ("/api/v1/users/{id}/two-factor/recovery-codes", "post"),
        ("/api/v1/workflow-definitions", "post"),
        ("/api/v1/workflow-instances", "post"),
        ("/api/v1/workflow-instances/{id}/cancel", "post"),
        (
            "/api/v1/workflow-instances/{id}/incidents/{step_id}/retry",
            "post",
        ),
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks/{id}/claim", "post"),
        ("/api/v1/tasks/{id}/release", "post"),
        ("/api/v1/tasks/{id}/assign", "post"),
        ("/api/v1/tasks/{id}/delegate", "post"),
        ("/api/v1/tasks/{id}/complete", "post"),
        ("/api/v1/tasks/{id}/comments", "post"),
        ("/api/v1/tasks/{id}/documents", "post"),
        ("/api/v1/tasks/{id}/documents/{document_id}/remove", "post"),
        ("/api/v1/workflow-instances/{id}/documents", "post"),
        (
            "/api/v1/workflow-instances/{id}/documents/{document_id}/remove",
            "post",
        ),
        ("/api/v1/approvals/{id}/decisions", "post"),
        ("/api/v1/approvals/{id}/delegate", "post"),
    ];
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    let mut operation_ids: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|o| o["operationId"].as_str().unwrap())
        .collect();
    operation_ids.sort();
    let count = operation_ids.len();
    operation_ids.dedup();
    assert_eq!(operation_ids.len(), count, "operation ids are unique");
    for (path, method) in expected {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        if !path.starts_with("/api/v1/auth") {
            assert_eq!(
                operation["security"][0]["bearer"],
                serde_json::json!([]),
                "{path}"
            );
            let problems = &operation["responses"]["404"]["content"]["application/problem+json"];
            assert!(problems.is_object(), "{path} documents no problem answers");
        }
    }
}
