//! The earlier Python service's whole `.env` file starts the real `modelgen`
//! binary unchanged (docs/legacy.md, "Configuration"): every variable of its
//! settings module, with values of the shapes it took (Python booleans,
//! floats for seconds, one name in lower case), is either used with its
//! meaning or accepted and reported as ignored, with the reason, by
//! `modelgen config check` and the startup log. The service then serves:
//! the bearer token, the Apimart settings and the callback settings of that
//! file are the ones in effect.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use apimart_sim::{SimConfig, Simulator};
use modelgen_e2e::{Api, Backend, CallbackReceiver, DEADLINE, Service, TestDb, wait_for};
use serde_json::json;

const APIMART_KEY: &str = "sk-legacyENVkey7Hq2Wz9";
const API_TOKEN: &str = "legacy-api-token-Qm4Zt8";
const CALLBACK_TOKEN: &str = "legacy-callback-token-Vb3Xp6";
const OSS_SECRET: &str = "ossSecretLEGACY5Rt1Yu";

/// The earlier service's variables that modelgen accepts and ignores.
const IGNORED: [&str; 3] = [
    "DATABASE_ECHO",
    "APIMART_TASK_RETENTION_DAYS",
    "RESUME_POLLING_ON_STARTUP",
];

#[actix_web::test]
async fn the_earlier_services_env_file_starts_modelgen_unchanged() {
    earlier_env_file(Backend::Sqlite).await;
}

/// The same on MariaDB, with `DATABASE_URL` in the earlier service's own
/// spelling: `mysql+aiomysql://…?charset=utf8mb4`.
#[actix_web::test]
async fn the_earlier_services_env_file_with_its_mysql_url_starts_modelgen_unchanged() {
    if Backend::Mysql.skipped() {
        return;
    }
    earlier_env_file(Backend::Mysql).await;
}

async fn earlier_env_file(backend: Backend) {
    let db = TestDb::fresh(backend).await;
    let database_url = match backend {
        Backend::Mysql => format!(
            "mysql+aiomysql://{}?charset=utf8mb4",
            db.url.strip_prefix("mysql://").unwrap_or(&db.url)
        ),
        _ => db.url.clone(),
    };
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(300),
            estimated_time: Duration::from_millis(300),
            api_key: Some(APIMART_KEY.into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let receiver = CallbackReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Written from the earlier service's settings module, in its order, with
    // its comments' language and its value shapes. Only the addresses point
    // at this test's database, simulator and receiver, and the poll interval
    // is short so the test is quick.
    let env_file = format!(
        "# 数据库配置\n\
         DATABASE_URL={db}\n\
         DATABASE_ECHO=False\n\
         \n\
         # Apimart API 配置\n\
         APIMART_API_KEY={APIMART_KEY}\n\
         APIMART_BASE_URL={sim}\n\
         apimart_model=gemini-3-pro-image-preview\n\
         \n\
         # 任务轮询配置\n\
         TASK_POLL_INTERVAL=0.5\n\
         TASK_TIMEOUT=120.0\n\
         APIMART_TASK_RETENTION_DAYS=3\n\
         RESUME_POLLING_ON_STARTUP=True\n\
         \n\
         # API 认证配置\n\
         API_AUTH_ENABLED=True\n\
         API_AUTH_TOKEN={API_TOKEN}\n\
         \n\
         # 回调配置\n\
         CALLBACK_URL={callback}\n\
         CALLBACK_TOKEN={CALLBACK_TOKEN}\n\
         CALLBACK_MAX_RETRIES=3\n\
         \n\
         # HTTP 客户端与重试配置\n\
         HTTP_TIMEOUT=30.0\n\
         RETRY_MAX_ATTEMPTS=5\n\
         RETRY_BASE_DELAY=1.0\n\
         RETRY_MAX_DELAY=32.0\n\
         \n\
         # 阿里云 OSS 配置\n\
         OSS_ENDPOINT=oss-cn-shenzhen.aliyuncs.com\n\
         OSS_BUCKET=suitme\n\
         OSS_ACCESS_KEY_ID=LTAI5tLegacyKeyId0000\n\
         OSS_ACCESS_KEY_SECRET={OSS_SECRET}\n",
        db = database_url,
        sim = sim.base_url(),
        callback = receiver.url(),
    );
    std::fs::write(dir.path().join(".env"), env_file).unwrap();

    // Nothing but the file, and two settings of this sandbox: its OSS_*
    // variables alone would select the earlier service's Aliyun OSS bucket
    // (docs/storage.md), which no test may reach, so the process environment
    // names a local directory instead (it wins over .env); and the simulator's
    // result URLs are on loopback, which downloads reach only when allowed
    // (docs/outbound.md). The harness adds HOST, PORT and RUST_LOG.
    let service = Service::start(
        dir.path(),
        vec![
            (
                "STORAGE_URL".into(),
                format!("file://{}", dir.path().join("images").display()),
            ),
            ("OUTBOUND_ALLOWLIST".into(), sim.addr().to_string()),
        ],
    )
    .await;

    // `config check` accepts it, lists each ignored variable with its reason
    // and repeats no secret.
    let out = service.cli(&["config", "check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "config check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
    for name in IGNORED {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("# note: {name}: ignored: ")))
            .unwrap_or_else(|| panic!("{name} not reported as ignored:\n{stdout}"));
        assert!(line.len() > 60, "{name} needs a reason: {line}");
    }
    assert!(
        stdout.contains("# note: CALLBACK_MAX_RETRIES: a callback is given up"),
        "{stdout}"
    );
    // The OSS variables are the earlier service's image store; here the
    // sandbox's STORAGE_URL overrides them, and config check says so.
    assert!(
        stdout.contains("# note: OSS_ACCESS_KEY_ID: not used: STORAGE_URL names a local directory"),
        "{stdout}"
    );
    for kept in [
        "TASK_POLL_INTERVAL = 0.5",
        "TASK_TIMEOUT = 120.0",
        "HTTP_TIMEOUT = 30.0",
    ] {
        assert!(stdout.contains(kept), "{kept} not in effect:\n{stdout}");
    }
    assert!(
        stdout.contains("APIMART_MODEL = \"gemini-3-pro-image-preview\""),
        "a lower-case name is read too:\n{stdout}"
    );
    for secret in [APIMART_KEY, API_TOKEN, CALLBACK_TOKEN, OSS_SECRET] {
        assert!(
            !stdout.contains(secret),
            "config check printed a secret:\n{stdout}"
        );
    }

    // The startup log names the ignored settings too.
    let log = service.log_text();
    for name in IGNORED {
        assert!(log.contains(name), "{name} not in the startup log:\n{log}");
    }
    for secret in [APIMART_KEY, API_TOKEN, CALLBACK_TOKEN, OSS_SECRET] {
        assert!(!log.contains(secret), "the log holds a secret:\n{log}");
    }

    // It serves: API_AUTH_ENABLED=True with the file's token…
    let anonymous = Api::new(service.base_url()).with_timeout(Duration::from_secs(20));
    let request = json!({
        "user_id": "legacy-env",
        "picture_url": modelgen_e2e::fixture_data_uri("person_front.jpg"),
        "body_profile": {"gender": "女", "height": 165, "weight": 55.0, "age": 25, "skin_color": "浅小麦", "body_type": "标准"},
        "size": "4:3"
    });
    let (status, body) = anonymous.post("/models/default", &request).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1005)), "{body}");
    let api = anonymous.with_token(Some(API_TOKEN));
    let (status, body) = api.post("/models/default", &request).await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["task_id"].as_str().unwrap().to_string();

    // …the file's Apimart key and URL (the simulator refuses any other key)…
    let task = api.wait_terminal(&id, DEADLINE).await;
    assert_eq!(
        task["status"],
        "completed",
        "{task}\n{}",
        service.log_tail(40)
    );

    // …and its callback URL and token.
    let delivered = wait_for("the callback", DEADLINE, || async {
        receiver.delivered_for(&id).into_iter().next()
    })
    .await;
    assert_eq!(
        delivered.headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {CALLBACK_TOKEN}").as_str())
    );
    assert_eq!(delivered.body["status"], "completed");

    // The CLI takes ids in the earlier service's formats.
    let out = service
        .cli(&["tasks", "show", "task-unified-1757165031-uyujaw3d"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not found") && !stderr.contains("is not a task id"),
        "{stderr}"
    );
    let out = service.cli(&["tasks", "show", "task/../x"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a task id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = service.cli(&["tasks", "show", &id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
