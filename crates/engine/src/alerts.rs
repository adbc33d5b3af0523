//! Operator alerts: Apimart 401/402 (bad key, no balance), a failing balance
//! check (crate::health::run_balance_checks) and dead callbacks.
//!
//! Every alert is an error log with the stable event name `modelgen.alert`
//! and a `alerts_total{kind}` counter increment. When an alert webhook is
//! configured, a JSON POST is also sent — at most once per kind per interval,
//! so a broken key does not turn into one message per task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Stable event name of alert log lines (search logs for it).
pub const ALERT_EVENT: &str = "modelgen.alert";

/// Raises alerts; cheap to clone.
#[derive(Clone, Default)]
pub struct Alerts {
    inner: Arc<AlertsInner>,
}

#[derive(Default)]
struct AlertsInner {
    webhook: Option<(reqwest::Client, String)>,
    interval: Duration,
    last_sent: Mutex<HashMap<String, Instant>>,
}

impl Alerts {
    /// Alerts that also POST `{"kind", "message", "service"}` to `webhook_url`,
    /// at most once per kind per `interval`.
    pub fn with_webhook(client: reqwest::Client, webhook_url: String, interval: Duration) -> Self {
        Alerts {
            inner: Arc::new(AlertsInner {
                webhook: Some((client, webhook_url)),
                interval,
                last_sent: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Logs and counts an alert of `kind` (e.g. `unauthorized`,
    /// `insufficient_balance`, `callback_dead`), and notifies the webhook when due.
    pub fn raise(&self, kind: &str, message: &str) {
        tracing::error!(event = ALERT_EVENT, alert.kind = kind, "{message}");
        metrics::counter!("alerts_total", "kind" => kind.to_string()).increment(1);
        let Some((client, url)) = &self.inner.webhook else {
            return;
        };
        let due = match self.inner.last_sent.lock() {
            Ok(mut last) => {
                let now = Instant::now();
                match last.get(kind) {
                    Some(t) if now.duration_since(*t) < self.inner.interval => false,
                    _ => {
                        last.insert(kind.to_string(), now);
                        true
                    }
                }
            }
            Err(_) => false,
        };
        if !due {
            return;
        }
        let request = client.post(url.clone()).json(&serde_json::json!({
            "service": "modelgen",
            "kind": kind,
            "message": message,
        }));
        tokio::spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!(error = %e.without_url(), "alert webhook failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn posts(server: &MockServer, want: usize) -> Vec<serde_json::Value> {
        // The webhook is sent from a spawned task: wait for it with a deadline.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = server.received_requests().await.unwrap_or_default();
            if got.len() >= want || std::time::Instant::now() > end {
                return got
                    .iter()
                    .map(|r| serde_json::from_slice(&r.body).unwrap())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn webhook_fires_once_per_kind_per_interval() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let alerts = Alerts::with_webhook(
            reqwest::Client::new(),
            format!("{}/alert", server.uri()),
            Duration::from_secs(3600),
        );
        for _ in 0..5 {
            alerts.raise("unauthorized", "Apimart answered 401");
        }
        alerts.raise("callback_dead", "evt_1 is dead");
        let got = posts(&server, 2).await;
        // Give a stray third POST the chance to show up before asserting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got_after = server.received_requests().await.unwrap_or_default().len();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got_after, 2);
        let kinds: Vec<&str> = got.iter().filter_map(|b| b["kind"].as_str()).collect();
        assert!(kinds.contains(&"unauthorized") && kinds.contains(&"callback_dead"));
        assert_eq!(got[0]["service"], "modelgen");
    }

    #[tokio::test]
    async fn without_a_webhook_alerts_only_log_and_count() {
        // Nothing to assert on the network; this must not panic or block.
        Alerts::default().raise("unauthorized", "no webhook configured");
    }
}
