//! The platform's OpenAPI document against the running platform: schemathesis (PyPI) reads
//! `/openapi.json` and sends generated requests, valid and invalid, to every operation, checking that
//! none gets a 5xx and that every answer matches the document (status, content type, headers,
//! schema). The platform serves on a socket over SQLite, as in `aldea all`; the requests carry a
//! session of a signed-up user, and `{org_id}` is that user's organization so that the answers with
//! data are checked too, not only the 404s. Needs `ALDEA_TEST_PYTHON` (scripts/test.sh's venv, which
//! has schemathesis beside it).

use std::path::PathBuf;
use std::sync::Arc;

use aldea_platform::{router, AppState, Config, Deps};
use aldea_store::{MemoryKeyCache, MemoryLimits};
use aldea_store_sql::SqlStore;
use serde_json::Value;

fn schemathesis() -> PathBuf {
    let python = std::env::var("ALDEA_TEST_PYTHON")
        .unwrap_or_else(|_| panic!("ALDEA_TEST_PYTHON is not set: run the tests through scripts/test.sh"));
    PathBuf::from(python).with_file_name("schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let dir = std::env::temp_dir().join(format!("aldea-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(SqlStore::open(&dir.join("platform.db")).await.unwrap());
    let deps = Deps {
        keys: store.clone(),
        accounts: store.clone(),
        usage: store.clone(),
        limits: Arc::new(MemoryLimits::new()),
        key_cache: Arc::new(MemoryKeyCache::new()),
    };
    let config = Config { jwt_secret: Some("a test secret of some length".to_owned().into()), ..Config::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(AppState::new(config, deps))).await });

    let client = reqwest_like_signup(addr).await;
    let token = client["token"].as_str().unwrap().to_owned();
    let org_id = client["org"]["id"].as_str().unwrap().to_owned();
    let key_id = client["key"]["id"].as_str().unwrap().to_owned();

    // The user's own id is left to generation: removing the only owner would end the run's access.
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\n\"path.org_id\" = \"{org_id}\"\n\"path.key_id\" = \"{key_id}\"\n"))
        .unwrap();
    let output = tokio::process::Command::new(schemathesis())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Logging out would end the session the run uses.
        .args(["--exclude-path", "/v1/auth/logout"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "12", "--seed", "7"])
        .args(["--workers", "2", "--no-color", "--generation-database", "none", "--request-timeout", "30"])
        .current_dir(&dir)
        .output()
        .await
        .expect("schemathesis runs (scripts/test.sh installs it into the test venv)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("{text}");
    assert!(output.status.success(), "schemathesis failed:\n{text}");
    // It ran the operations (not an empty selection).
    assert!(text.contains("passed"), "{text}");
}

/// Signs up over the socket (plain HTTP/1.1 on a TCP stream): the session and the organization.
async fn reqwest_like_signup(addr: std::net::SocketAddr) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"email":"fuzz@example.com","password":"a long password","org_name":"Fuzzing"}"#;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/auth/signup HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"))
}
