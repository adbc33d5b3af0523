//! The operator console in a real headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini): the real `modelgen` binary on SQLite with
//! `API_AUTH_TOKEN` set, the Apimart simulator and a callback receiver on
//! loopback. Each test saves a screenshot when it fails (in
//! `$CARGO_TARGET_DIR/console-screenshots`); `screenshots_of_each_page`
//! saves one of every page always, into `CONSOLE_SCREENSHOTS_DIR` when set
//! (`make console-screenshots` points it at docs/screenshots).
//!
//! Chromium and chromedriver are required: a missing one fails the tests
//! (`CHROMIUM_BIN`, `CHROMEDRIVER_BIN` override the Debian paths).

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use apimart_sim::{SimConfig, SimHandle, Simulator};
use fantoccini::{Client, ClientBuilder, Locator};
use modelgen_e2e::{
    Api, Backend, CallbackReceiver, Service, TestDb, fast_env, fixture_data_uri, free_port,
};
use serde_json::{Value, json};

const TOKEN: &str = "console-token-7f3a9c";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long the page may take to show what the service did.
const PAGE_DEADLINE: Duration = Duration::from_secs(45);

fn chromium_bin() -> PathBuf {
    PathBuf::from(std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into()))
}

fn chromedriver_bin() -> PathBuf {
    PathBuf::from(
        std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "/usr/bin/chromedriver".into()),
    )
}

/// Where failure screenshots go.
fn failure_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

/// chromedriver on a free loopback port, killed (by its PID) on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        for (what, bin) in [
            ("chromium", chromium_bin()),
            ("chromedriver", chromedriver_bin()),
        ] {
            assert!(
                bin.exists(),
                "{what} is missing at {}: the console tests need a real browser \
                 (apt-get install chromium chromium-driver; .ci/run installs them)",
                bin.display()
            );
        }
        let port = free_port();
        let child = Command::new(chromedriver_bin())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, port };
        let status = format!("http://127.0.0.1:{port}/status");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(Instant::now() < end, "chromedriver did not start on {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    /// A headless Chromium session with a `width`×`height` window; below
    /// 500 px wide (Chromium's narrowest window), a phone's viewport through
    /// device emulation.
    async fn session(&self, width: u32, height: u32) -> Client {
        let mut options = json!({
            "binary": chromium_bin(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--force-device-scale-factor=1",
                format!("--window-size={},{height}", width.max(500)),
            ],
        });
        if width < 500 {
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1, "touch": true},
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util_connector())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plain-HTTP connector fantoccini talks to chromedriver with (loopback, no TLS).
fn hyper_util_connector() -> hyper_util::client::legacy::connect::HttpConnector {
    hyper_util::client::legacy::connect::HttpConnector::new()
}

/// The service, the simulator, the callback receiver and a browser.
struct World {
    _db: TestDb,
    _dir: tempfile::TempDir,
    _sim: SimHandle,
    receiver: CallbackReceiver,
    service: Service,
    api: Api,
    driver: Driver,
}

async fn world() -> World {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        SimConfig {
            task_duration: Duration::from_millis(1500),
            estimated_time: Duration::from_millis(1500),
            api_key: Some("console-key".into()),
            ..SimConfig::default()
        },
        0,
    )
    .await
    .unwrap();
    let receiver = CallbackReceiver::start().await;
    let env = fast_env(
        &db,
        dir.path(),
        &sim.base_url(),
        "console-key",
        &[
            ("API_AUTH_TOKEN", TOKEN.into()),
            ("CALLBACK_URL", receiver.url()),
            ("CALLBACK_SIGNING_SECRET", SIGNING_SECRET.into()),
            // Two attempts, quickly: a receiver that is down makes a dead callback in a second.
            ("CALLBACK_MAX_RETRIES", "2".into()),
            ("CALLBACK_BASE_DELAY", "0.2".into()),
            ("CALLBACK_MAX_DELAY", "0.3".into()),
        ],
    );
    let service = Service::start(dir.path(), env).await;
    let api = Api::new(service.base_url()).with_token(Some(TOKEN));
    let driver = Driver::start().await;
    World {
        _db: db,
        _dir: dir,
        _sim: sim,
        receiver,
        service,
        api,
        driver,
    }
}

impl World {
    /// Creates a default task through the API; returns its id.
    async fn create_task(&self, user: &str) -> String {
        let (status, body) = self
            .api
            .post(
                "/models/default",
                &json!({
                    "user_id": user,
                    "user_image": fixture_data_uri("person_front.jpg"),
                    "body_profile": {"height_cm": 168, "weight_kg": 55, "skin_tone": "fair", "body_shape": "hourglass", "age": 30},
                }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["data"]["task_id"].as_str().unwrap().to_owned()
    }

    fn url(&self, fragment: &str) -> String {
        format!("{}/console{fragment}", self.service.base_url())
    }
}

/// Runs `scenario` in a fresh browser session; on failure saves a
/// screenshot named after the test, then fails with the scenario's error.
async fn run<F, Fut>(name: &str, world: &World, width: u32, height: u32, scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = world.driver.session(width, height).await;
    let outcome = scenario(client.clone()).await;
    if let Err(e) = outcome {
        let dir = failure_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.png"));
        let saved = match client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).map(|()| path.display().to_string()),
            Err(err) => Ok(format!("no screenshot: {err}")),
        };
        let _ = client.close().await;
        panic!(
            "{name}: {e:#}\nscreenshot: {}\nservice log tail:\n{}",
            saved.unwrap_or_else(|err| err.to_string()),
            world
                .service
                .log_text()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let _ = client.close().await;
}

/// Waits until `check` (a script returning a value, `null` meaning "not
/// yet") gives a non-null value, or fails naming `what`.
async fn until(client: &Client, what: &str, script: &str) -> anyhow::Result<Value> {
    let end = Instant::now() + PAGE_DEADLINE;
    loop {
        let v = client
            .execute(script, vec![])
            .await
            .with_context(|| format!("running the check for {what}"))?;
        if !v.is_null() && v != Value::Bool(false) {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn sign_in(client: &Client, world: &World, token: &str) -> anyhow::Result<()> {
    client.goto(&world.url("")).await?;
    let input = client
        .wait()
        .at_most(PAGE_DEADLINE)
        .for_element(Locator::Id("token"))
        .await
        .context("the sign-in form")?;
    input.send_keys(token).await?;
    client
        .find(Locator::Id("signin-submit"))
        .await?
        .click()
        .await?;
    Ok(())
}

async fn signed_in(client: &Client, world: &World) -> anyhow::Result<()> {
    sign_in(client, world, TOKEN).await?;
    until(
        client,
        "the overview after signing in",
        "return document.querySelector('#overview .cards') ? true : null",
    )
    .await?;
    Ok(())
}

/// Waits until the page has painted what it has (two animation frames),
/// for a screenshot of the finished layout.
async fn painted(client: &Client) -> anyhow::Result<()> {
    client
        .execute_async(
            "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
            vec![],
        )
        .await?;
    Ok(())
}

async fn click(client: &Client, css: &str) -> anyhow::Result<()> {
    client
        .wait()
        .at_most(PAGE_DEADLINE)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waiting for {css}"))?
        .click()
        .await
        .with_context(|| format!("clicking {css}"))?;
    Ok(())
}

#[actix_web::test]
async fn a_wrong_token_is_refused_and_the_right_one_opens_the_console() {
    let w = &world().await;
    run("sign_in", w, 1280, 800, |c| async move {
        sign_in(&c, w, "not-the-token").await?;
        let msg = until(
            &c,
            "the refusal",
            "const e = document.getElementById('signin-error'); return e && e.textContent ? e.textContent : null",
        )
        .await?;
        ensure!(
            msg.as_str().unwrap_or("").contains("refused (401)"),
            "refusal message: {msg}"
        );
        let kept = c
            .execute(
                "return sessionStorage.getItem('modelgen.console.token')",
                vec![],
            )
            .await?;
        ensure!(kept.is_null(), "a refused token is not kept: {kept}");
        ensure!(
            c.find(Locator::Css("header nav")).await.is_err(),
            "nothing but the sign-in page is shown"
        );

        // The right token: the overview, and the token kept for this tab only.
        c.find(Locator::Id("token")).await?.clear().await?;
        c.find(Locator::Id("token")).await?.send_keys(TOKEN).await?;
        c.find(Locator::Id("signin-submit")).await?.click().await?;
        until(
            &c,
            "the overview",
            "return document.querySelector('#overview .cards') ? true : null",
        )
        .await?;
        let kept = c
            .execute(
                "return sessionStorage.getItem('modelgen.console.token')",
                vec![],
            )
            .await?;
        ensure!(kept == TOKEN, "token kept in sessionStorage");

        // The window switch: the last 24 hours, in 15-minute buckets.
        click(&c, "#window-24h").await?;
        until(
            &c,
            "the overview over 24 hours",
            "const h = document.querySelector('#overview-charts h2'); return h && h.textContent.includes('15 min') ? true : null",
        )
        .await?;
        Ok(())
    })
    .await;
}

#[actix_web::test]
async fn a_task_appears_completes_and_shows_its_result_and_timeline() {
    let w = &world().await;
    run("task_flow", w, 1280, 800, |c| async move {
        signed_in(&c, w).await?;
        click(&c, "a[data-nav=tasks]").await?;
        until(
            &c,
            "the tasks page",
            "return document.getElementById('filters') ? true : null",
        )
        .await?;
        let id = w.create_task("u-console").await;

        // The list refreshes by itself: the task appears, then completes.
        let row = format!("tr[data-task-id='{id}']");
        until(
            &c,
            "the new task in the list",
            &format!("return document.querySelector(\"{row}\") ? true : null"),
        )
        .await?;
        until(
            &c,
            "the task completed in the list",
            &format!(
                "const r = document.querySelector(\"{row}\"); return r && r.dataset.status === 'completed' ? true : null"
            ),
        )
        .await?;

        // The filters: a status it does not have empties the list; its user
        // and status keep it.
        c.execute(
            "document.getElementById('filter-status').value = 'failed'; document.querySelector('#filters button[type=submit]').click();",
            vec![],
        )
        .await?;
        until(
            &c,
            "the empty state of a filter nothing matches",
            "const e = document.querySelector('#task-list-wrap .state.empty'); return e && e.textContent.includes('No task matches') ? true : null",
        )
        .await?;
        c.goto(&w.url("#/tasks?user_id=u-console&status=completed"))
            .await?;
        until(
            &c,
            "the task under its user and status filters",
            &format!("return document.querySelector(\"{row}\") && document.querySelectorAll('#task-list tbody tr').length === 1 ? true : null"),
        )
        .await?;

        // Open it: the result image loads, the timeline is in order.
        click(&c, &format!("{row} a")).await?;
        let width = until(
            &c,
            "the result image loaded",
            "const i = document.querySelector('img.result-image'); return i && i.complete && i.naturalWidth > 0 ? i.naturalWidth : null",
        )
        .await?;
        ensure!(width.as_u64().unwrap_or(0) > 0, "naturalWidth {width}");
        let input = until(
            &c,
            "the input thumbnail (blob: URL fetched with the token)",
            "const i = document.querySelector('img.input-image'); return i && i.complete && i.naturalWidth > 0 ? i.src : null",
        )
        .await?;
        ensure!(
            input.as_str().unwrap_or("").starts_with("blob:"),
            "input shown through a blob: URL: {input}"
        );
        // The callback is delivered too (the receiver answers 200).
        until(
            &c,
            "the callback delivered on the timeline",
            "return document.querySelector('#timeline li[data-kind=callback_delivered]') ? true : null",
        )
        .await?;
        let kinds = c
            .execute(
                "return [...document.querySelectorAll('#timeline li')].map(li => [li.dataset.kind, Number(li.dataset.seq)])",
                vec![],
            )
            .await?;
        let kinds: Vec<(String, i64)> = serde_json::from_value(kinds)?;
        let names: Vec<&str> = kinds.iter().map(|(k, _)| k.as_str()).collect();
        ensure!(
            kinds.windows(2).all(|w| w[0].1 < w[1].1),
            "entries in order: {kinds:?}"
        );
        let pos = |k: &str| names.iter().position(|n| *n == k);
        let order = [
            "created",
            "claimed",
            "submitted",
            "polled",
            "downloaded",
            "completed",
            "callback_attempt",
            "callback_delivered",
        ];
        let positions: Vec<Option<usize>> = order.iter().map(|k| pos(k)).collect();
        ensure!(
            positions.iter().all(Option::is_some),
            "every kind is there: {names:?}"
        );
        ensure!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "created → … → callback_delivered in that order: {names:?}"
        );
        // The API gives the same timeline the page shows.
        let (_, events) = w.api.get(&format!("/tasks/{id}/events")).await;
        let api_kinds: Vec<&str> = events["data"]["items"]
            .as_array()
            .ok_or_else(|| anyhow!("events: {events}"))?
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        ensure!(
            api_kinds.starts_with(&names[..names.len().min(api_kinds.len())]),
            "page {names:?} vs API {api_kinds:?}"
        );
        Ok(())
    })
    .await;
}

#[actix_web::test]
async fn a_dead_callback_is_redelivered_from_the_page_and_a_test_event_is_signed() {
    let w = &world().await;
    w.receiver.set_down(true);
    let id = w.create_task("u-dead").await;
    // Both attempts fail (503): the delivery is dead.
    modelgen_e2e::wait_for("a dead callback", PAGE_DEADLINE, || async {
        let (_, body) = w.api.get("/admin/callbacks?status=dead").await;
        body["data"]["items"]
            .as_array()
            .filter(|items| items.iter().any(|c| c["task_id"] == id.as_str()))
            .map(|_| ())
    })
    .await;
    run("dead_callback", w, 1280, 800, |c| async move {
        signed_in(&c, w).await?;
        c.goto(&w.url(&format!("#/tasks/{id}"))).await?;
        until(
            &c,
            "the dead callback on the task page",
            "return document.querySelector('#task-callbacks tr[data-status=dead]') ? true : null",
        )
        .await?;
        ensure!(
            c.find(Locator::Css("#timeline li[data-kind=callback_dead]"))
                .await
                .is_ok(),
            "the timeline says the callback is dead"
        );
        let errors = c
            .execute(
                "return [...document.querySelectorAll('#timeline li[data-kind=callback_attempt]')].map(li => li.textContent)",
                vec![],
            )
            .await?;
        ensure!(
            errors.to_string().contains("503"),
            "each attempt shows the receiver's status: {errors}"
        );

        // The receiver is back: redeliver from the page, and it is delivered.
        w.receiver.set_down(false);
        click(&c, "#task-callbacks button.redeliver").await?;
        until(
            &c,
            "the callback delivered after the redelivery",
            "return document.querySelector('#task-callbacks tr[data-status=delivered]') ? true : null",
        )
        .await?;
        ensure!(
            !w.receiver.delivered_for(&id).is_empty(),
            "the receiver got the redelivered callback"
        );
        let kinds = c
            .execute(
                "return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.kind)",
                vec![],
            )
            .await?;
        let kinds: Vec<String> = serde_json::from_value(kinds)?;
        let dead = kinds.iter().position(|k| k == "callback_dead");
        let again = kinds.iter().position(|k| k == "callback_redelivered");
        let delivered = kinds.iter().rposition(|k| k == "callback_delivered");
        ensure!(
            dead < again && again < delivered && dead.is_some(),
            "dead → redelivered → delivered: {kinds:?}"
        );

        // The Callbacks page: send a test event; the receiver gets it signed.
        click(&c, "a[data-nav=callbacks]").await?;
        let before = w.receiver.received().len();
        click(&c, "#send-test").await?;
        let delivered = until(
            &c,
            "the test event's result",
            "const r = document.querySelector('#test-result [data-delivered]'); return r ? r.dataset.delivered + ' ' + r.textContent : null",
        )
        .await?;
        ensure!(
            delivered.as_str().unwrap_or("").starts_with("true"),
            "test event delivered: {delivered}"
        );
        let received = w.receiver.received();
        let test = received
            .get(before..)
            .unwrap_or_default()
            .iter()
            .find(|r| r.body["event_type"] == "test")
            .ok_or_else(|| anyhow!("the receiver got no test event"))?;
        let secret = modelgen_callback::SigningSecret::parse(SIGNING_SECRET)?;
        let header = |name: &str| test.headers.get(name).cloned().unwrap_or_default();
        let timestamp: i64 = header("webhook-timestamp").parse()?;
        modelgen_callback::verify(
            &secret,
            &header("webhook-id"),
            timestamp,
            &test.raw,
            &header("webhook-signature"),
            timestamp,
            300,
        )
        .map_err(|e| anyhow!("test event signature: {e}"))?;
        ensure!(
            test.body["event_id"] == header("webhook-id").as_str(),
            "body names its webhook-id"
        );
        Ok(())
    })
    .await;
}

/// Saves one screenshot of each page (sign-in, overview, tasks, task
/// detail, callbacks, the task page at phone width).
#[actix_web::test]
async fn screenshots_of_each_page() {
    let w = &world().await;
    let out = std::env::var("CONSOLE_SCREENSHOTS_DIR").map_or_else(
        |_| failure_dir().join("pages"),
        |d| {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
            }
        },
    );
    std::fs::create_dir_all(&out).unwrap();
    // Some history: completed tasks, one cancelled, one whose callback is dead.
    let mut ids = Vec::new();
    for user in ["u-anna", "u-ben", "u-chen"] {
        ids.push(w.create_task(user).await);
    }
    for id in &ids {
        w.api.wait_terminal(id, modelgen_e2e::DEADLINE).await;
    }
    w.receiver.set_down(true);
    // An edit the upstream refuses (402, an empty balance), whose callback dies.
    let (status, body) = w
        .api
        .post(
            "/models/edit",
            &json!({"user_id": "u-anna", "base_model_task_id": ids[0], "edit_instructions": "shorter hair [[sim:submit=402]]"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let dead = body["data"]["task_id"].as_str().unwrap().to_owned();
    let cancelled = w.create_task("u-eli").await;
    let (status, body) = w
        .api
        .post(&format!("/tasks/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    modelgen_e2e::wait_for("dead callbacks", PAGE_DEADLINE, || async {
        let (_, body) = w.api.get("/admin/callbacks?status=dead").await;
        body["data"]["items"]
            .as_array()
            .filter(|items| items.iter().any(|c| c["task_id"] == dead.as_str()))
            .map(|_| ())
    })
    .await;
    let running = w.create_task("u-fay").await;
    // The whole page: the window grows to the document's height for the shot.
    let shot = |c: Client, name: &'static str, out: PathBuf| async move {
        painted(&c).await?;
        let dims = c
            .execute(
                "return [window.innerWidth, document.documentElement.scrollHeight, Math.max(0, window.outerHeight - window.innerHeight)]",
                vec![],
            )
            .await?;
        let dims: Vec<u32> = serde_json::from_value(dims)?;
        let full = dims.get(1).copied().unwrap_or(800).clamp(800, 2400);
        let chrome = dims.get(2).copied().unwrap_or(0);
        let resized = dims.first().is_some_and(|w| *w >= 500);
        if resized {
            c.set_window_size(1280, full + chrome).await?;
            painted(&c).await?;
        }
        let png = c.screenshot().await?;
        std::fs::write(out.join(format!("{name}.png")), png)?;
        if resized {
            c.set_window_size(1280, 800).await?;
        }
        anyhow::Ok(())
    };
    let first = ids[0].clone();
    let o = out.clone();
    run("screenshots", w, 1280, 800, |c| async move {
        c.goto(&w.url("")).await?;
        c.wait()
            .at_most(PAGE_DEADLINE)
            .for_element(Locator::Id("token"))
            .await?;
        shot(c.clone(), "sign-in", o.clone()).await?;
        signed_in(&c, w).await?;
        until(
            &c,
            "the overview charts",
            "return document.querySelector('#overview-charts svg.chart') ? true : null",
        )
        .await?;
        shot(c.clone(), "overview", o.clone()).await?;
        click(&c, "a[data-nav=tasks]").await?;
        until(
            &c,
            "the task list",
            &format!("return document.querySelector(\"tr[data-task-id='{running}']\") ? true : null"),
        )
        .await?;
        shot(c.clone(), "tasks", o.clone()).await?;
        c.goto(&w.url(&format!("#/tasks/{dead}"))).await?;
        until(
            &c,
            "the task detail",
            "const i = document.querySelector('img.input-image'); return i && i.naturalWidth > 0 && document.getElementById('why') && document.querySelector('#task-callbacks tr[data-status=dead]') ? true : null",
        )
        .await?;
        shot(c.clone(), "task-detail", o.clone()).await?;
        click(&c, "a[data-nav=callbacks]").await?;
        until(
            &c,
            "the callbacks page",
            "return document.querySelector('#dead-list') ? true : null",
        )
        .await?;
        w.receiver.set_down(false);
        click(&c, "#send-test").await?;
        until(
            &c,
            "the test result",
            "return document.querySelector('#test-result [data-delivered]') ? true : null",
        )
        .await?;
        shot(c.clone(), "callbacks", o.clone()).await?;
        Ok(())
    })
    .await;
    let o = out.clone();
    run("screenshots_phone", w, 390, 844, |c| async move {
        signed_in(&c, w).await?;
        c.goto(&w.url(&format!("#/tasks/{first}"))).await?;
        until(
            &c,
            "the task detail at phone width",
            "const i = document.querySelector('img.result-image'); return i && i.naturalWidth > 0 ? true : null",
        )
        .await?;
        shot(c.clone(), "phone-task-detail", o.clone()).await?;
        click(&c, "a[data-nav=overview]").await?;
        until(
            &c,
            "the overview at phone width",
            "return document.querySelector('#overview-charts svg.chart') ? true : null",
        )
        .await?;
        shot(c.clone(), "phone-overview", o.clone()).await?;
        Ok(())
    })
    .await;
    for name in [
        "sign-in",
        "overview",
        "tasks",
        "task-detail",
        "callbacks",
        "phone-task-detail",
        "phone-overview",
    ] {
        let meta = std::fs::metadata(out.join(format!("{name}.png"))).unwrap();
        assert!(meta.len() > 1000, "{name}.png is empty");
    }
}
